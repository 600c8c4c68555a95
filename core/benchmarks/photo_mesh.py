"""What the photo path's mesh from the detection costs against the FaceMesh solution re-detecting in the crop.

Real faces: FER+ test crops (48 px) upscaled to 200-300 px at a random place in a grey 640x480 frame. Both
fits see the same crop (FaceDetector._mesh_in_box with and without the detection). The noise floor is each
fit against itself on the same face moved by one pixel (landmarks moved back).
"""

from __future__ import annotations

import os
import time

import numpy as np


def _frames(data: str, count: int, seed: int = 1):
    import cv2

    from core.training.data import load_split

    test = load_split(data, "test")
    rng = np.random.default_rng(seed)
    for i in rng.choice(len(test), size=min(count, len(test)), replace=False):
        side = int(rng.integers(200, 300))
        face = cv2.resize(test.images[i], (side, side), interpolation=cv2.INTER_CUBIC)
        x, y = int(rng.integers(0, 640 - side - 1)), int(rng.integers(0, 480 - side - 1))
        frames = []
        for shift in (0, 1):
            canvas = np.full((480, 640), 90, np.uint8)
            canvas[y + shift : y + shift + side, x + shift : x + shift + side] = face
            frames.append(np.repeat(canvas[:, :, None], 3, axis=2))
        yield frames, int(test.ferplus_label[i])


def _fit(detector, recognizer, rgb, use_detection: bool):
    """(landmarks, AUs, probabilities, mesh ms) of the largest face, or None."""
    from mediapipe.framework.formats.detection_pb2 import Detection

    from core.face.alignment import align_face
    from core.face.aus import measure_aus
    from core.face.detection import DetectedFace
    from core.face.images import to_grey
    from core.face.mp_graph import parse

    detections = parse(detector._graphs()[0].run({"image": rgb})["detections"], Detection)
    if not detections:
        return None
    h, w = rgb.shape[:2]
    rel = detections[0].location_data.relative_bounding_box
    box = (rel.xmin * w, rel.ymin * h, (rel.xmin + rel.width) * w, (rel.ymin + rel.height) * h)
    t0 = time.perf_counter()
    landmarks = detector._mesh_in_box(rgb, box, detections[0] if use_detection else None)
    elapsed = (time.perf_counter() - t0) * 1000
    if not np.isfinite(landmarks).all():
        return None
    crop = align_face(to_grey(rgb), DetectedFace(box, landmarks, 1.0, "mediapipe"), recognizer.config.input_size)
    return landmarks, measure_aus(landmarks), recognizer.predict_crops(crop[None], mirror=False)[0], elapsed


def _compare(a, b, shift: float = 0.0) -> tuple[float, float, float]:
    """(mean landmark displacement px, mean |AU difference|, max |probability difference|)."""
    moved = b[0][:, :2] - shift
    return (float(np.linalg.norm(a[0][:, :2] - moved, axis=1).mean()), float(np.abs(a[1] - b[1]).mean()),
            float(np.abs(a[2] - b[2]).max()))


def bench_photo_mesh(data: str, faces: int = 300) -> dict:
    from core import get_recognizer
    from core.face.detection import FaceDetector

    # both ways on one detector: _fit passes the detection, or None to re-detect in the crop
    recognizer, detector = get_recognizer(), FaceDetector("photo", mesh_from_detection=True)
    rows = {"between": [], "floor_detection": [], "floor_redetect": []}
    ms = {True: [], False: []}
    correct = {True: [], False: []}
    for (frame, shifted), label in _frames(data, faces):
        fits = {mode: (_fit(detector, recognizer, frame, mode), _fit(detector, recognizer, shifted, mode))
                for mode in (True, False)}
        if any(f is None for pair in fits.values() for f in pair):
            continue
        rows["between"].append(_compare(fits[True][0], fits[False][0]))
        rows["floor_detection"].append(_compare(fits[True][0], fits[True][1], 1.0))
        rows["floor_redetect"].append(_compare(fits[False][0], fits[False][1], 1.0))
        for mode in (True, False):
            ms[mode].append(fits[mode][0][3])
            if label >= 0:
                correct[mode].append(int(fits[mode][0][2].argmax()) == label)
    detector.close()
    summary = {name: {"landmark_px": round(float(np.mean([r[0] for r in v])), 3),
                      "au_abs": round(float(np.mean([r[1] for r in v])), 4),
                      "prob_max_abs": round(float(np.mean([r[2] for r in v])), 4),
                      "prob_max_abs_p95": round(float(np.percentile([r[2] for r in v], 95)), 4)}
               for name, v in rows.items()}
    return {
        "faces": len(rows["between"]),
        "from_detection_vs_redetect": summary["between"],
        "one_px_shift_from_detection": summary["floor_detection"],
        "one_px_shift_redetect": summary["floor_redetect"],
        "mesh_ms": {"from_detection": round(float(np.median(ms[True])), 3),
                    "redetect": round(float(np.median(ms[False])), 3)},
        "ferplus_accuracy": {"from_detection": round(float(np.mean(correct[True])), 4),
                             "redetect": round(float(np.mean(correct[False])), 4), "labelled": len(correct[True])},
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }
