"""What every benchmark shares: a real face photo, a webcam-sized frame, timing statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def sample_face_photo() -> Path:
    """grace_hopper.jpg, which matplotlib ships: a real face available offline."""
    import matplotlib

    return Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"


def webcam_frame(width: int = 640, height: int = 480) -> np.ndarray:
    """A 640x480 RGB frame with one real face, as a webcam would send."""
    from PIL import Image

    photo = Image.open(sample_face_photo()).convert("RGB")
    scale = min(width / photo.width, height / photo.height)
    photo = photo.resize((int(photo.width * scale), int(photo.height * scale)), Image.BILINEAR)
    canvas = Image.new("RGB", (width, height), (90, 90, 90))
    canvas.paste(photo, ((width - photo.width) // 2, (height - photo.height) // 2))
    return np.asarray(canvas).copy()


def moving_face_frames(count: int = 16, width: int = 640, height: int = 480, face_height: int = 300,
                       seed: int = 0) -> list[np.ndarray]:
    """640x480 RGB frames with the real face photo at a new random place in each (nothing to track)."""
    from PIL import Image

    photo = Image.open(sample_face_photo()).convert("RGB")
    photo = photo.resize((round(photo.width * face_height / photo.height), face_height), Image.BILINEAR)
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        canvas = Image.new("RGB", (width, height), (90, 90, 90))
        canvas.paste(photo, (int(rng.integers(0, width - photo.width + 1)), int(rng.integers(0, height - face_height + 1))))
        frames.append(np.asarray(canvas).copy())
    return frames


def stats(values_ms: list[float]) -> dict:
    a = np.asarray(values_ms)
    return {"median": round(float(np.median(a)), 3), "p90": round(float(np.percentile(a, 90)), 3),
            "mean": round(float(a.mean()), 3), "n": int(a.size)}
