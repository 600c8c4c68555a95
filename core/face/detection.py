"""Face detection: MediaPipe detection + 478-point mesh, MTCNN fallback.

Boxes are (x0, y0, x1, y1) and landmarks (478, 3) in pixels of the original image (z in the
same scale as x, MediaPipe's convention). MediaPipe graphs are not thread-safe: each
FaceDetector serialises its calls with a lock; use one detector per stream for tracking.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np

NUM_LANDMARKS = 478

# MTCNN's image pyramid grows with the photo (seconds and gigabytes on a 36 MP photo, docs/limits.md): it
# looks at a copy no longer than this on its long side; a face it can find there (>= 20 px) is >= 1.6% of it.
MTCNN_MAX_SIDE = 1280

# How video mode follows faces between frames (FaceDetector's docstring).
TRACKERS = ("mesh-net", "mediapipe")


@dataclass
class DetectedFace:
    box: tuple[float, float, float, float]
    landmarks: np.ndarray  # float32 (478, 3), NaN when the mesh could not be fitted
    score: float
    detector: str  # "mediapipe", "mtcnn", "mesh" (MediaPipe's video tracking) or "mesh-net" (the tracking mesh's fit)
    aus: np.ndarray | None = None  # AU intensities [17] read by the tracking mesh; else measured on the landmarks

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)

    @property
    def has_landmarks(self) -> bool:
        return bool(np.isfinite(self.landmarks).all())


def quiet_mediapipe() -> None:
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class FaceDetector:
    """Every face in an image, largest first.

    mode="photo": full-range detector, then the mesh fitted on each face's crop; MTCNN when
    MediaPipe finds nothing. mode="video": faces of consecutive frames of one stream, no MTCNN; with
    tracker="mesh-net" MediaPipe's short-range detector finds them and the tracking mesh fits and follows them
    (core/face/mesh_tracking.py), with tracker="mediapipe" MediaPipe's mesh tracks them on every frame
    (core/face/stream_detection.py).
    mesh_from_detection (photo): the mesh starts from the detector's own detection (core/face/roi_mesh.py,
    1.7 ms a face faster) instead of the FaceMesh solution detecting the face again in the crop; off by
    default, as the AUs read on it followed a photo edit's lips less faithfully (docs/limits.md).
    """

    def __init__(self, mode: str = "photo", max_faces: int = 10, min_confidence: float = 0.5, use_mtcnn: bool = True,
                 mesh_from_detection: bool = False, tracker: str = "mesh-net"):
        if mode not in ("photo", "video"):
            raise ValueError(f"mode must be 'photo' or 'video', not {mode!r}")
        if tracker not in TRACKERS:
            raise ValueError(f"tracker must be one of {', '.join(TRACKERS)}, not {tracker!r}")
        self.mode = mode
        self.tracker = tracker
        self.max_faces = max_faces
        self.min_confidence = min_confidence
        self.use_mtcnn = use_mtcnn
        self.mesh_from_detection = mesh_from_detection
        self._lock = threading.Lock()
        self._detector = None
        self._close_detector = None
        self._mesh = None
        self._roi_mesh = None
        self._mtcnn = None

    # -- graphs, built on first use
    def _graphs(self):
        if self._mesh is None:
            quiet_mediapipe()
            if self.mode == "photo":
                import mediapipe as mp

                from core.face.mp_graph import lean

                # Full range first (group photos, small faces), short range for close-ups it misses.
                detection = mp.solutions.face_detection.FaceDetection
                self._detector = lean(detection, model_selection=1, min_detection_confidence=self.min_confidence)
                self._close_detector = lean(detection, model_selection=0, min_detection_confidence=self.min_confidence)
                self._mesh = lean(mp.solutions.face_mesh.FaceMesh, static_image_mode=True, max_num_faces=1,
                                  refine_landmarks=True, min_detection_confidence=0.3)
            elif self.tracker == "mesh-net":
                from core.face.mesh_tracking import TrackingMeshDetector

                self._mesh = TrackingMeshDetector(self.max_faces, self.min_confidence)
            else:
                from core.face.stream_detection import StreamDetector

                self._mesh = StreamDetector(self.max_faces, self.min_confidence)
        return self._detector, self._mesh

    def close(self) -> None:
        with self._lock:
            for graph in (self._detector, self._close_detector, self._mesh, self._roi_mesh):
                if graph is not None:
                    graph.close()
            self._detector = self._close_detector = self._mesh = self._roi_mesh = None

    def reset(self) -> None:
        """Video mode: forget the faces followed, so that the next frame is handled as a stream's first (a photo
        has nothing to forget)."""
        with self._lock:
            if self.mode == "video" and self._mesh is not None:
                self._mesh.reset()

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        """Faces in an RGB uint8 image [H, W, 3], largest first; [] when there is none."""
        rgb = np.ascontiguousarray(rgb)
        with self._lock:
            faces = self._detect_video(rgb) if self.mode == "video" else self._detect_photo(rgb)
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces[: self.max_faces]

    def _detect_video(self, rgb: np.ndarray) -> list[DetectedFace]:
        _, stream = self._graphs()
        return stream.detect(rgb)

    def _detect_photo(self, rgb: np.ndarray) -> list[DetectedFace]:
        from mediapipe.framework.formats.detection_pb2 import Detection

        from core.face.mp_graph import parse

        detector, _ = self._graphs()
        h, w = rgb.shape[:2]
        boxes = []
        for graph in (detector, self._close_detector):
            for detection in parse(graph.run({"image": rgb})["detections"], Detection):
                rel = detection.location_data.relative_bounding_box
                box = (rel.xmin * w, rel.ymin * h, (rel.xmin + rel.width) * w, (rel.ymin + rel.height) * h)
                boxes.append((_clip_box(box, w, h), float(detection.score[0]), "mediapipe", detection))
            if boxes:
                break
        if not boxes and self.use_mtcnn:
            boxes = [(box, score, "mtcnn", None) for box, score in self._mtcnn_boxes(rgb)]
        boxes = sorted(boxes, key=lambda b: _area(b[0]), reverse=True)[: self.max_faces]
        return [DetectedFace(box, self._mesh_in_box(rgb, box, detection), score, name)
                for box, score, name, detection in boxes]

    def _mesh_in_box(self, rgb: np.ndarray, box, detection=None) -> np.ndarray:
        """Fit the mesh on a square crop around one box (so every face of a group photo gets one).

        With mesh_from_detection and MediaPipe's detection of the face, the landmark graph starts from it
        (core/face/roi_mesh.py); otherwise the FaceMesh solution detects the face in the crop again.
        """
        import cv2

        x0, y0, x1, y1 = box
        side = max(x1 - x0, y1 - y0) * 2.0
        if side < 4:
            return np.full((NUM_LANDMARKS, 3), np.nan, np.float32)
        left, top = (x0 + x1) / 2 - side / 2, (y0 + y1) / 2 - side / 2
        # The mesh works at 192 px: cut and shrink the crop in one warp (no full-size copy of a big photo).
        out = int(min(384, round(side)))
        scale = out / side
        matrix = np.array([[scale, 0.0, -left * scale], [0.0, scale, -top * scale]])
        crop = np.ascontiguousarray(cv2.warpAffine(rgb, matrix, (out, out), flags=cv2.INTER_LINEAR,
                                                   borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0)))
        found = None
        if detection is not None and self.mesh_from_detection:
            found = self._roi_mesh_graph().landmarks(crop, detection, (rgb.shape[1], rgb.shape[0]), left, top, scale)
        if found is None:  # no detection keypoints (MTCNN), or the mesh from them found nothing: detect in the crop
            found = next(iter(self._graphs()[1].run({"image": crop})["multi_face_landmarks"]), None)
        if found is None:
            return np.full((NUM_LANDMARKS, 3), np.nan, np.float32)
        points = landmarks_to_pixels(found, out, out)
        # back to image pixels (continuous coordinates; OpenCV's warp puts pixel centres at integers)
        points[:, :2] = (points[:, :2] - 0.5) / scale + 0.5
        points[:, 2] /= scale
        points[:, 0] += left
        points[:, 1] += top
        return points

    def _roi_mesh_graph(self):
        if self._roi_mesh is None:
            from core.face.roi_mesh import RoiMesh

            self._roi_mesh = RoiMesh()
        return self._roi_mesh

    def _mtcnn_boxes(self, rgb: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
        if self._mtcnn is None:
            from core.face.mtcnn import load_mtcnn

            self._mtcnn = load_mtcnn()
        h, w = rgb.shape[:2]
        scale = min(1.0, MTCNN_MAX_SIDE / max(h, w))
        if min(h, w) * scale < self._mtcnn.min_face_size:
            return []  # no face of its smallest size fits (and the pyramid would be empty)
        if scale < 1.0:
            import cv2

            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        boxes, probs = self._mtcnn.detect(rgb)
        if boxes is None:
            return []
        boxes = np.asarray(boxes, dtype=np.float32) / scale
        probs = np.asarray(probs, dtype=np.float32)
        return [(_clip_box(tuple(b), w, h), float(p)) for b, p in zip(boxes, probs) if p >= 0.9]


# One NormalizedLandmark with x, y, z set, as protobuf serialises it in a NormalizedLandmarkList: field 1
# (length-delimited, 15 bytes), then the floats as fields 1-3 (fixed32, little-endian).
_WIRE = np.dtype([("tag", "u1"), ("len", "u1"), ("tx", "u1"), ("x", "<f4"), ("ty", "u1"), ("y", "<f4"),
                  ("tz", "u1"), ("z", "<f4")])
_WIRE_TAGS = (0x0A, 15, 0x0D, 0x15, 0x1D)


def landmarks_to_pixels(landmarks, width: int, height: int) -> np.ndarray:
    """(N, 3) float32 pixels of a NormalizedLandmarkList or its serialized bytes (z scaled like x).

    Read from the wire bytes in one numpy pass (20 us) rather than field by field in Python
    (0.28 ms for 478 points); a message laid out otherwise (e.g. with visibility set) takes the slow path.
    Both give the same float32 values (products in float64, then rounded).
    """
    wire = landmarks if isinstance(landmarks, bytes) else landmarks.SerializeToString()
    if len(wire) % _WIRE.itemsize == 0:
        rows = np.frombuffer(wire, _WIRE)
        if all((rows[name] == tag).all() for name, tag in zip(("tag", "len", "tx", "ty", "tz"), _WIRE_TAGS)):
            xyz = np.stack([rows["x"], rows["y"], rows["z"]], axis=1).astype(np.float64)
            return (xyz * np.array([width, height, width], np.float64)).astype(np.float32)
    if isinstance(landmarks, bytes):
        from mediapipe.framework.formats.landmark_pb2 import NormalizedLandmarkList

        landmarks = NormalizedLandmarkList.FromString(wire)
    return np.array([(p.x * width, p.y * height, p.z * width) for p in landmarks.landmark], np.float32)


def box_of(points: np.ndarray) -> tuple[float, float, float, float]:
    return (float(points[:, 0].min()), float(points[:, 1].min()), float(points[:, 0].max()), float(points[:, 1].max()))


def iou(a, b):
    """Intersection over union of box a (x0, y0, x1, y1) with box b, or with each row of boxes b [N, 4]."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    inter = np.prod(np.clip(np.minimum(a[2:], b[..., 2:]) - np.maximum(a[:2], b[..., :2]), 0, None), axis=-1)
    union = _area(a) + np.prod(np.clip(b[..., 2:] - b[..., :2], 0, None), axis=-1) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _clip_box(box, w: int, h: int) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    return (float(max(0, x0)), float(max(0, y0)), float(min(w, x1)), float(min(h, y1)))


def _area(box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])
