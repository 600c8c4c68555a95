"""Annotated frames: boxes and top labels drawn on a copy (the UI's pictures and annotated videos)."""

from __future__ import annotations

import numpy as np

# One colour per expression (RGB), used for boxes and bars.
COLOURS = {
    "neutral": (160, 160, 160), "happiness": (255, 196, 0), "surprise": (0, 190, 255), "sadness": (70, 110, 255),
    "anger": (235, 50, 50), "disgust": (60, 180, 75), "fear": (170, 90, 230), "contempt": (240, 120, 30),
}


def annotate(rgb: np.ndarray, faces, mirror: bool = False, max_side: int | None = None,
             numbered: bool = False, ids: list[int] | None = None) -> np.ndarray:
    """Boxes and top labels drawn on a copy of the frame; mirror flips the picture, not the text.

    max_side shrinks big photos first: a browser does not need 40 megapixels back. numbered puts each
    face's number (largest first, as on its card) before its label; ids puts the given ids there instead
    (a video's tracked faces).
    """
    import cv2

    scale = 1.0
    if max_side and max(rgb.shape[:2]) > max_side:
        scale = max_side / max(rgb.shape[:2])
        rgb = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    out = cv2.flip(rgb, 1) if mirror else rgb.copy()  # one copy either way
    h, w = out.shape[:2]
    thickness = max(1, int(round(min(h, w) / 240)))
    font_scale = max(0.4, min(h, w) / 800)
    for i, face in enumerate(faces):
        x0, y0, x1, y1 = (v * scale for v in face.box)
        if mirror:
            x0, x1 = w - x1, w - x0
        colour = COLOURS.get(face.label, (255, 255, 255))
        cv2.rectangle(out, (int(x0), int(y0)), (int(x1), int(y1)), colour, thickness + 1)
        prefix = f"#{ids[i]} " if ids is not None else (f"{i + 1}: " if numbered else "")
        text = prefix + f"{face.label} {face.probs[face.label]:.0%}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        ty = int(y0) - 4 if y0 - th - 8 > 0 else int(y1) + th + 4
        cv2.rectangle(out, (int(x0), ty - th - 4), (int(x0) + tw + 6, ty + base), colour, -1)
        cv2.putText(out, text, (int(x0) + 3, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), thickness,
                    cv2.LINE_AA)
    return out
