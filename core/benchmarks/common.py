"""What every benchmark shares: a real face photo, a webcam-sized frame, timing statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def sample_face_photo() -> Path:
    """grace_hopper.jpg, which matplotlib ships: a real face available offline."""
    import matplotlib

    return Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"


def face_photo(height: int) -> np.ndarray:
    """The real face photo as RGB uint8, resized (bilinear) to `height` pixels tall."""
    from PIL import Image

    photo = Image.open(sample_face_photo()).convert("RGB")
    return np.asarray(photo.resize((round(photo.width * height / photo.height), height), Image.BILINEAR))


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

    photo = Image.fromarray(face_photo(face_height))
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        canvas = Image.new("RGB", (width, height), (90, 90, 90))
        canvas.paste(photo, (int(rng.integers(0, width - photo.width + 1)), int(rng.integers(0, height - face_height + 1))))
        frames.append(np.asarray(canvas).copy())
    return frames


def write_face_video(path, seconds: float = 3.0, fps: float = 30.0, width: int = 640, height: int = 480,
                     faces: int = 1, fourcc: str = "mp4v", speed_px_s: float = 150.0) -> Path:
    """A test video made from the real face photo: `faces` copies gliding across a 640x480 frame, at most
    speed_px_s pixels a second (a person moving in front of a camera)."""
    import cv2

    photo = face_photo(260 if faces == 1 else 240)
    face_height = photo.shape[0]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    count = max(1, round(seconds * fps))
    lane = width // faces
    span = max(0, lane - photo.shape[1])
    period = max(seconds, np.pi * span / speed_px_s)  # the sine's top speed is pi * span / period
    for i in range(count):
        frame = np.full((height, width, 3), 90, np.uint8)
        phase = 2 * np.pi * i / fps / period
        for k in range(faces):
            x = k * lane + int(span * (0.5 + 0.5 * np.sin(phase)))
            y = (height - face_height) // 2 + int(20 * np.cos(phase))
            frame[y : y + face_height, x : x + photo.shape[1]] = photo
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return Path(path)


def stats(values_ms: list[float]) -> dict:
    a = np.asarray(values_ms)
    return {"median": round(float(np.median(a)), 3), "p90": round(float(np.percentile(a, 90)), 3),
            "mean": round(float(a.mean()), 3), "n": int(a.size)}
