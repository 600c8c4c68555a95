"""Faces: MediaPipe detection + 478-point mesh (MTCNN fallback), and alignment into FER2013 framing.

    python -m core.faces calibrate --data ../shared/data/fer2013plus   # re-measure FER_TEMPLATE

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
# MTCNN's image pyramid grows with the photo (a 36 MP photo took 16 s and 2 GB): it looks at a copy
# no longer than this on its long side; a face it can find there (>= 20 px) is >= 1.6% of that side.
MTCNN_MAX_SIDE = 1280

# Mesh points that move little with expression (eye corners, nose ridge, face sides, forehead):
# a similarity fit to them places a face the way FER2013's crops are placed, whatever the expression.
ALIGN_LANDMARKS = (33, 133, 362, 263, 168, 6, 197, 195, 5, 4, 1, 234, 454, 127, 356, 93, 323, 10, 151)

# Procrustes mean shape of ALIGN_LANDMARKS in 48x48 FER2013 train crops, placed so that aligning a
# typical crop to it is the identity; measured by `python -m core.faces calibrate` (face_mesh on
# 4,000 train crops upscaled 2x and padded by a quarter; found on 3,916). Eye centres sit at (15.1, 18.8) and (32.5, 18.6), the mouth centre at (24.1, 37.1).
FER_TEMPLATE = np.array([
    [10.805, 18.507],
    [18.582, 18.975],
    [29.013, 18.841],
    [36.906, 18.147],
    [23.714, 17.591],
    [23.745, 20.085],
    [23.764, 22.228],
    [23.779, 24.183],
    [23.789, 26.271],
    [23.813, 28.710],
    [23.852, 30.497],
    [4.553, 22.836],
    [43.740, 22.175],
    [4.219, 18.885],
    [43.884, 18.185],
    [4.894, 26.920],
    [43.583, 26.296],
    [23.484, 3.678],
    [23.531, 8.205],
], dtype=np.float32)
FER_TEMPLATE_SIZE = 48


@dataclass
class DetectedFace:
    box: tuple[float, float, float, float]
    landmarks: np.ndarray  # float32 (478, 3), NaN when the mesh could not be fitted
    score: float
    detector: str  # "mediapipe", "mtcnn" or "mesh" (video tracking)

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)

    @property
    def has_landmarks(self) -> bool:
        return bool(np.isfinite(self.landmarks).all())


def _quiet_mediapipe() -> None:
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class FaceDetector:
    """Every face in an image, largest first.

    mode="photo": full-range detector, then the mesh fitted on each face's crop; MTCNN when
    MediaPipe finds nothing. mode="video": the mesh's own short-range detection and tracking over
    consecutive frames of one stream (fast; no MTCNN).
    """

    def __init__(self, mode: str = "photo", max_faces: int = 10, min_confidence: float = 0.5, use_mtcnn: bool = True):
        if mode not in ("photo", "video"):
            raise ValueError(f"mode must be 'photo' or 'video', not {mode!r}")
        self.mode = mode
        self.max_faces = max_faces
        self.min_confidence = min_confidence
        self.use_mtcnn = use_mtcnn
        self._lock = threading.Lock()
        self._detector = None
        self._close_detector = None
        self._mesh = None
        self._mtcnn = None

    # -- graphs, built on first use
    def _graphs(self):
        if self._mesh is None:
            _quiet_mediapipe()
            import mediapipe as mp

            if self.mode == "photo":
                # Full range first (group photos, small faces), short range for close-ups it misses.
                self._detector = mp.solutions.face_detection.FaceDetection(
                    model_selection=1, min_detection_confidence=self.min_confidence
                )
                self._close_detector = mp.solutions.face_detection.FaceDetection(
                    model_selection=0, min_detection_confidence=self.min_confidence
                )
                self._mesh = mp.solutions.face_mesh.FaceMesh(
                    static_image_mode=True, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.3
                )
            else:
                self._mesh = mp.solutions.face_mesh.FaceMesh(
                    static_image_mode=False, max_num_faces=self.max_faces, refine_landmarks=True,
                    min_detection_confidence=self.min_confidence, min_tracking_confidence=0.5,
                )
        return self._detector, self._mesh

    def close(self) -> None:
        with self._lock:
            for graph in (self._detector, self._close_detector, self._mesh):
                if graph is not None:
                    graph.close()
            self._detector = self._close_detector = self._mesh = None

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        """Faces in an RGB uint8 image [H, W, 3], largest first; [] when there is none."""
        rgb = np.ascontiguousarray(rgb)
        with self._lock:
            faces = self._detect_video(rgb) if self.mode == "video" else self._detect_photo(rgb)
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces[: self.max_faces]

    def _detect_video(self, rgb: np.ndarray) -> list[DetectedFace]:
        _, mesh = self._graphs()
        result = mesh.process(rgb)
        h, w = rgb.shape[:2]
        faces = []
        for landmarks in result.multi_face_landmarks or []:
            points = _landmarks_to_pixels(landmarks, w, h)
            faces.append(DetectedFace(_box_of(points), points, 1.0, "mesh"))
        return faces

    def _detect_photo(self, rgb: np.ndarray) -> list[DetectedFace]:
        detector, _ = self._graphs()
        h, w = rgb.shape[:2]
        boxes = []
        for graph in (detector, self._close_detector):
            for detection in graph.process(rgb).detections or []:
                rel = detection.location_data.relative_bounding_box
                box = (rel.xmin * w, rel.ymin * h, (rel.xmin + rel.width) * w, (rel.ymin + rel.height) * h)
                boxes.append((_clip_box(box, w, h), float(detection.score[0]), "mediapipe"))
            if boxes:
                break
        if not boxes and self.use_mtcnn:
            boxes = [(box, score, "mtcnn") for box, score in self._mtcnn_boxes(rgb)]
        boxes = sorted(boxes, key=lambda b: _area(b[0]), reverse=True)[: self.max_faces]
        return [DetectedFace(box, self._mesh_in_box(rgb, box), score, name) for box, score, name in boxes]

    def _mesh_in_box(self, rgb: np.ndarray, box) -> np.ndarray:
        """Fit the mesh on a square crop around one box (so every face of a group photo gets one)."""
        import cv2

        _, mesh = self._graphs()
        x0, y0, x1, y1 = box
        side = max(x1 - x0, y1 - y0) * 2.0
        if side < 4:
            return np.full((NUM_LANDMARKS, 3), np.nan, np.float32)
        left, top = (x0 + x1) / 2 - side / 2, (y0 + y1) / 2 - side / 2
        # The mesh works at 192 px: cut and shrink the crop in one warp (no full-size copy of a big photo).
        out = int(min(384, round(side)))
        scale = out / side
        matrix = np.array([[scale, 0.0, -left * scale], [0.0, scale, -top * scale]])
        crop = cv2.warpAffine(rgb, matrix, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=(0, 0, 0))
        result = mesh.process(np.ascontiguousarray(crop))
        if not result.multi_face_landmarks:
            return np.full((NUM_LANDMARKS, 3), np.nan, np.float32)
        points = _landmarks_to_pixels(result.multi_face_landmarks[0], out, out)
        # back to image pixels (continuous coordinates; OpenCV's warp puts pixel centres at integers)
        points[:, :2] = (points[:, :2] - 0.5) / scale + 0.5
        points[:, 2] /= scale
        points[:, 0] += left
        points[:, 1] += top
        return points

    def _mtcnn_boxes(self, rgb: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
        if self._mtcnn is None:
            from core.mtcnn import load_mtcnn

            self._mtcnn = load_mtcnn()
        h, w = rgb.shape[:2]
        scale = min(1.0, MTCNN_MAX_SIDE / max(h, w))
        if min(h, w) * scale < self._mtcnn.min_face_size:
            return []  # no face of its smallest size fits (and facenet's pyramid would be empty: it raises)
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


def _landmarks_to_pixels(landmarks, width: int, height: int) -> np.ndarray:
    return np.array([(p.x * width, p.y * height, p.z * width) for p in landmarks.landmark], np.float32)


def _box_of(points: np.ndarray) -> tuple[float, float, float, float]:
    return (float(points[:, 0].min()), float(points[:, 1].min()), float(points[:, 0].max()), float(points[:, 1].max()))


def _clip_box(box, w: int, h: int) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    return (float(max(0, x0)), float(max(0, y0)), float(min(w, x1)), float(min(h, y1)))


def _area(box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


# ---------------------------------------------------------------- alignment (pure functions)

def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + shift (Umeyama 1991) mapping src (K,2) onto dst (K,2)."""
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - src_mean, dst - dst_mean
    cov = d.T @ s / len(src)
    u, sigma, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rotation = u @ np.diag(sign) @ vt
    scale = (sigma * sign).sum() / max(1e-12, (s**2).sum() / len(src))
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - matrix[:, :2] @ src_mean
    return matrix


def alignment_matrix(landmarks: np.ndarray, size: int) -> np.ndarray:
    """2x3 matrix taking image pixels to a size x size crop in FER2013 framing."""
    dst = FER_TEMPLATE * (size / FER_TEMPLATE_SIZE)
    return similarity_transform(landmarks[list(ALIGN_LANDMARKS), :2].astype(np.float64), dst.astype(np.float64))


def box_alignment_matrix(box, size: int) -> np.ndarray:
    """Fallback framing from a detector box alone (no mesh).

    A face detector's box spans the face from cheek to cheek and is centred near the nose tip:
    map its width to the template's face width and its centre to the template's nose tip.
    """
    x0, y0, x1, y1 = box
    t = FER_TEMPLATE * (size / FER_TEMPLATE_SIZE)
    t_side = t[:, 0].max() - t[:, 0].min()  # the template's face width
    scale = t_side / max(1e-6, x1 - x0)
    matrix = np.array([[scale, 0.0, 0.0], [0.0, scale, 0.0]])
    nose_tip = t[ALIGN_LANDMARKS.index(4)]
    matrix[:, 2] = nose_tip - scale * np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    return matrix


def warp_grey(grey: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Warp with anti-aliasing: render at up to 4x, then area-downsample (a big face is not aliased).

    matrix maps image coordinates to crop coordinates, both continuous (pixel i spans [i, i + 1)).
    """
    import cv2

    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    factor = int(min(4, max(1, np.ceil(0.5 / max(scale, 1e-6)))))
    # `matrix` works in continuous coordinates (pixel i spans [i, i + 1)), as MediaPipe's landmarks and
    # FER_TEMPLATE do; OpenCV puts pixel i at i. Convert, for the image rendered `factor` times larger.
    big = matrix * factor
    big[:, 2] += big[:, :2] @ np.array([0.5, 0.5]) - 0.5
    out = cv2.warpAffine(grey, big, (size * factor, size * factor), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if factor > 1:
        out = cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA)
    return out


def align_face(grey: np.ndarray, face: DetectedFace, size: int = 48) -> np.ndarray:
    """uint8 grey crop [size, size] of one face in FER2013 framing."""
    if face.has_landmarks:
        matrix = alignment_matrix(face.landmarks, size)
    else:
        matrix = box_alignment_matrix(face.box, size)
    return warp_grey(grey, matrix, size)


# ---------------------------------------------------------------- calibration

def fer_crop_landmarks(images: np.ndarray, upscale: int = 2) -> np.ndarray:
    """478 landmarks (x, y, z in 48-px crop pixels; NaN when not found) for each FER crop [N,48,48].

    The crops are upscaled and padded by a quarter on each side, as face_mesh needs some context.
    """
    import cv2

    _quiet_mediapipe()
    import mediapipe as mp

    n, h, w = images.shape
    out = np.full((n, NUM_LANDMARKS, 3), np.nan, np.float32)
    pad_y, pad_x = (h * upscale) // 4, (w * upscale) // 4
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                                         min_detection_confidence=0.3) as mesh:
        for i, img in enumerate(images):
            big = cv2.resize(img, (w * upscale, h * upscale), interpolation=cv2.INTER_CUBIC)
            big = cv2.copyMakeBorder(big, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_REPLICATE)
            result = mesh.process(np.ascontiguousarray(np.repeat(big[:, :, None], 3, axis=2)))
            if result.multi_face_landmarks:
                pts = np.array([(p.x, p.y, p.z) for p in result.multi_face_landmarks[0].landmark], np.float32)
                pts[:, 0] = (pts[:, 0] * big.shape[1] - pad_x) / upscale
                pts[:, 1] = (pts[:, 1] * big.shape[0] - pad_y) / upscale
                pts[:, 2] = pts[:, 2] * big.shape[1] / upscale
                out[i] = pts
    return out


def procrustes_template(points: np.ndarray, iterations: int = 10) -> np.ndarray:
    """Mean shape of points [N, K, 2] under similarity alignment, placed where the faces are.

    Generalised Procrustes analysis, then scaled and shifted so that aligning a typical face to
    it is the identity (median fitted scale 1, centroid at the median centroid): the template then
    reproduces the framing of the crops it was measured on.
    """
    template = points.mean(axis=0)
    for _ in range(iterations):
        aligned = []
        for p in points:
            m = similarity_transform(p, template)
            aligned.append(p @ m[:, :2].T + m[:, 2])
        template = np.mean(aligned, axis=0)
    scales = [np.sqrt(abs(np.linalg.det(similarity_transform(p, template)[:, :2]))) for p in points]
    centre = template.mean(axis=0)
    return (template - centre) / np.median(scales) + np.median(points.mean(axis=1), axis=0)


def _calibrate(data: str, count: int) -> None:
    from core.data import load_split

    train = load_split(data, "train")
    rng = np.random.default_rng(0)
    index = rng.choice(len(train), size=min(count, len(train)), replace=False)
    points = fer_crop_landmarks(train.images[index])
    found = np.isfinite(points[:, 0, 0])
    template = procrustes_template(points[found][:, list(ALIGN_LANDMARKS), :2].astype(np.float64))
    mean = np.median(points[found], axis=0)
    left_eye = mean[[33, 133]].mean(axis=0)
    right_eye = mean[[362, 263]].mean(axis=0)
    mouth = mean[[13, 14, 61, 291]].mean(axis=0)
    print(f"# landmarks found on {found.sum()} of {len(index)} train crops")
    print(f"# median eye centres {left_eye.round(2).tolist()} {right_eye.round(2).tolist()}, "
          f"mouth centre {mouth.round(2).tolist()}")
    print("FER_TEMPLATE = np.array([")
    for x, y in template:
        print(f"    [{x:.3f}, {y:.3f}],")
    print("], dtype=np.float32)")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m core.faces")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("calibrate", help="measure FER_TEMPLATE on FER2013 train crops")
    c.add_argument("--data", required=True)
    c.add_argument("--count", type=int, default=4000)
    args = parser.parse_args()
    _calibrate(args.data, args.count)
