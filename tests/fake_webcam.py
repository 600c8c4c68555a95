"""A fake webcam for Chromium: a .y4m (YUV4MPEG2, 4:2:0) video made from a real face photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_y4m(path: Path, rgb: np.ndarray, frames: int = 10, fps: int = 10) -> Path:
    height, width = rgb.shape[:2]
    ycbcr = np.asarray(Image.fromarray(rgb).convert("YCbCr"))
    y = ycbcr[:, :, 0]
    # 4:2:0: chroma averaged over 2x2 blocks
    cb = ycbcr[:, :, 1].reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3)).round().astype(np.uint8)
    cr = ycbcr[:, :, 2].reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3)).round().astype(np.uint8)
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n")
            f.write(y.tobytes())
            f.write(cb.tobytes())
            f.write(cr.tobytes())
    return path
