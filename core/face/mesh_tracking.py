"""Faces of a video stream, followed by the tracking mesh between MediaPipe's looks.

MediaPipe's mesh in tracking mode (core/face/stream_detection.py) costs 5-7 ms a frame on a 2-core AVX2 host:
more than the whole 5-ms live budget. Here MediaPipe finds the faces (the first frame, a face that entered, a
face the net lost) and the tracking mesh (core/models/mesh_net.py) follows them: each face is cut out where
the last frame's mesh put it, as the recognizer's 48-px grey crop, and the net re-fits the 478 points there
(about 0.4 ms). A face the net no longer sees centred, or whose fit will not settle, sends the frame back to
MediaPipe; so do two followed faces that overlap, and a change in the number of faces the short-range detector
sees every CHECK_EVERY frames (a face entered or left). The AUs of every frame
are the net's reading of the crop, MediaPipe's frames included, so a face's AU track does not jump when
MediaPipe looks (`python -m core.bench tracking` measures them against MediaPipe's photo mesh).
"""

from __future__ import annotations

import numpy as np

from core.face.alignment import (
    ALIGN_LANDMARKS,
    FER_TEMPLATE,
    FER_TEMPLATE_SIZE,
    aligned_grey,
    alignment_matrix,
    similarity_transform,
)
from core.face.detection import DetectedFace, box_of
from core.face.stream_detection import CHECK_EVERY, StreamDetector
from core.labels import AUS

MIN_PRESENT = 0.5  # the net's probability that a face is still centred in its crop, below which it is lost
# The net is trained on inter-frame motion up to 15% of the crop's side; a face that moved further is fitted
# roughly, then again from that fit, while aligning the fit would move the crop by more than SETTLE_PX
# (mean over the alignment points): at most MAX_REFITS passes a frame, after which a fit still moving is a
# face lost.
SETTLE_PX = 2.0
MAX_REFITS = 3


def follow(runtime, rgb: np.ndarray, meshes: list[np.ndarray], max_refits: int = MAX_REFITS
           ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Each mesh [478, 3] (image pixels) re-fitted on this frame; the net's presence probabilities [N] and
    AUs [N, 17] (read from the crop, not measured on the fitted mesh: they would carry all its points' errors)."""
    size = runtime.input_size
    template = FER_TEMPLATE.astype(np.float64) * (size / FER_TEMPLATE_SIZE)
    for _ in range(max(1, max_refits)):
        matrices = [alignment_matrix(mesh, size) for mesh in meshes]
        if not all(_usable(m) for m in matrices):  # a mesh fitted into a point or a line: the face is lost
            return meshes, np.zeros(len(meshes), np.float32), np.full((len(meshes), len(AUS)), np.nan, np.float32)
        crops = np.stack([aligned_grey(rgb, m, size) for m in matrices])
        fitted, present, aus = runtime.run(crops)
        meshes = [to_image(points, m) for points, m in zip(fitted, matrices)]
        unsettled = np.array([_realignment(points, template) > SETTLE_PX for points in fitted])
        if not unsettled.any():
            break
    # a fit still moving after the last pass is not trusted: the face counts as lost (MediaPipe looks again)
    return meshes, np.where(unsettled, 0.0, present).astype(np.float32), aus


def _overlapping(meshes: list[np.ndarray], limit: float = 0.5) -> bool:
    """Two followed faces whose boxes overlap by more than `limit` (IoU): one face followed twice."""
    from core.face.tracking import iou

    boxes = [box_of(mesh) for mesh in meshes]
    return any(iou(a, b) > limit for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def _realignment(points: np.ndarray, template: np.ndarray) -> float:
    """How far (crop pixels, mean over the alignment points) aligning the fitted mesh would move the crop."""
    m = similarity_transform(points[list(ALIGN_LANDMARKS), :2].astype(np.float64), template)
    return float(np.linalg.norm(template @ m[:, :2].T + m[:, 2] - template, axis=1).mean())


def _usable(matrix: np.ndarray) -> bool:
    """A finite crop matrix whose scale (crop pixels per image pixel) is between 1e-4 and 10: a face between
    about 5 and 480,000 pixels wide, not a mesh collapsed into a point or a line."""
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

    def _faces_seen(self, rgb: np.ndarray) -> int | None:
        """How many faces the short-range detector sees, every CHECK_EVERY frames (None on the others)."""
        finder = self._stream.finder
        if finder is None or self._frame % CHECK_EVERY:
            return None
        return len(finder.run({"image": rgb})["detections"])

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        self._frame += 1
        seen = self._faces_seen(rgb) if self._meshes else None
        if seen is not None and seen > len(self._meshes) and len(self._meshes) < self.max_faces:
            self._stream.expect_more_faces()  # a face entered: MediaPipe's multi-face graph takes this frame
        elif self._meshes and seen in (None, len(self._meshes)):  # (fewer seen: one may have left; MediaPipe decides)
            meshes, present, aus = follow(self._runtime, rgb, self._meshes)
            if (present >= MIN_PRESENT).all() and not _overlapping(meshes):
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

