"""Readers for labelled face data sets: the FER+ npz layout, a folder per class, FER2013's CSV.

Every reader returns a `LabelledFaces` of grey crops already framed like FER2013.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import DatasetError
from core.labels import EXPRESSIONS, FER2013_TO_EXPRESSION, expression_index

SPLITS = ("train", "valid", "test")
# FER2013's CSV names its splits by their challenge role.
FER2013_CSV_USAGE = {"train": "Training", "valid": "PublicTest", "test": "PrivateTest"}


@dataclass
class LabelledFaces:
    images: np.ndarray  # uint8 [N, H, W]
    soft_targets: np.ndarray  # float32 [N, 8], rows sum to 1 (all zero: no FER+ label)
    ferplus_label: np.ndarray  # int64 [N], -1 where there is no majority label
    fer2013_label: np.ndarray  # int64 [N], index into FER2013_LABELS, -1 unknown
    dup_in_train: np.ndarray  # bool [N]
    names: np.ndarray  # str [N]

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray) -> LabelledFaces:
        return LabelledFaces(*(getattr(self, f)[index] for f in self.__dataclass_fields__))


def votes_to_targets(votes: np.ndarray) -> np.ndarray:
    """FER+ votes [N, 10] -> probability targets [N, 8] over EXPRESSIONS.

    Following Barsoum et al., single stray votes are dropped as annotator noise (when another
    class has more); Rows where unknown / not-a-face outvote the expressions are zero (no target).
    """
    v = votes[:, : len(EXPRESSIONS)].astype(np.float32)
    not_expression = votes[:, len(EXPRESSIONS) :].sum(axis=1)
    v[not_expression > v.sum(axis=1)] = 0.0  # mostly "unknown" / "not a face": no target
    cleaned = np.where((v <= 1) & (v.max(axis=1, keepdims=True) > 1), 0.0, v)
    total = cleaned.sum(axis=1, keepdims=True)
    return np.divide(cleaned, total, out=np.zeros_like(cleaned), where=total > 0)


def one_hot(labels: np.ndarray) -> np.ndarray:
    out = np.zeros((len(labels), len(EXPRESSIONS)), np.float32)
    known = labels >= 0
    out[np.flatnonzero(known), labels[known]] = 1.0
    return out


def load_split(data: str | Path, split: str, size: int = 48) -> LabelledFaces:
    """Load one split from DIR, detecting its layout: DIR/{split}.npz, FER2013 CSV, or class folders."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    root = Path(data)
    if root.is_file() and root.suffix.lower() == ".csv":
        return read_fer2013_csv(root, split)
    if not root.is_dir():
        raise DatasetError(f"data path {str(root)!r} is neither a directory nor a FER2013 CSV file")
    if (root / f"{split}.npz").is_file():
        return read_npz(root / f"{split}.npz")
    csvs = sorted(root.glob("*.csv"))
    if csvs:
        return read_fer2013_csv(csvs[0], split)
    if (root / split).is_dir():
        return read_class_folders(root / split, size)
    raise DatasetError(
        f"no {split} data in {str(root)!r}: expected {split}.npz, a FER2013 CSV, or {split}/<class>/ folders"
    )


def read_npz(path: str | Path) -> LabelledFaces:
    """The FER+ npz layout of ../shared/data/fer2013plus (see its README)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            images = z["images"]
            n = len(images)
            votes = z["ferplus_votes"] if "ferplus_votes" in z.files else None
            ferplus = z["ferplus_label"].astype(np.int64) if "ferplus_label" in z.files else -np.ones(n, np.int64)
            fer2013 = z["fer2013_label"].astype(np.int64) if "fer2013_label" in z.files else -np.ones(n, np.int64)
            dup = z["dup_in_train"].astype(bool) if "dup_in_train" in z.files else np.zeros(n, bool)
            names = z["names"] if "names" in z.files else np.array([f"{i:07d}" for i in range(n)])
    except (OSError, KeyError, ValueError) as error:
        raise DatasetError(f"cannot read {str(path)!r} as a FER+ npz file: {error}") from error
    targets = votes_to_targets(votes) if votes is not None else one_hot(ferplus)
    return LabelledFaces(images.astype(np.uint8), targets, ferplus, fer2013, dup, names)


def read_fer2013_csv(path: str | Path, split: str) -> LabelledFaces:
    """Kaggle's fer2013.csv: columns emotion, pixels (2304 space-separated values), Usage."""
    usage = FER2013_CSV_USAGE[split]
    images, labels = [], []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if "Usage" not in (reader.fieldnames or []) and split != "train":
                raise DatasetError(f"{path} has no Usage column, so it holds no {split} split (only train)")
            for row in reader:
                if row.get("Usage", usage) != usage:
                    continue
                values = np.array(row["pixels"].split(), dtype=np.int64)
                if values.size == 0 or values.min() < 0 or values.max() > 255:
                    raise DatasetError(f"{path}: pixel values must be 0-255")
                if not 0 <= int(row["emotion"]) < len(FER2013_TO_EXPRESSION):
                    raise DatasetError(f"{path}: emotion {row['emotion']} is not a FER2013 label (0-6)")
                pixels = values.astype(np.uint8)
                side = int(round(np.sqrt(pixels.size)))
                if side * side != pixels.size:
                    raise DatasetError(f"{path}: a row has {pixels.size} pixels, not a square image")
                images.append(pixels.reshape(side, side))
                labels.append(int(row["emotion"]))
    except (OSError, KeyError, ValueError) as error:
        raise DatasetError(f"cannot read {str(path)!r} as FER2013 CSV: {error}") from error
    if not images:
        raise DatasetError(f"{str(path)!r} has no rows with Usage={usage}")
    fer2013 = np.array(labels, np.int64)
    ferplus = np.array([FER2013_TO_EXPRESSION[k] if k >= 0 else -1 for k in fer2013], np.int64)
    n = len(images)
    return LabelledFaces(
        np.stack(images), one_hot(ferplus), ferplus, fer2013, np.zeros(n, bool),
        np.array([f"{split}{i:07d}" for i in range(n)]),
    )


def read_class_folders(root: str | Path, size: int = 48) -> LabelledFaces:
    """DIR/<class>/*.png with face crops; class folder names may be synonyms (happy, angry, ...)."""
    from PIL import Image

    from core.face.images import IMAGE_SUFFIXES, load_image

    root = Path(root)
    images, labels, names = [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        label = expression_index(folder.name)
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            grey = Image.fromarray(load_image(file)).convert("L").resize((size, size), Image.BILINEAR)
            images.append(np.asarray(grey))
            labels.append(label)
            names.append(f"{folder.name}/{file.name}")
    if not images:
        raise DatasetError(f"no images found in class folders under {str(root)!r}")
    ferplus = np.array(labels, np.int64)
    n = len(images)
    return LabelledFaces(
        np.stack(images), one_hot(ferplus), ferplus, -np.ones(n, np.int64), np.zeros(n, bool), np.array(names)
    )


def load_au_targets(data_dir, split: str, au_cache: str | Path | None, images: np.ndarray) -> np.ndarray:
    """Measured AU intensities [N, len(AUS)] (NaN rows: no mesh) from the annotate cache, else measured now."""
    from core.face.aus import measure_aus_crops, measure_aus_landmarks

    if au_cache is not None and (Path(au_cache) / f"{split}.npz").is_file():
        with np.load(Path(au_cache) / f"{split}.npz") as z:
            landmarks = z["landmarks"].astype(np.float64)
        if len(landmarks) == len(images):
            return measure_aus_landmarks(landmarks)
    return measure_aus_crops(images)


def class_mean_aus(aus: np.ndarray, labels: np.ndarray) -> dict[str, list[float]]:
    """Typical AU vector of each expression (the default AU condition when a user sets none)."""
    out = {}
    for k, name in enumerate(EXPRESSIONS):
        rows = aus[(labels == k) & np.isfinite(aus[:, 0])]
        out[name] = np.round(rows.mean(axis=0), 4).tolist() if len(rows) else [0.0] * aus.shape[1]
    return out


def trainable_index(data: LabelledFaces) -> np.ndarray:
    """Rows with an expression target (votes mostly "unknown" / "not a face" have none)."""
    return np.flatnonzero(data.soft_targets.sum(axis=1) > 0)
