"""Faces of a video stream: found by MediaPipe's short-range detector (on LiteRT, core/face/blazeface.py), fitted
and followed by the tracking mesh.

MediaPipe's mesh in tracking mode (core/face/stream_detection.py) costs 5-7 ms a frame on a 2-core AVX2 host:
more than the whole 5-ms live budget, and its graph detects again whenever a face moved out of its last box.
Here the tracking mesh (core/models/mesh_net.py) does all the fitting: each face is cut out where the last
frame's mesh put it, as the recognizer's 48-px grey crop, and the net re-fits the 478 points there (about
0.7 ms). A face the net no longer sees centred, or whose fit will not settle, is dropped. The short-range
detector looks on the first frame, on any frame that lost a face or has none, and every CHECK_EVERY frames
(a face entered); when it sees nothing on a stream's first frame or every CHECK_EVERY frames, the full-range model
looks too (faces 40-75 px wide of 640); a face it finds that nobody follows starts from its four keypoints (eyes, nose tip, mouth)
placed on the net's mean shape, and the net's refits pull that rough crop onto the face. The AUs of every frame
are the net's reading of the crop, so a face's AU track does not jump when the detector looks
(`python -m core.bench tracking` measures them against MediaPipe's photo mesh).
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
from core.face.detection import DetectedFace, box_of, iou
from core.face.stream_detection import CHECK_EVERY
from core.labels import AUS

MIN_PRESENT = 0.5  # the net's probability that a face is still centred in its crop, below which it is lost
# The net is trained on inter-frame motion up to 15% of the crop's side; a face that moved further is fitted
# roughly, then again from that fit, while aligning the fit would move the crop by more than SETTLE_PX
# (mean over the alignment points): at most MAX_REFITS passes a frame, after which a fit still moving is a
# face lost.
SETTLE_PX = 2.0
MAX_REFITS = 3
# A followed face the net gives less than this on a pass is gone (a jump, a cut): no further pass for it. On
# `core.bench tracking`'s fast clip every followed face recovered by a refit had at least 0.37 on its first pass.
GONE = 0.05
# A face the detector just found starts from its keypoints, up to 9 crop pixels off on a quickly turning head
# (p90, against where the net settles; the net trained on up to 7): it may take more passes, whatever the first
# pass says, to settle.
SEED_REFITS = 2 * MAX_REFITS
# The mesh points at the short-range detector's first four keypoints (right eye, left eye, nose tip, mouth centre;
# its ear points move with the head's turn): each the mean of these mesh points.
KEYPOINT_MESH_POINTS = ((33, 133), (362, 263), (1,), (13, 14))


def follow(runtime, rgb: np.ndarray, meshes: list[np.ndarray], max_refits: int = MAX_REFITS, gone: float = GONE
           ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Each mesh [478, 3] (image pixels) re-fitted on this frame; the net's presence probabilities [N] and
    AUs [N, 17] (read from the crop, not measured on the fitted mesh: they would carry all its points' errors).
    Each face is refitted while its fit still moves, up to max_refits passes, unless the net gave it under
    `gone`; a fit still moving after its last pass, or a mesh collapsed into a point or a line, is a face lost
    (presence 0)."""
    size = runtime.input_size
    template = FER_TEMPLATE.astype(np.float64) * (size / FER_TEMPLATE_SIZE)
    meshes = list(meshes)
    present = np.zeros(len(meshes), np.float32)
    aus = np.full((len(meshes), len(AUS)), np.nan, np.float32)
    unsettled = np.zeros(len(meshes), bool)
    todo = list(range(len(meshes)))
    for _ in range(max(1, max_refits)):
        matrices = {i: alignment_matrix(meshes[i], size) for i in todo}
        todo = [i for i in todo if _usable(matrices[i])]
        if not todo:
            break
        fitted, p, a = runtime.run(np.stack([aligned_grey(rgb, matrices[i], size) for i in todo]))
        for k, i in enumerate(todo):
            meshes[i], present[i], aus[i] = to_image(fitted[k], matrices[i]), p[k], a[k]
            unsettled[i] = _realignment(fitted[k], template) > SETTLE_PX
        todo = [i for i in todo if unsettled[i] and present[i] >= gone]
        if not todo:
            break
    return meshes, np.where(unsettled, 0.0, present).astype(np.float32), aus


def _distinct(faces: list[tuple[np.ndarray, np.ndarray]], limit: float = 0.5) -> list[tuple[np.ndarray, np.ndarray]]:
    """(mesh, AUs) pairs without a face followed twice: a later mesh whose box overlaps an earlier one's by more
    than `limit` (IoU) is dropped."""
    kept, boxes = [], []
    for (mesh, aus), box in zip(faces, [box_of(mesh) for mesh, _ in faces]):
        if not boxes or iou(box, boxes).max() <= limit:
            kept.append((mesh, aus))
            boxes.append(box)
    return kept


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


def _inside(point: np.ndarray, box) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


class TrackingMeshDetector:
    """detect(rgb) of consecutive frames of one stream (not thread-safe: FaceDetector locks it and orders the
    faces)."""

    def __init__(self, max_faces: int = 4, min_confidence: float = 0.5, runtime=None, finder=None, far_finder=None):
        from core import get_mesh_runtime
        from core.face.blazeface import BlazeFace

        self.max_faces = max_faces
        self._finder = finder or BlazeFace(min_confidence=min_confidence)
        # the full-range model, when the short-range one found nothing on a stream's first frame or every CHECK_EVERY:
        # faces 40-75 px wide in 640x480, which the short-range model misses (`core.bench tracking` face_sizes);
        # (built on its first look)
        self._far_finder = far_finder
        self._runtime = runtime or get_mesh_runtime()
        self._mean_shape = self._runtime.mean_shape
        self._keypoints = np.array([self._mean_shape[list(points), :2].mean(axis=0) for points in KEYPOINT_MESH_POINTS],
                                   np.float64)
        self._meshes: list[np.ndarray] = []
        self._frame = 0

    def close(self) -> None:
        for finder in (self._finder, self._far_finder):
            if finder:
                finder.close()
        self._finder = self._far_finder = None

    def reset(self) -> None:
        """Forget the faces followed: the next frame is handled as a stream's first."""
        self._meshes, self._frame = [], 0

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        self._frame += 1
        faces: list[tuple[np.ndarray, np.ndarray]] = []
        if self._meshes:
            meshes, present, aus = follow(self._runtime, rgb, self._meshes)
            faces = [(mesh, au) for mesh, p, au in zip(meshes, present, aus) if p >= MIN_PRESENT]
        checking = self._frame % CHECK_EVERY == 0
        look = checking and len(faces) < self.max_faces  # (for a newcomer)
        if not faces or len(faces) < len(self._meshes) or look:
            # far: the full-range model may look too (when the short-range one sees nothing) on a stream's first
            # frame and every CHECK_EVERY: an empty frame costs the short-range look alone between
            faces += self._find(rgb, faces, far=self._frame == 1 or checking)
        faces = _distinct(faces)[: self.max_faces]
        self._meshes = [mesh for mesh, _ in faces]
        return [DetectedFace(box_of(mesh), mesh, 1.0, "mesh-net", au) for mesh, au in faces]

    def _find(self, rgb: np.ndarray, followed: list[tuple[np.ndarray, np.ndarray]], far: bool = False
              ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Faces the short-range detector (or, with `far`, when it sees none, the full-range one) sees that no followed face covers, fitted by the net from the detector's
        keypoints; those the net does not see centred (or whose fit will not settle) are left out."""
        boxes = [box_of(mesh) for mesh, _ in followed]
        detections = self._finder.detect(rgb)
        if not detections and far:
            if self._far_finder is None:
                from core.face.blazeface import FULL_RANGE, BlazeFace

                self._far_finder = BlazeFace(FULL_RANGE)
            detections = self._far_finder.detect(rgb)
        seeds = []
        for detection in detections:
            keypoints = detection.keypoints[: len(KEYPOINT_MESH_POINTS)]
            if any(_inside(keypoints[2], box) for box in boxes):
                continue  # (a face already followed: its nose tip is inside that face's box)
            seeds.append(to_image(self._mean_shape, similarity_transform(keypoints, self._keypoints)))
        if not seeds:
            return []
        meshes, present, aus = follow(self._runtime, rgb, seeds, SEED_REFITS, gone=0.0)
        found = [(mesh, au) for mesh, p, au in zip(meshes, present, aus) if p >= MIN_PRESENT]
        return found[: max(0, self.max_faces - len(followed))]
