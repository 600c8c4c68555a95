"""The AU/landmark cache of a data set, the AU calibration measured on it, and its validation.

The command is `python -m core.aus annotate|calibrate|validate` (core/aus.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from core.face.alignment import ALIGN_LANDMARKS, fer_crop_landmarks
from core.face.aus import (
    CALIBRATION_FILE,
    frontalize,
    load_calibration,
    measure_aus_landmarks,
    raw_measurements,
    similarity_3d,
)
from core.labels import AUS, EXPRESSIONS, PROTOTYPE_AUS
from core.metrics import roc_auc


def annotate(data: str, out: str, splits=("train", "valid", "test"), chunk: int = 2000) -> None:
    """Landmarks for every image of every split, cached as OUT/{split}.npz (resumable by chunk)."""
    from core.training.data import load_split

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in splits:
        final = out_dir / f"{split}.npz"
        if final.exists():
            continue
        faces = load_split(data, split)
        parts = []
        for start in range(0, len(faces), chunk):
            part = out_dir / f".{split}.{start:06d}.npy"
            if not part.exists():
                t = time.time()
                points = fer_crop_landmarks(faces.images[start : start + chunk])
                np.save(part, points.astype(np.float16))
                print(json.dumps({"split": split, "start": start, "n": len(points),
                                  "found": float(np.isfinite(points[:, 0, 0]).mean()),
                                  "seconds": round(time.time() - t, 1)}), flush=True)
            parts.append(part)
        landmarks = np.concatenate([np.load(p) for p in parts])
        np.savez(final, landmarks=landmarks, names=faces.names)
        for p in parts:
            p.unlink()


def cached_landmarks(cache: str, split: str) -> np.ndarray:
    with np.load(Path(cache) / f"{split}.npz") as z:
        return z["landmarks"].astype(np.float64)


# Position in ALIGN_LANDMARKS of each point's mirror image (eye corners, cheeks and face outline swap
# sides; the nose ridge and forehead points lie on the midline).
ALIGN_MIRROR = (3, 2, 1, 0, 4, 5, 6, 7, 8, 9, 10, 12, 11, 14, 13, 16, 15, 17, 18)


def symmetric_template(template: np.ndarray) -> np.ndarray:
    """The template averaged with its mirror image about its midline.

    A template with a slight roll (FER faces are not upright on average) would tilt every
    frontalised face the same way, so one mouth corner would always sit a little higher: one-sided
    measurements (AU14) would then read that tilt instead of the face, and flip sign on a mirrored face.
    """
    centre = template[[i for i, j in enumerate(ALIGN_MIRROR) if i == j], 0].mean()
    mirrored = template[list(ALIGN_MIRROR)].copy()
    mirrored[:, 0] = 2 * centre - mirrored[:, 0]
    return (template + mirrored) / 2


def calibrate(data: str, cache: str, out: Path = CALIBRATION_FILE) -> dict:
    from core.face.alignment import procrustes_template
    from core.training.data import load_split

    train = load_split(data, "train")
    points = cached_landmarks(cache, "train")
    found = np.isfinite(points[:, 0, 0])
    neutral = found & (train.ferplus_label == EXPRESSIONS.index("neutral"))
    # Frontal template: 3-D Procrustes mean of the rigid points of neutral faces, in FER framing.
    rigid = points[neutral][:, list(ALIGN_LANDMARKS)]
    template = rigid.mean(axis=0)
    for _ in range(5):
        aligned = []
        for p in rigid:
            s, r, t = similarity_3d(p, template)
            aligned.append(p @ (s * r).T + t)
        template = np.mean(aligned, axis=0)
    template_xy = procrustes_template(rigid[:, :, :2])  # keep FER framing for x, y
    template[:, :2] = template_xy
    template = symmetric_template(template)
    raw = np.stack([raw_measurements(frontalize(p, template)) for p in points[found]])
    neutral_raw = raw[neutral[found]]
    calibration = {
        "description": "AU calibration: neutral-face medians and all-face 95th percentiles of raw mesh "
                       "measurements on FER2013 train (FER+ labels); see core/aus.py",
        "command": f"python -m core.aus calibrate --data {data} --cache {cache}",
        "date": time.strftime("%Y-%m-%d"),
        "faces": int(found.sum()), "neutral_faces": int(neutral.sum()),
        "template": np.round(template, 4).tolist(),
        "aus": {name: {"neutral_median": float(np.median(neutral_raw[:, i])),
                       "p95": float(np.percentile(raw[:, i], 95))} for i, name in enumerate(AUS)},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(calibration, indent=1) + "\n")
    load_calibration.cache_clear()
    return calibration


def validate(data: str, cache: str, split: str = "test") -> dict:
    """Per AU: ROC-AUC separating faces of classes whose prototype has it from neutral faces."""
    from core.training.data import load_split

    faces = load_split(data, split)
    aus = measure_aus_landmarks(cached_landmarks(cache, split))
    found = np.isfinite(aus[:, 0])
    labels = faces.ferplus_label
    neutral = found & (labels == EXPRESSIONS.index("neutral"))
    report = {}
    for i, au in enumerate(AUS):
        classes = [name for name, units in PROTOTYPE_AUS.items() if au in units]
        if not classes:
            report[au] = {"classes": [], "roc_auc": None}
            continue
        positive = found & np.isin(labels, [EXPRESSIONS.index(c) for c in classes])
        report[au] = {"classes": classes, "roc_auc": round(roc_auc(aus[positive, i], aus[neutral, i]), 4),
                      "positives": int(positive.sum()), "neutral": int(neutral.sum())}
    return {"split": split, "faces_with_mesh": int(found.sum()), "faces": len(faces), "aus": report}
