"""How far an expression edit moves a face (the expression policy of docs/photo_edit.md).

It starts from where the face is: the step shrinks as the recognizer already reads the requested class, and the
mouth opens at most a little beyond the face's own opening.
"""

from __future__ import annotations

import numpy as np

from core.labels import AUS

# An expression the face already shows this confidently (recognizer probability) is not pushed further.
CONFIDENT = 0.9
# An expression opens the mouth (AU25, AU26) at most this far beyond the face's own opening: a warp has no mouth
# interior to show, and opening a closed mouth to the class's 75th percentile stretched the lips into a ring
# (docs/images/edit_sheet.jpg). AU sliders the user sets are not limited.
MAX_MOUTH_OPENING = 0.15
MOUTH_AUS = ("AU25", "AU26")


def progress(source: np.ndarray, request) -> float:
    """How far to move towards the requested expression: the intensity, less the more the face already
    reads as that expression (so a face edited to its own expression hardly changes, in geometry or
    appearance); 0 once the recognizer is CONFIDENT of it."""
    already = float(source @ request.expression)
    return request.intensity * float(np.clip((CONFIDENT - already) / CONFIDENT, 0.0, 1.0))


def limit_mouth_opening(target: np.ndarray, current: np.ndarray, given: dict[str, float]) -> np.ndarray:
    """An expression's AU targets with the mouth opened at most MAX_MOUTH_OPENING beyond the face's own
    (AUs the user set by name are left as set)."""
    out = np.array(target, np.float64, copy=True)
    own = np.nan_to_num(np.asarray(current, np.float64))
    for name in MOUTH_AUS:
        if name not in given:
            k = AUS.index(name)
            out[k] = min(out[k], max(own[k], 0.0) + MAX_MOUTH_OPENING)
    return out


def target_distribution(source: np.ndarray, request) -> np.ndarray:
    """The generator's target expression mix: the face's own reading moved towards the request."""
    if request.expression is None:
        return source
    return source + progress(source, request) * (request.expression - source)
