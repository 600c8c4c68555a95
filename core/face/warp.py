"""A dense, smooth photo warp driven by moved mesh points, confined to the face by a soft mask.

The backward map (where each output pixel reads from) is a thin-plate spline through the moved mesh
points, pinned to zero on the border of the face region. It is evaluated on a coarse grid over the
face region only, faded out by the face mask, upsampled and applied with cv2.remap: the cost follows
the face's size, not the photo's, and every pixel outside the region is untouched by construction.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

# Points of the mesh's face oval (MediaPipe's silhouette, in order): the outline of the face mask.
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
GRID_CELLS = 64  # coarse grid across the face region: lids and lips move by a few pixels, so it must resolve them
MIN_CELL_PX = 2.0  # ... but a small region (the generator's 48-px crop) needs no node per pixel
MASK_SIDE = 128  # the mask is drawn at this size and resized: its edge is blurred anyway
TPS_BLOCK = 256  # rows of the spline's kernel made at a time (256 x ~250 float32: in L2)
TPS_SMOOTHING = 1e-3  # of the (unit-scaled) kernel: nearly exact, stable for close-together points
# The face's warped area, as fractions of the face size: the mask reaches past the mesh by MASK_GROW and fades
# over MASK_BLUR; the region holds both meshes with REGION_MARGIN around them
MASK_GROW, MASK_BLUR, REGION_MARGIN = 0.08, 0.03, 0.16


@dataclass(frozen=True)
class Region:
    """An integer pixel window of the image: [y0:y1, x0:x1]."""
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    @property
    def offset(self) -> np.ndarray:
        return np.array([self.x0, self.y0], np.float64)


def face_size(points: np.ndarray) -> float:
    """A face's scale in pixels: the larger side of its mesh's bounding box."""
    span = points[:, :2].max(axis=0) - points[:, :2].min(axis=0)
    return float(max(span.max(), 1.0))


def face_region(points_list, image_shape, margin: float = 0.08) -> Region:
    """Bounding window of all given meshes [478, 2+] grown by `margin` of the face size, clipped to the image."""
    points = np.concatenate([p[:, :2] for p in points_list])
    grow = margin * face_size(points)
    h, w = image_shape[:2]
    x0, y0 = np.floor(points.min(axis=0) - grow).astype(int)
    x1, y1 = np.ceil(points.max(axis=0) + grow).astype(int)
    return Region(int(max(0, x0)), int(max(0, y0)), int(min(w, x1)), int(min(h, y1)))


def soft_face_mask(points: np.ndarray, region: Region, grow: float = 0.04, blur: float = 0.04) -> np.ndarray:
    """float32 [h, w] in [0, 1]: 1 inside the face oval (grown by `grow` of the face size about its
    centre), falling smoothly to 0 over about `blur` of the face size; 0 at the region's border."""
    import cv2

    h, w = region.shape
    scale = MASK_SIDE / max(h, w)
    oval = points[list(FACE_OVAL), :2] - region.offset
    centre = oval.mean(axis=0)
    oval = centre + (oval - centre) * (1.0 + grow)
    small = np.zeros((max(2, round(h * scale)), max(2, round(w * scale))), np.float32)
    cv2.fillPoly(small, [np.round(oval * scale).astype(np.int32)], 1.0)
    sigma = max(0.5, blur * face_size(points) * scale)
    small = cv2.GaussianBlur(small, (0, 0), sigma)
    mask = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    _zero_border(mask)
    return mask


def _zero_border(mask: np.ndarray) -> None:
    mask[0, :] = mask[-1, :] = 0.0
    mask[:, 0] = mask[:, -1] = 0.0


def _tps_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """r^2 log r between points a [M, 2] and b [K, 2] (in their dtype), made in place: cv2.log is 3x numpy's."""
    import cv2

    d2 = a @ (-2.0 * b.T)
    d2 += (a * a).sum(axis=1)[:, None]
    d2 += (b * b).sum(axis=1)[None, :]
    np.maximum(d2, 1e-12, out=d2)
    kernel = cv2.log(d2)
    kernel *= d2
    kernel *= 0.5  # d2 log d2 = 2 r^2 log r
    return kernel


# Mesh points the measurements of core/aus.py read besides the contours below (cheeks, nose wings,
# nose base and tip, chin, irises): the warp must carry them exactly.
AU_POINTS = (205, 425, 48, 278, 2, 4, 152, 468, 473)


def control_indices(shape: np.ndarray, extra: int = 48) -> np.ndarray:
    """A subset of the 478 mesh points that pins the warp: the contours of lips, eyes, brows, nose and
    face oval, the AU points, and `extra` more spread over cheeks and forehead (farthest-point picks
    on `shape`, a mean mesh [478, 2+]). The spline's cost grows with the cube of its points."""
    from mediapipe.python.solutions import face_mesh_connections as mesh

    chosen = set(AU_POINTS)
    for part in ("LIPS", "LEFT_EYE", "RIGHT_EYE", "LEFT_EYEBROW", "RIGHT_EYEBROW", "FACE_OVAL", "NOSE"):
        chosen |= {i for edge in getattr(mesh, f"FACEMESH_{part}") for i in edge}
    points = np.asarray(shape, np.float64)[:, :2]
    picked = sorted(chosen)
    distance = np.min(((points[:, None] - points[picked][None]) ** 2).sum(axis=2), axis=1)
    for _ in range(extra):
        i = int(distance.argmax())
        picked.append(i)
        distance = np.minimum(distance, ((points - points[i]) ** 2).sum(axis=1))
    return np.array(sorted(picked))


@functools.cache
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def one_blas_thread():
    """A context with OpenBLAS on one thread: its threads spin against torch's and ONNX Runtime's on a
    2-core machine (the spline's 239-point solve took 15-43 ms with two threads under load, 0.7 ms with one)."""
    return _blas_controller().limit(limits=1, user_api="blas")


def thin_plate(centres: np.ndarray, values: np.ndarray, smoothing: float = TPS_SMOOTHING):
    """A thin-plate spline through values [K, D] at centres [K, 2]; returns a function of points [M, 2]."""
    k = len(centres)
    poly = np.hstack([np.ones((k, 1)), centres])
    system = np.zeros((k + 3, k + 3))
    system[:k, :k] = _tps_kernel(centres, centres) + smoothing * np.eye(k)
    system[:k, k:] = poly
    system[k:, :k] = poly.T
    rhs = np.vstack([values, np.zeros((3, values.shape[1]))])
    coef = np.linalg.lstsq(system, rhs, rcond=None)[0] if k < 4 else np.linalg.solve(system, rhs)
    weights, affine = coef[:k], coef[k:]

    c32, w32 = centres.astype(np.float32), weights.astype(np.float32)

    def evaluate(points: np.ndarray) -> np.ndarray:
        # float32 is plenty on the unit square; the (points x centres) kernel is made and used in cache-sized blocks:
        # whole, its temporaries were fresh multi-MB pages each call (7 ms of a 4,225 x 250 grid; 2.3 in blocks)
        p32 = points.astype(np.float32)
        out = np.empty((len(points), values.shape[1]), np.float32)
        for i in range(0, len(points), TPS_BLOCK):
            out[i:i + TPS_BLOCK] = _tps_kernel(p32[i:i + TPS_BLOCK], c32) @ w32
        return out + np.hstack([np.ones((len(points), 1)), points]) @ affine

    return evaluate


def _border_anchors(h: int, w: int, per_side: int = 8) -> np.ndarray:
    t = np.linspace(0.0, 1.0, per_side, endpoint=False)
    xs, ys = (w - 1) * t, (h - 1) * t
    return np.concatenate([np.stack([xs, np.zeros_like(xs)], 1), np.stack([np.full_like(ys, w - 1), ys], 1),
                           np.stack([(w - 1) - xs, np.full_like(xs, h - 1)], 1), np.stack([np.zeros_like(ys), (h - 1) - ys], 1)])


def backward_field(src: np.ndarray, dst: np.ndarray, region: Region, mask: np.ndarray,
                   controls: np.ndarray | None = None, min_cell_px: float = MIN_CELL_PX) -> np.ndarray:
    """float32 [h, w, 2]: for each output pixel of the region, the displacement to the pixel it reads.

    The spline is fitted at the moved points (dst) with value src - dst, so pixel dst reads src.
    Coordinates are scaled to the unit square first (the kernel's conditioning does not depend on the
    face's size in pixels). min_cell_px: the coarse grid's finest spacing (an image upscaled k times for
    a finer warp needs no finer field: k times MIN_CELL_PX).
    """
    import cv2

    if controls is not None:
        src, dst = src[controls], dst[controls]
    h, w = region.shape
    unit = float(max(h, w))
    anchors = _border_anchors(h, w)
    centres = np.vstack([dst[:, :2] - region.offset, anchors]) / unit
    values = np.vstack([src[:, :2] - dst[:, :2], np.zeros((len(anchors), 2))]) / unit
    cells = min(GRID_CELLS, unit / min_cell_px)
    gh, gw = max(2, round(cells * h / unit) + 1), max(2, round(cells * w / unit) + 1)
    gy, gx = np.meshgrid(np.linspace(0, h - 1, gh), np.linspace(0, w - 1, gw), indexing="ij")
    with one_blas_thread():
        spline = thin_plate(centres, values)
        coarse = spline(np.stack([gx.ravel(), gy.ravel()], 1) / unit).reshape(gh, gw, 2) * unit
    # Upsample by sampling the coarse grid at each pixel's exact grid coordinate (nodes on the first
    # and last pixels), rather than cv2.resize, whose pixel-centre convention would shift the field.
    py = np.arange(h, dtype=np.float32) * ((gh - 1) / max(h - 1, 1))
    px = np.arange(w, dtype=np.float32) * ((gw - 1) / max(w - 1, 1))
    map_x, map_y = np.broadcast_to(px[None, :], (h, w)), np.broadcast_to(py[:, None], (h, w))
    field = cv2.remap(coarse.astype(np.float32), np.ascontiguousarray(map_x), np.ascontiguousarray(map_y),
                      interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return field * mask[:, :, None]


def warp_region(image: np.ndarray, region: Region, field: np.ndarray) -> np.ndarray:
    """The region's pixels, each read from its position plus field (bilinear, edges replicated)."""
    import cv2

    h, w = region.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    map_x = xs + field[:, :, 0] + region.x0
    map_y = ys + field[:, :, 1] + region.y0
    return cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def box_window(region: Region, box, factor: float = 1.25, ramp: float = 0.1) -> np.ndarray:
    """float32 [h, w]: 1 well inside the box grown `factor` times about its centre, falling linearly to
    0 at its edge over `ramp` of the box size; so an edit never reaches beyond that grown box."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hw, hh = (x1 - x0) * factor / 2, (y1 - y0) * factor / 2
    xs = np.arange(region.x0, region.x1, dtype=np.float32) + 0.5
    ys = np.arange(region.y0, region.y1, dtype=np.float32) + 0.5
    wx = np.clip((hw - np.abs(xs - cx)) / max(ramp * (x1 - x0), 1.0), 0.0, 1.0)
    wy = np.clip((hh - np.abs(ys - cy)) / max(ramp * (y1 - y0), 1.0), 0.0, 1.0)
    return np.outer(wy, wx).astype(np.float32)


def warp_face(image: np.ndarray, points: np.ndarray, moved: np.ndarray, controls: np.ndarray,
              window=None, min_cell_px: float = MIN_CELL_PX):
    """The image's face moved from mesh `points` to `moved` (pixels): (region, its warped pixels, the soft mask
    the warp was confined to), or None when the region is under 8 px a side. `window(region)`, if given, is
    multiplied into the mask (the photo edit's face-box limit)."""
    region = face_region([points, moved], image.shape, REGION_MARGIN)
    if min(region.shape) < 8:
        return None
    mask = np.maximum(soft_face_mask(points, region, MASK_GROW, MASK_BLUR),
                      soft_face_mask(moved, region, MASK_GROW, MASK_BLUR))
    if window is not None:
        mask = mask * window(region)
    field = backward_field(points, moved, region, mask, controls, min_cell_px)
    return region, warp_region(image, region, field), mask

