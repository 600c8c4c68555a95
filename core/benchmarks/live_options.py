"""The measurements behind the live path's settings (python -m core.bench live-options).

Each option the live path chose is timed beside its alternatives on the same 640x480 webcam frame: the mesh
graph's face count, refined landmarks and frame size; the tracking mesh; the recognizer's runtime and threads;
the returned frame's encoding. Medians in ms (docs/limits.md, "Live speed and capacity").
"""

from __future__ import annotations

import os
import time

import numpy as np

from core.benchmarks.common import webcam_frame


def _median_ms(fn, repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return round(float(np.median(times)), 2)


def _mesh_options(frame: np.ndarray, repeats: int) -> dict:
    import cv2
    import mediapipe as mp

    from core.face.mp_graph import inference_threads, lean

    half = cv2.resize(frame, (frame.shape[1] // 2, frame.shape[0] // 2), interpolation=cv2.INTER_AREA)
    out = {"mediapipe_threads": inference_threads()}
    for faces in (1, 4):
        for refine in (True, False):
            mesh = lean(mp.solutions.face_mesh.FaceMesh, static_image_mode=False, max_num_faces=faces,
                        refine_landmarks=refine)
            name = f"mesh_{faces}face{'_refined' if refine else ''}"
            out[f"{name}_ms"] = _median_ms(lambda m=mesh: m.run({"image": frame}), repeats)
            out[f"{name}_half_frame_ms"] = _median_ms(lambda m=mesh: m.run({"image": half}), repeats)
            mesh.close()
    for threads in (1, 2):  # XNNPACK threads of the live mesh and of the photo detector
        mesh = lean(mp.solutions.face_mesh.FaceMesh, threads, static_image_mode=False, refine_landmarks=True)
        out[f"mesh_1face_refined_{threads}thread_ms"] = _median_ms(lambda m=mesh: m.run({"image": frame}), repeats)
        mesh.close()
        detector = lean(mp.solutions.face_detection.FaceDetection, threads, model_selection=1)
        out[f"full_range_detector_{threads}thread_ms"] = _median_ms(lambda d=detector: d.run({"image": frame}),
                                                                   repeats)
        detector.close()
    finder = lean(mp.solutions.face_detection.FaceDetection, model_selection=0)
    out["short_range_detector_ms"] = _median_ms(lambda: finder.run({"image": frame}), repeats)
    finder.close()
    from core.face.blazeface import BlazeFace  # the same model on LiteRT: the live tracker's finder

    litert = BlazeFace()
    out["litert_short_range_detector_ms"] = _median_ms(lambda: litert.detect(frame), repeats)
    litert.close()
    return {**out, **_tracking_mesh_options(frame, repeats)}


def _tracking_mesh_options(frame: np.ndarray, repeats: int) -> dict:
    """The tracking mesh that replaces MediaPipe's mesh graph on a stream (core/face/mesh_tracking.py):
    one refit of a still face (crop, net, points back to the frame) and the net alone, on ONNX Runtime and torch."""
    from core.face.detection import FaceDetector
    from core.face.mesh_tracking import follow
    from core.models.mesh_runtime import MeshRuntime

    detector = FaceDetector(mode="photo")
    mesh = detector.detect(frame)[0].landmarks
    detector.close()
    out = {}
    for onnx in (True, False):
        runtime = MeshRuntime.load(onnx=onnx)
        name = "tracking_mesh" if onnx else "tracking_mesh_torch"
        out[f"{name}_refit_ms"] = _median_ms(lambda r=runtime: follow(r, frame, [mesh], max_refits=1), repeats)
        crop = np.zeros((1, runtime.input_size, runtime.input_size), np.uint8)
        out[f"{name}_net_ms"] = _median_ms(lambda r=runtime, c=crop: r.run(c), repeats)
    return out


def _recognizer_options(crop: np.ndarray, repeats: int) -> dict:
    from core import get_recognizer
    from core.models.onnx_runtime import OnnxRecognizer, ensure_onnx
    from core.recognizer import Recognizer

    shipped = get_recognizer()
    path = ensure_onnx(shipped.net, shipped.weights_sha256)
    out = {}
    for threads in (1, 2):
        session = OnnxRecognizer(path, threads=threads)
        out[f"onnx_{threads}thread_ms"] = _median_ms(lambda s=session: s.run(crop), repeats)
        out[f"onnx_{threads}thread_mirror_ms"] = _median_ms(lambda s=session: s.run(crop, mirror=True), repeats)
    from core.models.quantization import ensure_int8

    int8_path = ensure_int8(shipped.net, shipped.weights_sha256)
    if int8_path is not None:
        session = OnnxRecognizer(int8_path, threads=1)
        out["onnx_int8_1thread_ms"] = _median_ms(lambda s=session: s.run(crop), repeats)
    eager = Recognizer(shipped.net, shipped.device, runtime="torch")
    out["torch_ms"] = _median_ms(lambda: eager.predict_crops(crop, mirror=False), repeats)
    out["torch_mirror_ms"] = _median_ms(lambda: eager.predict_crops(crop, mirror=True), repeats)
    return out


def bench_live_options(repeats: int = 100) -> dict:
    import torch

    from demo.render import encode_frame

    frame = webcam_frame()
    crop = np.ascontiguousarray(frame[100:148, 300:348, 0])[None]
    return {
        **_mesh_options(frame, repeats),
        **_recognizer_options(crop, repeats),
        "encode_jpeg_ms": _median_ms(lambda: encode_frame(frame, "jpeg"), repeats // 4),
        "encode_webp_ms": _median_ms(lambda: encode_frame(frame, "webp"), repeats // 4),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }
