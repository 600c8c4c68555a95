"""Facial action units (AUs) measured from the 478-point MediaPipe face mesh.

Calibrated by `python -m core.aus calibrate` (core/face/au_calibration.py).

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

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from core.face.alignment import ALIGN_LANDMARKS, fer_crop_landmarks
from core.face.detection import NUM_LANDMARKS
from core.labels import AUS

CALIBRATION_FILE = Path(__file__).resolve().parents[2] / "weights" / "au_calibration.json"

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

# The left/right pairs raw_measurements averages, as (minuend, subtrahend) mesh indices, gathered so that
# one subtraction measures them all (the same float64 operations as pair by pair, in the same order).
_PAIRS = {
    "inner_brow": (EYE_INNER, BROW_INNER),
    "outer_brow": (EYE_OUTER, BROW_OUTER),
    "eye_open": (LOWER_LID, UPPER_LID),
    "cheek_to_lid": (CHEEK, LOWER_LID),
    "lid_to_iris": (LOWER_LID, IRIS),
    "upper_lid_above_iris": (IRIS, UPPER_LID),
    "wing_above_tip": ((NOSE_TIP, NOSE_TIP), NOSE_WING),
    "corner_drop": (MOUTH_CORNER, (LIP_TOP, LIP_TOP)),
}
_MINUENDS = np.array([i for a, _ in _PAIRS.values() for i in a])
_SUBTRAHENDS = np.array([i for _, b in _PAIRS.values() for i in b])


def raw_measurements(frontal: np.ndarray) -> np.ndarray:
    """One raw number per AU (in AUS order) from frontalised landmarks [478, 3]; y points down."""
    x, y = frontal[:, 0], frontal[:, 1]
    pairs = (y[_MINUENDS] - y[_SUBTRAHENDS]).reshape(-1, 2)
    m = dict(zip(_PAIRS, ((pairs[:, 0] + pairs[:, 1]) / 2).tolist()))  # the mean of each pair
    lip_centre_y = (y[LIP_UPPER_INNER] + y[LIP_LOWER_INNER]) / 2
    corner_lift = float(((lip_centre_y - y[MOUTH_CORNER[0]]) + (lip_centre_y - y[MOUTH_CORNER[1]])) / 2)
    corner_asymmetry = abs(y[MOUTH_CORNER[0]] - y[MOUTH_CORNER[1]])
    lip_height = (y[LIP_UPPER_INNER] - y[LIP_TOP]) + (y[LIP_BOTTOM] - y[LIP_LOWER_INNER])
    values = {
        "AU01": m["inner_brow"],
        "AU02": m["outer_brow"],
        "AU04": -m["inner_brow"],
        "AU05": m["upper_lid_above_iris"],
        "AU06": -m["cheek_to_lid"],
        "AU07": -m["lid_to_iris"],
        "AU09": m["wing_above_tip"],
        "AU10": -(y[LIP_TOP] - y[NOSE_BASE]),
        "AU12": corner_lift,
        "AU14": corner_asymmetry,
        "AU15": m["corner_drop"],
        "AU17": -(y[CHIN] - y[LIP_BOTTOM]),
        "AU20": x[MOUTH_CORNER[1]] - x[MOUTH_CORNER[0]],
        "AU23": -lip_height,
        "AU25": y[LIP_LOWER_INNER] - y[LIP_UPPER_INNER],
        "AU26": y[CHIN] - y[NOSE_BASE],
        "AU45": -m["eye_open"],
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
