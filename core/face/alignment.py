"""Alignment into FER2013 framing: a similarity fit of stable mesh points onto FER_TEMPLATE."""

from __future__ import annotations

import numpy as np

from core.face.detection import NUM_LANDMARKS, DetectedFace, quiet_mediapipe

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


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + shift (Umeyama 1991) mapping src (K,2) onto dst (K,2).

    In 2-D the optimum has a closed form (the points as complex numbers: d = c * s + t): no SVD, a fifth of
    the time, which the live path pays for every face twice a frame.
    """
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - src_mean, dst - dst_mean
    norm = max(1e-12, float((s**2).sum()))
    a = float((s * d).sum()) / norm
    b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / norm
    matrix = np.empty((2, 3))
    matrix[:, :2] = ((a, -b), (b, a))
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


def aligned_grey(rgb: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """warp_grey of an RGB image: the warp first, then the luma of the small result (a whole photo turned
    grey to cut out one face cost about 30 ms per crop on a 40-MP photo). Within a grey level of
    warp_grey(to_grey(rgb), ...)."""
    from core.face.images import to_grey

    return to_grey(warp_grey(rgb, matrix, size))


def align_face(grey: np.ndarray, face: DetectedFace, size: int = 48) -> np.ndarray:
    """uint8 grey crop [size, size] of one face in FER2013 framing."""
    if face.has_landmarks:
        matrix = alignment_matrix(face.landmarks, size)
    else:
        matrix = box_alignment_matrix(face.box, size)
    return warp_grey(grey, matrix, size)


def fer_crop_landmarks(images: np.ndarray, upscale: int = 2) -> np.ndarray:
    """478 landmarks (x, y, z in 48-px crop pixels; NaN when not found) for each FER crop [N,48,48]."""
    mesh = CropMesh(upscale)
    try:
        return mesh.landmarks(images)
    finally:
        mesh.close()


class CropMesh:
    """The face mesh of FER-framed crops, one graph kept for many calls (not thread-safe).

    The crops are upscaled and padded by a quarter on each side, as face_mesh needs some context.
    """

    def __init__(self, upscale: int = 2):
        quiet_mediapipe()
        import mediapipe as mp

        from core.face.mp_graph import lean

        self.upscale = upscale
        self._graph = lean(mp.solutions.face_mesh.FaceMesh, static_image_mode=True, max_num_faces=1,
                           refine_landmarks=True, min_detection_confidence=0.3)

    def landmarks(self, images: np.ndarray) -> np.ndarray:
        import cv2

        from core.face.detection import landmarks_to_pixels

        n, h, w = images.shape
        up = self.upscale
        out = np.full((n, NUM_LANDMARKS, 3), np.nan, np.float32)
        pad_y, pad_x = (h * up) // 4, (w * up) // 4
        for i, img in enumerate(images):
            big = cv2.resize(img, (w * up, h * up), interpolation=cv2.INTER_CUBIC)
            big = cv2.copyMakeBorder(big, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_REPLICATE)
            found = self._graph.run({"image": np.ascontiguousarray(np.repeat(big[:, :, None], 3, axis=2))})
            if found["multi_face_landmarks"]:
                pts = landmarks_to_pixels(found["multi_face_landmarks"][0], 1, 1)  # the model's own float32s
                pts[:, 0] = (pts[:, 0] * big.shape[1] - pad_x) / up
                pts[:, 1] = (pts[:, 1] * big.shape[0] - pad_y) / up
                pts[:, 2] = pts[:, 2] * big.shape[1] / up
                out[i] = pts
        return out

    def close(self) -> None:
        self._graph.close()


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


def calibrate_template(data: str, count: int) -> None:
    from core.training.data import load_split

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
