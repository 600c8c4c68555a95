"""Live and photo pipeline benchmarks on 640x480 frames with one real face.

live_frame_ms: a tracked webcam stream, as demo/live.py runs it (decode + LiveSession.process: tracking
(the short-range detector finds the face, the tracking mesh fits and follows it: core/face/mesh_tracking.py), alignment, one
recognizer pass, AUs, smoothing). photo_frame_ms: the same webcam path with no tracking, the face at a new place
in every frame and the session reset before each (LiveSession.reset): every frame is a stream's first, the
short-range detector finds the face and the tracking mesh fits it from the detector's keypoints.
empty_frame_ms: the webcam path on a frame without a face (the short-range detector looks, the full-range one too on
every 5th frame).
photo_pipeline_ms: the photo pipeline uploaded photos and image files take (Recognizer.predict: full-range
detection, MediaPipe's refined mesh on the face, alignment, recognizer, AUs) on those frames."""

from __future__ import annotations

import os
import time

import numpy as np

from core.benchmarks.common import moving_face_frames, stats, webcam_frame


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - t0) * 1000


def _timed_cpu(fn, *args):
    """(output, wall ms, this process's CPU ms: all its threads, MediaPipe's graph threads included)."""
    c0 = time.process_time()
    out, wall = _timed(fn, *args)
    return out, wall, (time.process_time() - c0) * 1000


def bench_stages(recognizer, frame: np.ndarray, frames: int, warmup: int) -> dict:
    """Each stage of a tracked frame on its own (the stages of live_frame_ms)."""
    from core.face.alignment import align_face
    from core.face.detection import FaceDetector
    from core.face.images import load_image, to_grey
    from core.recognizer import face_aus
    detector = FaceDetector(mode="video", max_faces=4)
    names = ("decode_ms", "detect_ms", "align_ms", "recognize_ms", "aus_ms")
    stages = {name: [] for name in names}
    found = []
    for i in range(warmup + frames):
        rgb, t_decode = _timed(load_image, frame)
        faces, t_detect = _timed(detector.detect, rgb)
        t0 = time.perf_counter()
        grey = to_grey(rgb)
        crops = np.stack([align_face(grey, f, recognizer.config.input_size) for f in faces]) if faces else None
        t_align = (time.perf_counter() - t0) * 1000
        t_rec = _timed(recognizer.predict_crops, crops, False)[1] if crops is not None else 0.0
        t_aus = _timed(lambda found: [face_aus(f.landmarks, f.aus) for f in found], faces)[1]
        if i >= warmup:
            for name, value in zip(names, (t_decode, t_detect, t_align, t_rec, t_aus)):
                stages[name].append(value)
            found.append(len(faces))
    detector.close()
    return {**{name: stats(values) for name, values in stages.items()}, "faces_per_frame": float(np.mean(found))}


def bench_live(frames: int = 200, warmup: int = 20) -> dict:
    from core import get_recognizer
    from demo.live import LIVE_FORMAT
    from demo.render import annotate, encode_frame

    recognizer = get_recognizer()
    draw, encode = [], []

    def returned(rgb, faces, measured: bool) -> None:
        """What the handler and gradio spend on the picture sent back."""
        drawn, t_draw = _timed(annotate, rgb, faces, True)
        t_encode = _timed(encode_frame, drawn, LIVE_FORMAT)[1]
        if measured:
            draw.append(t_draw)
            encode.append(t_encode)

    frame = webcam_frame()
    live, live_cpu = _session_times(recognizer, [frame], frames, warmup, returned)
    moving = moving_face_frames(count=max(8, frames // 4))
    no_tracking_faces = []
    no_tracking, no_tracking_cpu = _session_times(recognizer, moving, frames // 2, warmup,
                                              lambda rgb, faces, measured: measured and no_tracking_faces.append(len(faces)),
                                              reset_each_frame=True)
    # nobody in front of the camera: the short-range detector looks on every frame, the full-range one on every 5th
    empty = _session_times(recognizer, [np.full_like(frame, 90)], frames // 4, warmup)[0]
    photo, photo_cpu = [], []
    for i in range(warmup + frames // 2):
        faces, elapsed, cpu = _timed_cpu(recognizer.predict, moving[i % len(moving)])
        if i >= warmup:
            photo.append(elapsed)
            photo_cpu.append(cpu)
    return {
        "live_frame_ms": stats(live),
        "photo_frame_ms": stats(no_tracking),
        "photo_pipeline_ms": stats(photo),
        "photo_frame_faces_per_frame": float(np.mean(no_tracking_faces)),
        "empty_frame_ms": stats(empty),
        # CPU time of the same frames: steadier than wall time on a loaded machine (no waiting for a core)
        "live_frame_cpu_ms": stats(live_cpu),
        "photo_frame_cpu_ms": stats(no_tracking_cpu),
        "photo_pipeline_cpu_ms": stats(photo_cpu),
        "draw_ms": stats(draw),
        "encode_ms": stats(encode),
        "encode_format": LIVE_FORMAT,
        **bench_stages(recognizer, frame, frames // 2, warmup),
        "frame": [640, 480],
        "runtime": recognizer.runtime,
        "threads": _threads(recognizer),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
    }


def _session_times(recognizer, source: list[np.ndarray], frames: int, warmup: int, then=None, reset_each_frame: bool = False
                   ) -> tuple[list[float], list[float]]:
    """Wall and CPU ms of what the app's status line reports as "ms per frame" (demo/live.py live_frame: decode +
    LiveSession.process) over one session fed `source` in turn; then(rgb, faces, measured) after each frame;
    reset_each_frame: the session is reset before each frame (not timed), so nothing is tracked."""
    from core.face.images import load_image
    from core.face.tracking import LiveSession

    session = LiveSession(recognizer)
    wall, cpu = [], []
    for i in range(warmup + frames):
        if reset_each_frame:
            session.reset()
        rgb, t_decode, c_decode = _timed_cpu(load_image, source[i % len(source)])
        faces, t_process, c_process = _timed_cpu(session.process, rgb)
        if i >= warmup:
            wall.append(t_decode + t_process)
            cpu.append(c_decode + c_process)
        if then is not None:
            then(rgb, faces, i >= warmup)
    session.close()
    return wall, cpu


def _threads(recognizer) -> int:
    import torch

    session = recognizer._onnx_session()
    return session.threads if session is not None else torch.get_num_threads()
