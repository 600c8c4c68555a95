"""A learned motion model: how the 478-point face mesh moves with the 17 action units.

    python -m core.train motion --data ../shared/data/fer2013plus --au-cache ../runs/au_cache \
        --out weights/motion.safetensors

Linear blendshapes fitted by ridge regression on FER+ train (the AU/landmark cache): every face's
mesh, moved onto the frontal template of core/aus.py (pose and size normalised, 48-px FER framing),
is regressed on its own measured AU intensities. Over ~27,000 people the identity differences average
out and each AU's coefficient row is the mean movement that comes with it. Each row is then rescaled
so that moving the template by one unit of an AU changes that AU's own mesh measurement by exactly
its calibrated span (ridge regression on noisy inputs shrinks slopes; the sliders must reach 1).

An edit starts from where the face is: the displacement is predicted for (target - current) AUs,
so a face that already smiles hardly moves when it is asked to smile.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from core.config import SavedConfig
from core.errors import WeightsError
from core.face.alignment import ALIGN_LANDMARKS
from core.face.aus import frontalize, intensities_from_raw, load_calibration, raw_measurements, similarity_3d
from core.face.detection import NUM_LANDMARKS
from core.labels import AU_REGIONS, AUS, EXPRESSIONS

AU14 = AUS.index("AU14")
MOUTH_CORNERS = (61, 291)  # subject's right (image left), left
# Eyelid contours, upper and lower point of each pair facing each other (subject's right eye, then left).
UPPER_LIDS = (246, 161, 160, 159, 158, 157, 173, 466, 388, 387, 386, 385, 384, 398)
LOWER_LIDS = (7, 163, 144, 145, 153, 154, 155, 249, 390, 373, 374, 380, 381, 382)
IRIS_CENTRES = ((468, (159, 145)), (473, (386, 374)))  # each iris centre and its eye's mid lid pair
# Iris points (centre + 4 on its rim) of each eye and the eye's corners: a warp cannot turn an eyeball,
# so the irises move only as their eye does (the mean of its corners), not by the gaze the fit picked up.
IRISES = ((tuple(range(468, 473)), (33, 133)), (tuple(range(473, 478)), (263, 362)))
# Horizontal lines of the frontal mesh that bound each face part (core.labels.AU_REGIONS): brows (mid-brow points),
# eyes (iris centres), nose tip, mouth (inner lip midpoints). Each part spans (top, bottom) as offsets in template
# units (48-px frame) from these lines; None: no bound on that side.
FACE_LINES = {"brow": (105, 334), "eye": (468, 473), "nose": (1,), "mouth": (13, 14)}
REGION_BANDS = {
    "brows": (None, ("eye", 2.0)),  # brows, forehead skin and upper lids
    "eyes": (("brow", -1.0), ("nose", -4.0)),  # lids and the skin around them
    "cheeks": (("eye", -2.0), ("nose", 2.0)),  # lower lids, cheeks, crow's feet
    "nose": (("brow", -1.0), ("mouth", -1.0)),  # the brows' inner ends (AU09 lowers them), nose, upper lip
    "mouth": (("eye", 2.0), None),  # below the eyes: cheeks, lips, chin, jaw
}
KIND = "motion"


@dataclass(frozen=True)
class MotionConfig(SavedConfig):
    ridge: float = 10.0  # ridge penalty, in units of summed squared AU intensity
    calibrate_gain: bool = True  # rescale each AU's row to move its own measurement by its span
    max_gain: float = 3.0  # a row the fit got nearly flat is not blown up beyond this
    # An expression's AUs are moved to this quantile of the class's faces (not its mean, which mixes
    # in the many faces labelled by a weak version of it), and only when the face is not there yet.
    target_quantile: float = 0.75
    # A closing lid stops this far (template units, 48-px frame; the neutral opening is about 2.4) above
    # the lower lid: a warp pushing it further would fold the photo over itself.
    min_lid_gap: float = 0.35
    # Photo gains (core.evaluation.edit.calibrate_photo_gain) stay within [1, this]: the lids need about
    # 4 (the re-fitted mesh follows a narrowing eye only part of the way), the rest far less.
    max_photo_gain: float = 4.0
    # ... chosen so that a 0 -> 1 slider, geometry only, rises by this much in the re-fitted mesh of FER+
    # train faces (the generator's change then adds to most AUs; on test faces AU12 rose less)
    photo_gain_goal: float = 0.45
    photo_gain_appearance: float = 0.0  # the generator's change in the calibration edits (0: geometry only)
    # Each AU's row moves only its face part (REGION_BANDS), fading out over this many template units. The fit alone
    # (to 2026-12-02) let a smile move the forehead by 0.75 units on average (a jaw drop by 1.4: about 4-8 px of
    # a 300-px face), movement the frontalisation on rigid points that do move picks up, not the AU
    locality_width: float = 1.0  # 0: no locality (the fitted rows as they are)


def signed_au14(frontal: np.ndarray, au14: float) -> float:
    """AU14 with a sign: positive when the subject's right mouth corner (point 61) is the higher one.

    The mesh measures AU14 as |height difference| of the corners; regressing on the unsigned value
    would average left and right pulls into no movement at all.
    """
    right, left = MOUTH_CORNERS
    return float(au14 if frontal[right, 1] <= frontal[left, 1] else -au14)


class MotionModel:
    """Mesh displacement as a linear function of AU intensities, in the frontal template frame."""

    def __init__(self, base: np.ndarray, basis: np.ndarray, class_aus: np.ndarray, class_upper: np.ndarray,
                 template: np.ndarray, config: MotionConfig, info: dict | None = None, photo_gain=None):
        self.base = np.asarray(base, np.float64)  # [478, 3] mesh at all AUs zero
        self.basis = np.asarray(basis, np.float64)  # [17, 478, 3] movement per unit AU
        self.class_aus = np.asarray(class_aus, np.float64)  # [8, 17] mean AUs of each expression
        self.class_upper = np.asarray(class_upper, np.float64)  # [8, 17] their target_quantile
        self.template = np.asarray(template, np.float64)  # [19, 3] frontal frame of the rigid points
        self.config = config
        self.info = dict(info or {})
        # Per AU, how much further than the mesh says the photo must move (see core.evaluation.edit.calibrate_photo_gain)
        self.photo_gain = np.ones(len(AUS)) if photo_gain is None else np.asarray(photo_gain, np.float64)

    # -- targets
    def target_aus(self, current: np.ndarray, expression: np.ndarray, intensity: float = 1.0,
                   given: dict[str, float] | None = None) -> np.ndarray:
        """AU intensities to move to, from the face's own, then the sliders the user set.

        Only movement towards the expression counts. An AU the expression raises (its class mean is
        above neutral's) is raised to the class's upper quantile, never lowered: a broad smile asked
        to be happy stays broad. Any other AU is lowered to that quantile if it is above it, never
        raised: a calm face asked to be neutral hardly moves. Intensity scales the movement.
        """
        current = np.nan_to_num(np.asarray(current, np.float64))
        weights = np.asarray(expression, np.float64)
        upper = weights @ self.class_upper
        raises = weights @ self.class_aus > self.class_aus[EXPRESSIONS.index("neutral")]
        delta = np.where(raises, np.maximum(upper - current, 0.0), np.minimum(upper - current, 0.0))
        target = current + float(intensity) * delta
        for name, value in (given or {}).items():
            target[AUS.index(name)] = value
        return np.clip(target, 0.0, 1.0)

    @staticmethod
    def slider_target(current: np.ndarray, given: dict[str, float]) -> np.ndarray:
        """AU sliders alone: the AUs set move to their values, the others stay where the face has them."""
        target = np.clip(np.nan_to_num(np.asarray(current, np.float64)), 0.0, 1.0)
        for name, value in given.items():
            target[AUS.index(name)] = value
        return target

    # -- geometry
    def frontal_delta(self, delta_aus: np.ndarray) -> np.ndarray:
        """Displacement [478, 3] in the frontal frame for a change of AU intensities [17]."""
        return np.tensordot(np.asarray(delta_aus, np.float64), self.basis, axes=1)

    def predict(self, landmarks: np.ndarray, current: np.ndarray, target: np.ndarray,
                photo_gain: bool = True) -> np.ndarray:
        """The face's landmarks [478, 3] (image pixels) moved from its current AUs to the target AUs.
        photo_gain=False moves them as far as real faces' meshes move (the fitted rows alone)."""
        landmarks = np.asarray(landmarks, np.float64)
        scale, rotation, shift = similarity_3d(landmarks[list(ALIGN_LANDMARKS)], self.template)
        frontal = landmarks @ (scale * rotation).T + shift
        target = np.asarray(target, np.float64)
        delta = (target - self.start(frontal, current, target)) * (self.photo_gain if photo_gain else 1.0)
        # AU14 is one-sided: pull the corner that is already higher (the right one on a level mouth)
        delta[AU14] *= signed_au14(frontal, 1.0)
        moved = self.frontal_delta(delta)
        for iris, corners in IRISES:
            moved[list(iris)] = moved[list(corners)].mean(axis=0)
        moved = keep_lids_apart(frontal + moved, self.config.min_lid_gap, frontal) - frontal
        # frontal = s R p + t, so a frontal displacement d is R^T d / s in the image (rows: d @ R / s)
        return landmarks + moved @ rotation / scale

    def start(self, frontal: np.ndarray, current: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Where each AU's movement starts: the face's measured intensity, except where the face lies
        beyond an end of the calibrated range (eyes opened wider than any neutral face, say) and the
        target is inside it: then from the unclipped value, so the movement reaches the target."""
        current = np.nan_to_num(np.asarray(current, np.float64))
        calibration = load_calibration()
        span = calibration["one"] - calibration["zero"]
        span = np.where(np.abs(span) > 1e-6, span, 1e-6)
        free = np.clip((raw_measurements(frontal) - calibration["zero"]) / span, -1.0, 2.0)
        free[AU14] = current[AU14]  # measured unsigned; its movement is signed separately
        beyond = ((current <= 0) & (free < 0) & (target > 0)) | ((current >= 1) & (free > 1) & (target < 1))
        return np.where(beyond, free, current)

    # -- persistence
    def tensors(self) -> dict[str, torch.Tensor]:
        return {"base": torch.tensor(self.base, dtype=torch.float32),
                "basis": torch.tensor(self.basis, dtype=torch.float32),
                "class_aus": torch.tensor(self.class_aus, dtype=torch.float32),
                "class_upper": torch.tensor(self.class_upper, dtype=torch.float32),
                "template": torch.tensor(self.template, dtype=torch.float32),
                "photo_gain": torch.tensor(self.photo_gain, dtype=torch.float32)}

    def save(self, path) -> None:
        from core.weights import FORMAT_VERSION, save_safetensors

        meta = {"kind": KIND, "version": FORMAT_VERSION, "config": self.config.to_dict(),
                "aus": list(AUS), "expressions": list(EXPRESSIONS), **self.info}
        save_safetensors(path, self.tensors(), meta)

    @classmethod
    def load(cls, path=None, name: str = "motion") -> MotionModel:
        """The shipped motion model (sha256-checked), or the file at `path` (as save() writes it)."""
        from core.checkpoint import config_of, read_checkpoint

        tensors, meta = read_checkpoint(KIND, name, path)  # kind, format version and config checked
        path = path or name
        if meta.get("aus") != list(AUS) or meta.get("expressions") != list(EXPRESSIONS):
            raise WeightsError(f"{path}: motion model fitted for other AUs or expressions")
        expected = {"base": (NUM_LANDMARKS, 3), "basis": (len(AUS), NUM_LANDMARKS, 3),
                    "class_aus": (len(EXPRESSIONS), len(AUS)), "class_upper": (len(EXPRESSIONS), len(AUS)),
                    "template": (len(ALIGN_LANDMARKS), 3)}
        for key, shape in expected.items():
            if key not in tensors or tuple(tensors[key].shape) != shape:
                raise WeightsError(f"{path}: tensor {key!r} missing or not of shape {shape}")
        info = {k: v for k, v in meta.items() if k not in ("kind", "version", "config", "aus", "expressions")}
        gain = tensors["photo_gain"].double().numpy() if "photo_gain" in tensors else None
        if gain is not None and gain.shape != (len(AUS),):
            raise WeightsError(f"{path}: tensor 'photo_gain' is not of shape ({len(AUS)},)")
        config = config_of(MotionConfig, _without_locality_before_it(meta), str(path))
        return cls(*(tensors[k].double().numpy() for k in expected), config, info, photo_gain=gain)


def _without_locality_before_it(meta: dict) -> dict:
    """A file fitted before locality_width existed has rows moving the whole face: its config says 0, not today's default."""
    return {**meta, "config": {"locality_width": 0.0, **meta.get("config", {})}}


def keep_lids_apart(moved: np.ndarray, gap: float, before: np.ndarray) -> np.ndarray:
    """Moved frontal landmarks [478, 3] with each upper eyelid point kept at least `gap` above the lower
    lid point facing it (moved up to there), and each iris centre kept between its eye's lids: a closing
    eye narrows to a slit, and the warp through these points never folds. A face that is already past
    a limit (`before`, its unmoved landmarks) is held where it is, not pushed back."""
    out = np.array(moved, np.float64, copy=True)
    upper, lower = list(UPPER_LIDS), list(LOWER_LIDS)
    least = np.minimum(gap, before[lower, 1] - before[upper, 1])
    out[upper, 1] = np.minimum(out[upper, 1], out[lower, 1] - least)
    for iris, (up, low) in IRIS_CENTRES:
        top = out[up, 1] + min(gap / 2, before[iris, 1] - before[up, 1])
        bottom = max(top, out[low, 1] - min(gap / 2, before[low, 1] - before[iris, 1]))
        out[iris, 1] = np.clip(out[iris, 1], top, bottom)
    return out


# ---------------------------------------------------------------- fitting

def design_matrix(landmarks: np.ndarray, calibration: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frontal meshes [M, 478, 3], AU intensities [M, 17] (AU14 signed) and the rows used, of faces with a mesh."""
    found = np.flatnonzero(np.isfinite(landmarks.reshape(len(landmarks), -1)).all(axis=1))
    template = calibration["template"]
    frontal = np.empty((len(found), NUM_LANDMARKS, 3))
    aus = np.empty((len(found), len(AUS)))
    for row, i in enumerate(found):
        frontal[row] = frontalize(landmarks[i], template)
        aus[row] = intensities_from_raw(raw_measurements(frontal[row]), calibration)
        aus[row, AU14] = signed_au14(frontal[row], aus[row, AU14])
    return frontal, aus, found


def ridge(x: np.ndarray, y: np.ndarray, penalty: float) -> tuple[np.ndarray, np.ndarray]:
    """Intercept [D] and coefficients [K, D] of y ~ b + x W with an L2 penalty on W only."""
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc = x - x_mean
    weights = np.linalg.solve(xc.T @ xc + penalty * np.eye(x.shape[1]), xc.T @ (y - y_mean))
    return y_mean - x_mean @ weights, weights


def calibrate_gains(base: np.ndarray, basis: np.ndarray, calibration: dict, max_gain: float) -> np.ndarray:
    """Per AU, the factor that makes one unit of its row move its own raw measurement by its span."""
    span = calibration["one"] - calibration["zero"]
    at_base = raw_measurements(base)
    gains = np.ones(len(AUS))
    for k in range(len(AUS)):
        effect = raw_measurements(base + basis[k])[k] - at_base[k]
        if abs(effect) > 1e-9 and np.sign(effect) == np.sign(span[k]):
            gains[k] = np.clip(span[k] / effect, 1.0 / max_gain, max_gain)
    return gains


def face_lines(mesh: np.ndarray) -> dict[str, float]:
    """The heights (y) of FACE_LINES on a mesh [478, >=2], in its own coordinates."""
    return {name: float(mesh[list(points), 1].mean()) for name, points in FACE_LINES.items()}


def band_weight(y: np.ndarray, lines: dict[str, float], au: str, width: float) -> np.ndarray:
    """Weight in [0, 1] at heights y of an AU's face part (REGION_BANDS between `lines`), fading over `width`."""
    top, bottom = REGION_BANDS[AU_REGIONS[au]]
    weight = np.ones(np.shape(y))
    if top is not None:
        weight = weight / (1 + np.exp(-(y - lines[top[0]] - top[1]) / width))
    if bottom is not None:
        weight = weight / (1 + np.exp((y - lines[bottom[0]] - bottom[1]) / width))
    return weight


def parts_weight(aus, mesh: np.ndarray, y: np.ndarray, width: float) -> np.ndarray:
    """Weight in [0, 1] at heights y of a frontal image (rows of an aligned crop, say) of the face parts the AUs
    named move, the parts bounded by FACE_LINES of `mesh` in that image's coordinates."""
    lines = face_lines(mesh)
    return np.max([band_weight(y, lines, au, width) for au in aus], axis=0)


def region_masks(base: np.ndarray, width: float) -> np.ndarray:
    """[17, 478] weight in [0, 1] of each AU at each point of the frontal mesh `base`: 1 inside the AU's face part
    (REGION_BANDS, bounded by FACE_LINES of this mesh), fading to 0 outside it over about `width` units."""
    lines = face_lines(base)
    return np.stack([band_weight(base[:, 1], lines, au, width) for au in AUS])


def class_typical_aus(aus: np.ndarray, labels: np.ndarray, quantile: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and `quantile` of the measured AU intensities [8, 17] of each FER+ majority class (AU14 unsigned)."""
    unsigned = np.abs(aus)
    rows = [unsigned[labels == k] if (labels == k).any() else np.zeros((1, len(AUS))) for k in range(len(EXPRESSIONS))]
    return np.stack([r.mean(axis=0) for r in rows]), np.stack([np.quantile(r, quantile, axis=0) for r in rows])


def fit(landmarks: np.ndarray, labels: np.ndarray, config: MotionConfig = MotionConfig(),
        calibration: dict | None = None) -> MotionModel:
    """Fit on cached FER-framed landmarks [N, 478, 3] with FER+ majority labels [N] (-1: none)."""
    calibration = calibration or load_calibration()
    frontal, aus, found = design_matrix(np.asarray(landmarks, np.float64), calibration)
    base, weights = ridge(aus, frontal.reshape(len(frontal), -1), config.ridge)
    base = base.reshape(NUM_LANDMARKS, 3)
    basis = weights.reshape(len(AUS), NUM_LANDMARKS, 3)
    if config.locality_width > 0:
        basis = basis * region_masks(base, config.locality_width)[:, :, None]
    gains = calibrate_gains(base, basis, calibration, config.max_gain) if config.calibrate_gain else np.ones(len(AUS))
    basis = basis * gains[:, None, None]
    class_aus, class_upper = class_typical_aus(aus, np.asarray(labels)[found], config.target_quantile)
    info = {"faces": int(len(found)), "date": time.strftime("%Y-%m-%d"),
            "gains": {a: round(float(g), 4) for a, g in zip(AUS, gains)}}
    return MotionModel(base, basis, class_aus, class_upper, calibration["template"], config, info)
