"""Does an AU slider move only its own face part? The grey-level change an AU edit makes where it should not.

A lower-face AU (the mouth, core.labels.AU_REGIONS) should leave the forehead as it was, an upper-face one
(brows, eyes) the mouth and chin: the motion model's rows fitted on whole meshes once let a smile move the
forehead. The bands are cut from the unedited face's own mesh (image pixels), within its face box.
"""

from __future__ import annotations

import numpy as np

from core.labels import AU_REGIONS

UPPER_LIP = 0  # mesh point: the upper lip's top midpoint (the brows: the motion model's brow line, FACE_LINES)
FOREHEAD_MARGIN = 0.04  # of the face box's height, kept clear above the brows (the brows' own pixels)


def off_region(au: str) -> str | None:
    """The band an AU's edit should leave unchanged: "forehead" (above the brows) for nose and mouth AUs,
    "chin" (below the upper lip) for brow and eye AUs; None for the cheeks (AU06 reaches both)."""
    region = AU_REGIONS[au]
    if region in ("nose", "mouth"):
        return "forehead"
    if region in ("brows", "eyes"):
        return "chin"
    return None


def band_mask(shape: tuple[int, int], box, landmarks: np.ndarray, band: str) -> np.ndarray:
    """bool [H, W]: the face box's rows above the brows (forehead) or below the upper lip (chin)."""
    h, w = shape
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    mask = np.zeros((h, w), bool)
    if band == "forehead":
        from core.models.motion import FACE_LINES

        limit = int(landmarks[list(FACE_LINES["brow"]), 1].min() - FOREHEAD_MARGIN * (y1 - y0))
        mask[y0 : max(y0, limit), x0:x1] = True
    else:
        limit = int(np.ceil(landmarks[UPPER_LIP, 1]))
        mask[max(y0, limit) : y1, x0:x1] = True
    return mask


def off_region_change(before: np.ndarray, after: np.ndarray, box, landmarks: np.ndarray, au: str) -> float:
    """Mean absolute grey-level change of an edit in the band its AU should not touch (NaN: no such band)."""
    from core.face.images import to_grey

    band = off_region(au)
    if band is None:
        return float("nan")
    mask = band_mask(before.shape[:2], box, landmarks, band)
    if not mask.any():
        return float("nan")
    diff = np.abs(to_grey(before).astype(np.float32) - to_grey(after).astype(np.float32))
    return float(diff[mask].mean())
