"""A contact sheet of photo edits, to look at what the edit figures do not measure.

    python -m core.evaluate_synth --data ../shared/data/fer2013plus --only edit --edit-parts sheet \
        --edit-sheet docs/images/edit_sheet.jpg

grace_hopper.jpg (a real colour portrait that ships with matplotlib) edited into each of the 7 classes at
full intensity with appearance 1 and no guidance (the default edit until 2026-12-08, when guidance 10 became
the default; the picture in docs/ was made so), beside a row of geometry only (appearance 0): the face cut from each edited photo, side by side.
"""

from __future__ import annotations

import numpy as np

from core.labels import EXPRESSIONS

FACE_SIDE = 200  # px per face on the sheet
DEFAULT_PATH = "edit_sheet.png"


def face_rows(editor, photo: np.ndarray, appearances=(0.0, 1.0)) -> np.ndarray:
    """uint8 [rows * FACE_SIDE, 8 * FACE_SIDE, 3]: per appearance strength, the photo and its 7 class edits."""
    import cv2

    rows = []
    for strength in appearances:
        results = [editor.edit(photo, expression=name, appearance=strength, guidance=0.0) for name in EXPRESSIONS[1:]]
        x0, y0, x1, y1 = results[0].faces[0].box
        cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 0.75 * max(x1 - x0, y1 - y0)
        top, left = int(max(0, cy - half)), int(max(0, cx - half))
        cut = [image[top : int(cy + half), left : int(cx + half)] for image in [photo] + [r.image for r in results]]
        rows.append(np.concatenate([cv2.resize(face, (FACE_SIDE, FACE_SIDE), interpolation=cv2.INTER_AREA)
                                    for face in cut], axis=1))
    return np.concatenate(rows, axis=0)


def write_sheet(editor, path=None) -> dict:
    from pathlib import Path

    from PIL import Image

    from core.evaluation.edit import sample_photo

    path = path or DEFAULT_PATH
    sheet = face_rows(editor, sample_photo(640, 480))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(path, optimize=True, quality=90)  # quality: JPEG only
    return {"path": str(path), "columns": ["photo", *EXPRESSIONS[1:]], "rows": ["appearance 0", "appearance 1"]}
