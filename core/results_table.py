"""The per-face table of core.analyse and the Video view: one row per face per analysed frame, as CSV."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from core.labels import AUS, EXPRESSIONS

# Probabilities are named after the classes, AU intensities after the AUs (core/labels.py).
COLUMNS = ("file", "frame", "time_s", "face_id", "x0", "y0", "x1", "y1", *EXPRESSIONS, *AUS)


def face_row(file: str, frame: int, time_s: float | None, face_id: int, box, probs: dict[str, float],
             aus: dict[str, float] | None) -> dict:
    """One table row; AUs are empty when the face has no mesh, time when the input is a still image."""
    row = {"file": file, "frame": int(frame), "time_s": "" if time_s is None else round(float(time_s), 3),
           "face_id": int(face_id)}
    row.update({name: round(float(v), 1) for name, v in zip(("x0", "y0", "x1", "y1"), box)})
    row.update({name: round(float(probs[name]), 5) for name in EXPRESSIONS})
    row.update({name: ("" if aus is None or not math.isfinite(aus[name]) else round(float(aus[name]), 4))
                for name in AUS})
    return row


def write_csv(rows, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path
