"""Facial action units (AUs) measured from the 478-point MediaPipe face mesh.

    python -m core.aus annotate  --data ../shared/data/fer2013plus --out ../runs/au_cache
    python -m core.aus calibrate --data ../shared/data/fer2013plus --cache ../runs/au_cache
    python -m core.aus validate  --data ../shared/data/fer2013plus --cache ../runs/au_cache --json

Each AU is a geometric measurement on the mesh after removing head pose and face size: the mesh
is rotated, scaled and shifted (3-D similarity on points that move little with expression) onto
a frontal mean face in 48-px FER framing. A raw measurement r becomes an intensity in [0, 1] as
(r - neutral median) / (95th percentile over all train faces - neutral median), clipped; both
numbers are calibrated on FER2013 train faces and kept in weights/au_calibration.json.

What each AU measures (subject's left/right averaged unless stated):
    AU01 inner brow raiser    height of the inner brow end above the inner eye corner
    AU02 outer brow raiser    height of the outer brow end above the outer eye corner
    AU04 brow lowerer         inner brow end lowered towards the inner eye corner (minus AU01's height)
    AU05 upper lid raiser     height of the upper eyelid above the iris centre
    AU06 cheek raiser         cheek pushed up towards the lower eyelid: minus (cheek - lower lid distance)
    AU07 lid tightener        lower eyelid raised towards the pupil: minus (lower lid - iris centre)
    AU09 nose wrinkler        nose wings pulled up: their height above the nose tip
    AU10 upper lip raiser     upper lip raised towards the nose: minus (nose base - upper lip)
    AU12 lip corner puller    lip corners above the centre of the mouth
    AU14 dimpler              one-sided (unilateral) corner pull, as in contempt: height difference of the corners
    AU15 lip corner depressor lip corners pulled down: their depth below the top of the upper lip
    AU17 chin raiser          chin pushed up towards the lower lip: minus (lower lip - chin distance)
    AU20 lip stretcher        mouth width
    AU23 lip tightener        lips narrowed: minus (upper + lower red-lip height)
    AU25 lips part            gap between the inner edges of the lips
    AU26 jaw drop             distance from the nose base to the chin
    AU45 blink                eyelids closing: minus (upper-lower eyelid opening)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from core.faces import ALIGN_LANDMARKS, NUM_LANDMARKS, fer_crop_landmarks
from core.labels import AUS, EXPRESSIONS, PROTOTYPE_AUS

CALIBRATION_FILE = Path(__file__).resolve().parent.parent / "weights" / "au_calibration.json"

# Mesh indices, subject's right side first (image left), then left side.
EYE_OUTER, EYE_INNER = (33, 263), (133, 362)
UPPER_LID, LOWER_LID = (159, 386), (145, 374)
IRIS = (468, 473)
BROW_INNER, BROW_OUTER = (55, 285), (70, 300)
CHEEK, NOSE_WING = (205, 425), (48, 278)
MOUTH_CORNER = (61, 291)
LIP_TOP, LIP_UPPER_INNER, LIP_LOWER_INNER, LIP_BOTTOM = 0, 13, 14, 17
NOSE_BASE, NOSE_TIP, CHIN = 2, 4, 152


# Pairs measured on the same movement in opposite directions (AU04 is the inner brow lowered, AU01
# raised): a face can show one of each pair, so conditions must not ask for both.
MEASURED_ANTAGONISTS = (("AU01", "AU04"),)


def consistent_aus(aus):
    """AU vectors [N, len(AUS)] (numpy or torch) with the weaker AU of each measured antagonist pair zeroed."""
    out = aus.clone() if hasattr(aus, "clone") else np.array(aus, copy=True)
    for a, b in MEASURED_ANTAGONISTS:
        i, j = AUS.index(a), AUS.index(b)
        a_wins = out[:, i] >= out[:, j]
        out[:, j] = out[:, j] * ~a_wins if hasattr(out, "clone") else np.where(a_wins, 0.0, out[:, j])
        out[:, i] = out[:, i] * a_wins if hasattr(out, "clone") else np.where(a_wins, out[:, i], 0.0)
    return out


# ---------------------------------------------------------------- pose normalisation

def similarity_3d(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Scale, rotation (3x3) and shift with dst ~ scale * R @ src + shift (Umeyama 1991)."""
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - src_mean, dst - dst_mean
    u, sigma, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rotation = u @ np.diag(sign) @ vt
    scale = (sigma * sign).sum() / max(1e-12, (s**2).sum() / len(src))
    return scale, rotation, dst_mean - scale * rotation @ src_mean


def frontalize(landmarks: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Landmarks [478, 3] moved onto the frontal template's pose and size."""
    rigid = landmarks[list(ALIGN_LANDMARKS)].astype(np.float64)
    scale, rotation, shift = similarity_3d(rigid, template)
    return landmarks.astype(np.float64) @ (scale * rotation).T + shift


# ---------------------------------------------------------------- raw measurements

def raw_measurements(frontal: np.ndarray) -> np.ndarray:
    """One raw number per AU (in AUS order) from frontalised landmarks [478, 3]; y points down."""
    x, y = frontal[:, 0], frontal[:, 1]

    def both(values) -> float:
        return float(np.mean(values))

    inner_brow = both([y[e] - y[b] for e, b in zip(EYE_INNER, BROW_INNER)])
    outer_brow = both([y[e] - y[b] for e, b in zip(EYE_OUTER, BROW_OUTER)])
    eye_open = both([y[lo] - y[up] for up, lo in zip(UPPER_LID, LOWER_LID)])
    cheek_to_lid = both([y[c] - y[lo] for c, lo in zip(CHEEK, LOWER_LID)])
    lid_to_iris = both([y[lo] - y[i] for lo, i in zip(LOWER_LID, IRIS)])
    upper_lid_above_iris = both([y[i] - y[up] for up, i in zip(UPPER_LID, IRIS)])
    wing_above_tip = both([y[NOSE_TIP] - y[w] for w in NOSE_WING])
    lip_centre_y = (y[LIP_UPPER_INNER] + y[LIP_LOWER_INNER]) / 2
    corner_lift = both([lip_centre_y - y[c] for c in MOUTH_CORNER])
    corner_drop = both([y[c] - y[LIP_TOP] for c in MOUTH_CORNER])
    corner_asymmetry = abs(y[MOUTH_CORNER[0]] - y[MOUTH_CORNER[1]])
    lip_height = (y[LIP_UPPER_INNER] - y[LIP_TOP]) + (y[LIP_BOTTOM] - y[LIP_LOWER_INNER])
    values = {
        "AU01": inner_brow,
        "AU02": outer_brow,
        "AU04": -inner_brow,
        "AU05": upper_lid_above_iris,
        "AU06": -cheek_to_lid,
        "AU07": -lid_to_iris,
        "AU09": wing_above_tip,
        "AU10": -(y[LIP_TOP] - y[NOSE_BASE]),
        "AU12": corner_lift,
        "AU14": corner_asymmetry,
        "AU15": corner_drop,
        "AU17": -(y[CHIN] - y[LIP_BOTTOM]),
        "AU20": x[MOUTH_CORNER[1]] - x[MOUTH_CORNER[0]],
        "AU23": -lip_height,
        "AU25": y[LIP_LOWER_INNER] - y[LIP_UPPER_INNER],
        "AU26": y[CHIN] - y[NOSE_BASE],
        "AU45": -eye_open,
    }
    return np.array([values[name] for name in AUS], np.float64)


# ---------------------------------------------------------------- calibrated intensities

@lru_cache(maxsize=4)
def load_calibration(path: str | None = None) -> dict:
    file = Path(path) if path else CALIBRATION_FILE
    with open(file) as f:
        calibration = json.load(f)
    calibration["template"] = np.asarray(calibration["template"], np.float64)
    calibration["zero"] = np.array([calibration["aus"][a]["neutral_median"] for a in AUS])
    calibration["one"] = np.array([calibration["aus"][a]["p95"] for a in AUS])
    return calibration


def intensities_from_raw(raw: np.ndarray, calibration: dict) -> np.ndarray:
    span = np.where(np.abs(calibration["one"] - calibration["zero"]) > 1e-6,
                    calibration["one"] - calibration["zero"], 1e-6)
    return np.clip((raw - calibration["zero"]) / span, 0.0, 1.0)


def measure_aus(landmarks: np.ndarray, calibration: dict | None = None) -> np.ndarray:
    """AU intensities in [0, 1] (AUS order) for landmarks [478, 3] in any image's pixels; NaN if missing."""
    calibration = calibration or load_calibration()
    landmarks = np.asarray(landmarks, np.float64)
    if landmarks.shape != (NUM_LANDMARKS, 3) or not np.isfinite(landmarks).all():
        return np.full(len(AUS), np.nan)
    return intensities_from_raw(raw_measurements(frontalize(landmarks, calibration["template"])), calibration)


def measure_aus_landmarks(landmarks: np.ndarray, calibration: dict | None = None) -> np.ndarray:
    """measure_aus over a batch [N, 478, 3] -> [N, len(AUS)], NaN rows where landmarks are missing."""
    calibration = calibration or load_calibration()
    return np.stack([measure_aus(points, calibration) for points in landmarks]) if len(landmarks) else \
        np.zeros((0, len(AUS)))


def measure_aus_crops(crops) -> np.ndarray:
    """AU intensities [N, len(AUS)] for FER-framed uint8 grey crops [N, H, W]; NaN rows where no mesh is found."""
    from core.errors import InputError

    crops = np.asarray(crops)
    if crops.ndim != 3 or crops.shape[1] < 8 or crops.shape[2] < 8:
        raise InputError(f"crops must be a uint8 array [N, H, W]; got shape {crops.shape}")
    return measure_aus_landmarks(fer_crop_landmarks(crops.astype(np.uint8)))


# ---------------------------------------------------------------- annotate / calibrate / validate

def annotate(data: str, out: str, splits=("train", "valid", "test"), chunk: int = 2000) -> None:
    """Landmarks for every image of every split, cached as OUT/{split}.npz (resumable by chunk)."""
    from core.data import load_split

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


def _cached(cache: str, split: str) -> np.ndarray:
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
    from core.data import load_split
    from core.faces import procrustes_template

    train = load_split(data, "train")
    points = _cached(cache, "train")
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


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    scores = np.concatenate([positive, negative])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks for ties
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def validate(data: str, cache: str, split: str = "test") -> dict:
    """Per AU: ROC-AUC separating faces of classes whose prototype has it from neutral faces."""
    from core.data import load_split

    faces = load_split(data, split)
    aus = measure_aus_landmarks(_cached(cache, split))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.aus")
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("annotate", help="cache landmarks of every image of a data set")
    a.add_argument("--data", required=True)
    a.add_argument("--out", required=True)
    c = sub.add_parser("calibrate", help="write weights/au_calibration.json from the cache")
    c.add_argument("--data", required=True)
    c.add_argument("--cache", required=True)
    v = sub.add_parser("validate", help="ROC-AUC of each AU against the FACS prototypes")
    v.add_argument("--data", required=True)
    v.add_argument("--cache", required=True)
    v.add_argument("--split", default="test")
    v.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "annotate":
        annotate(args.data, args.out)
    elif args.command == "calibrate":
        result = calibrate(args.data, args.cache)
        print(json.dumps({k: v for k, v in result.items() if k != "template"}, indent=1))
    else:
        report = validate(args.data, args.cache, args.split)
        if args.json:
            sys.stdout.write(json.dumps(report) + "\n")
        else:
            print("| AU | movement | prototype classes | ROC-AUC vs neutral |\n|---|---|---|---|")
            from core.labels import AU_NAMES

            for au, row in report["aus"].items():
                auc = "—" if row["roc_auc"] is None else f"{row['roc_auc']:.3f}"
                print(f"| {au} | {AU_NAMES[au]} | {', '.join(row['classes']) or '—'} | {auc} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
