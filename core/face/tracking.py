"""Live webcam tracking: faces keep an id across frames and their probabilities are smoothed."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from core.face.detection import iou
from core.labels import EXPRESSIONS

# One recognizer pass per face: the mirror-image average is worth 0.1 point of FER+ test accuracy
# (0.874 with it, 0.873 without: `python -m core.evaluate ... --no-mirror`), not twice the time on every frame.
LIVE_MIRROR = False


@dataclass
class TrackedFace:
    track_id: int
    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    probs: dict[str, float]  # smoothed over recent frames
    raw_probs: dict[str, float]  # this frame only
    label: str
    aus: dict[str, float] | None = None


@dataclass
class _Track:
    track_id: int
    box: tuple[float, float, float, float]
    probs: np.ndarray
    last_seen: float


@dataclass
class LiveSession:
    """Feed frames in order; get faces with probabilities smoothed per face over time.

    smoothing is the half-life in seconds of the exponential moving average of each face's
    probabilities (0 disables it); a face keeps its track while its box overlaps the last one.
    tracker: how faces are followed between frames (core.face.detection.TRACKERS): "mesh-net", the tracking
    mesh (fast; its AUs are read from the 48-px crop), or "mediapipe", MediaPipe's mesh on every frame (AUs
    closer to the photo pipeline's, about twice the time: docs/limits.md).
    """

    recognizer: object
    smoothing: float = 0.3
    max_faces: int = 4
    tracker: str = "mesh-net"
    _detector: object = None
    _switch_lock: threading.Lock = field(default_factory=threading.Lock)
    _tracks: list[_Track] = field(default_factory=list)
    _next_id: int = 0
    _last_time: float | None = None
    fps: float = 0.0

    def __post_init__(self):
        self._detector = self._stream_detector(self.tracker)

    def _stream_detector(self, tracker: str):
        from core.face.detection import FaceDetector

        return FaceDetector(mode="video", max_faces=self.max_faces, tracker=tracker)

    def use_tracker(self, tracker: str) -> None:
        """Follow faces with another tracker from the next frame on (the tracks and their ids are kept)."""
        with self._switch_lock:  # two frames of one session at once must not both build a detector
            if tracker != self.tracker:
                detector = self._stream_detector(tracker)
                self._detector.close()
                self._detector, self.tracker = detector, tracker

    def reset(self) -> None:
        """Start over: the faces followed, their tracks and the frame rate are forgotten (new faces get new ids).
        Not while a frame of the session is being processed."""
        with self._switch_lock:
            self._detector.reset()
            self._tracks, self._last_time, self.fps = [], None, 0.0

    def process(self, frame, now: float | None = None) -> list[TrackedFace]:
        now = time.perf_counter() if now is None else now
        if self._last_time is not None:
            dt = max(1e-3, now - self._last_time)
            self.fps = 1.0 / dt if self.fps == 0 else 0.8 * self.fps + 0.2 / dt
        else:
            dt = None
        self._last_time = now
        faces = self.recognizer.predict(frame, detector=self._detector, mirror=LIVE_MIRROR)
        alpha = 1.0 if not self.smoothing or dt is None else 1.0 - 0.5 ** (dt / self.smoothing)
        tracks, out = [], []
        unused = list(self._tracks)
        for face in faces:
            raw = np.array([face.probs[name] for name in EXPRESSIONS])
            overlaps = iou(face.box, [t.box for t in unused]) if unused else np.zeros(0)
            best = int(np.argmax(overlaps)) if len(overlaps) else -1
            if best >= 0 and overlaps[best] > 0.3:
                match = unused.pop(best)
                probs = (1 - alpha) * match.probs + alpha * raw
                track = _Track(match.track_id, face.box, probs, now)
            else:
                track = _Track(self._next_id, face.box, raw, now)
                self._next_id += 1
            tracks.append(track)
            smoothed = {name: float(p) for name, p in zip(EXPRESSIONS, track.probs / track.probs.sum())}
            out.append(TrackedFace(track.track_id, face.box, face.landmarks, smoothed, face.probs,
                                   max(smoothed, key=smoothed.get), face.aus))
        self._tracks = tracks
        return out

    def close(self) -> None:
        self._detector.close()
