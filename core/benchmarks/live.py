"""Live pipeline benchmark: detect + align + recognize a 640x480 frame."""

from __future__ import annotations

import os
import time

import numpy as np

from core.benchmarks.common import stats, webcam_frame


def bench_live(frames: int = 200, warmup: int = 20) -> dict:
    import torch

    from core import get_recognizer
    from core.face.alignment import align_face
    from core.face.detection import FaceDetector
    from core.face.images import load_image, to_grey

    recognizer = get_recognizer()
    detector = FaceDetector(mode="video", max_faces=4)
    frame = webcam_frame()
    stages = {"decode_ms": [], "detect_ms": [], "align_ms": [], "recognize_ms": [], "live_frame_ms": []}
    faces_found = []
    for i in range(warmup + frames):
        t0 = time.perf_counter()
        rgb = load_image(frame)
        t1 = time.perf_counter()
        faces = detector.detect(rgb)
        t2 = time.perf_counter()
        grey = to_grey(rgb)
        crops = np.stack([align_face(grey, f, recognizer.config.input_size) for f in faces]) if faces else None
        t3 = time.perf_counter()
        if crops is not None:
            recognizer.predict_crops(crops)
        t4 = time.perf_counter()
        if i >= warmup:
            for key, value in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
                stages[key].append(value * 1000)
            faces_found.append(len(faces))
    # The same work through the public API (Recognizer.predict with a video detector).
    api = []
    for _ in range(frames // 2):
        t0 = time.perf_counter()
        recognizer.predict(frame, detector=detector)
        api.append((time.perf_counter() - t0) * 1000)
    detector.close()
    return {
        **{key: stats(values) for key, values in stages.items()},
        "predict_api_ms": stats(api),
        "frame": [640, 480],
        "faces_per_frame": float(np.mean(faces_found)),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
