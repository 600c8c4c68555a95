"""AU sliders on new faces: the generator draws the face, the motion model carries each slider the rest of the way.

The generator's own AU input moves several AUs too little to see at 48 px (the lip-corner pull and the lips
parting most: docs/synthesis.md, "Sliders with plain meanings, per face"). The photo edit moves a real face's AUs by warping it with the
motion model (core/models/motion.py, core/face/warp.py); a drawn face gets the same treatment: its mesh is
fitted as the AU measure fits it (core.face.alignment.CropMesh), its AUs are measured, and the face is warped
from those AUs to the values the user set. Only the AUs set move; pixels outside the face mask stay G's.
A face whose mesh cannot be fitted is returned as drawn and counted in `missed`.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

log = logging.getLogger(__name__)

# The face is warped at this many times its size and the change shrunk back (area) and added: a 48-px bilinear
# warp softened the moved features, and the lips parted less (AU25 rise 0.46 against 0.61, StyleGen warm start).
WARP_SCALE = 4


class AuWarp:
    """Warps drawn 48-px faces so that the mesh-measured AUs reach the requested ones; thread-safe."""

    def __init__(self, motion=None):
        from core.face.aus import load_calibration
        from core.face.warp import control_indices
        from core.models.motion import MotionModel

        self.motion = motion if motion is not None else MotionModel.load()
        self.calibration = load_calibration()
        self.controls = control_indices(self.motion.base)
        self.missed = 0  # faces returned as drawn (no mesh)
        self._mesh = None
        self._lock = threading.Lock()

    def apply(self, faces: list[np.ndarray], given: dict[str, float]) -> list[np.ndarray]:
        """uint8 grey faces [H, W], each warped so that the AUs in `given` (canonical names, values in [0, 1])
        read as given; the others are held where the face has them."""
        if not given or not faces:
            return list(faces)
        from core.face.alignment import CropMesh

        with self._lock:
            if self._mesh is None:
                self._mesh = CropMesh()
            meshes = self._mesh.landmarks(np.stack(faces))
            out = [self._warp(face, points, given) for face, points in zip(faces, meshes)]
        return out

    def _warp(self, face: np.ndarray, points: np.ndarray, given: dict[str, float]) -> np.ndarray:
        import cv2

        from core.face.aus import measure_aus
        from core.face.warp import MIN_CELL_PX, warp_face

        if not np.isfinite(points).all():
            return self._as_drawn(face, "no mesh on a drawn face")
        current = measure_aus(points, self.calibration)
        # as a slider edit of a photo: with the photo gains (the re-fitted mesh under-reads a warp)
        moved = self.motion.predict(points, current, self.motion.slider_target(current, given), photo_gain=True)
        k = WARP_SCALE
        h, w = face.shape
        big = cv2.resize(face, (w * k, h * k), interpolation=cv2.INTER_CUBIC) if k > 1 else face
        result = warp_face(big.astype(np.float32), points * k, moved * k, self.controls, min_cell_px=MIN_CELL_PX * k)
        if result is None:
            return self._as_drawn(face, "the drawn face's mesh is too small to warp")
        region, warped, _ = result
        change = np.zeros(big.shape, np.float32)
        change[region.y0:region.y1, region.x0:region.x1] = warped - big[region.y0:region.y1, region.x0:region.x1]
        if k > 1:  # the warp's change, shrunk: where nothing moved the face keeps G's pixels exactly
            change = cv2.resize(change, (w, h), interpolation=cv2.INTER_AREA)
        return np.clip(np.round(face + change), 0, 255).astype(np.uint8)

    def _as_drawn(self, face: np.ndarray, why: str) -> np.ndarray:
        self.missed += 1
        log.info("AU sliders: %s; it is returned as drawn", why)
        return face

    def close(self) -> None:
        with self._lock:
            if self._mesh is not None:
                self._mesh.close()
                self._mesh = None
