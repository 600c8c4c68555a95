"""Faces of a video stream, followed by the tracking mesh between MediaPipe's looks.

MediaPipe's mesh in tracking mode (core/face/stream_detection.py) costs 5-7 ms a frame on a 2-core AVX2 host:
more than the whole 5-ms live budget. Here MediaPipe finds the faces (the first frame, a face that entered, a
face the net lost) and the tracking mesh (core/models/mesh_net.py) follows them: each face is cut out where
the last frame's mesh put it, as the recognizer's 48-px grey crop, and the net re-fits the 478 points there
(about 0.4 ms). A face the net no longer sees centred sends the frame back to MediaPipe. The short-range
detector looks for new faces every CHECK_EVERY frames, as the stream detector does. The AUs of every frame
are the net's reading of the crop, MediaPipe's frames included, so a face's AU track does not jump when
MediaPipe looks (`python -m core.bench tracking` measures them against MediaPipe's photo mesh).
"""

from __future__ import annotations

import numpy as np

from core.face.alignment import aligned_grey, alignment_matrix
from core.face.detection import DetectedFace, box_of
from core.face.stream_detection import CHECK_EVERY, StreamDetector
from core.labels import AUS

MIN_PRESENT = 0.5  # the net's probability that a face is still centred in its crop, below which it is lost
REFITS = 1  # passes of the net a frame; a second starts from the first's fit (docs/limits.md)


def follow(runtime, rgb: np.ndarray, meshes: list[np.ndarray], refits: int = REFITS
           ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Each mesh [478, 3] (image pixels) re-fitted on this frame; the net's presence probabilities [N] and
    AUs [N, 17] (read from the crop, not measured on the fitted mesh: they would carry all its points' errors)."""
    size = runtime.input_size
    for _ in range(refits):
        matrices = [alignment_matrix(mesh, size) for mesh in meshes]
        if not all(_usable(m) for m in matrices):  # a mesh fitted into a point or a line: the face is lost
            return meshes, np.zeros(len(meshes), np.float32), np.full((len(meshes), len(AUS)), np.nan, np.float32)
        crops = np.stack([aligned_grey(rgb, m, size) for m in matrices])
        fitted, present, aus = runtime.run(crops)
        meshes = [to_image(points, m) for points, m in zip(fitted, matrices)]
    return meshes, present, aus


def _usable(matrix: np.ndarray) -> bool:
    """A crop matrix of a face between 4 px and 100,000 px wide (its scale maps the face to the crop)."""
    det = abs(float(np.linalg.det(matrix[:, :2])))
    return bool(np.isfinite(matrix).all()) and 1e-8 < det < 1e2


def to_image(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Crop-pixel points [478, 3] back to image pixels through the inverse of a 2x3 similarity."""
    a, t = matrix[:, :2], matrix[:, 2]
    out = np.empty(points.shape, np.float32)
    out[:, :2] = (points[:, :2] - t) @ np.linalg.inv(a).T
    out[:, 2] = points[:, 2] / np.sqrt(abs(np.linalg.det(a)))
    return out


class TrackingMeshDetector:
    """detect(rgb) of consecutive frames of one stream, largest face first (not thread-safe: FaceDetector locks)."""

    def __init__(self, max_faces: int = 4, min_confidence: float = 0.5, runtime=None):
        from core import get_mesh_runtime

        self.max_faces = max_faces
        self._stream = StreamDetector(max_faces, min_confidence)
        self._runtime = runtime or get_mesh_runtime()
        self._meshes: list[np.ndarray] = []
        self._frame = 0

    def close(self) -> None:
        self._stream.close()

    def _new_face_seen(self, rgb: np.ndarray) -> bool:
        finder = self._stream.finder
        if finder is None or self._frame % CHECK_EVERY or len(self._meshes) >= self.max_faces:
            return False
        return len(finder.run({"image": rgb})["detections"]) > len(self._meshes)

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        self._frame += 1
        more = bool(self._meshes) and self._new_face_seen(rgb)
        if more:
            self._stream.expect_more_faces()
        elif self._meshes:
            meshes, present, aus = follow(self._runtime, rgb, self._meshes)
            if (present >= MIN_PRESENT).all():
                self._meshes = meshes
                faces = [DetectedFace(box_of(mesh), mesh, 1.0, "mesh-net", au) for mesh, au in zip(meshes, aus)]
                return sorted(faces, key=lambda f: f.area, reverse=True)
        found = self._stream.detect(rgb)  # first frame, a new face or a lost one: MediaPipe on this frame
        self._meshes = [face.landmarks for face in found]
        if found:  # the AUs of every frame from one reader: no jump in a face's AU track when MediaPipe looks
            _, _, aus = follow(self._runtime, rgb, self._meshes)
            for face, read in zip(found, aus):
                face.aus = read
        return found

