"""Fitting the motion model (core/models/motion.py) on the AU/landmark cache, then its photo gains."""

from __future__ import annotations

from pathlib import Path

from core.models.motion import MotionConfig, MotionModel, fit


def fit_motion(data: str, au_cache: str, out: str | Path, config: MotionConfig | None = None, command: str = ""
               ) -> dict:
    """Ridge blendshapes on FER+ train's cached meshes (`python -m core.aus annotate`), saved to `out`."""
    from core.face.au_calibration import cached_landmarks
    from core.training.data import load_split

    train = load_split(data, "train")
    model = fit(cached_landmarks(au_cache, "train"), train.ferplus_label, config or MotionConfig())
    model.info["command"] = command
    model.info["data"] = "FER2013 train (FER+ majority labels), landmarks from core.aus annotate"
    model.save(out)
    return {"out": str(out), "bytes": Path(out).stat().st_size, **model.info}


def fit_photo_gain(data: str, motion_path: str | Path, faces: int = 20, rounds: int = 2, command: str = "") -> dict:
    """Per-AU photo gains of a fitted motion model, measured on FER+ train faces edited as photos."""
    from core import get_recognizer, get_synthesizer
    from core.evaluation.edit import calibrate_photo_gain
    from core.labels import AUS
    from core.synthesis.photo_edit import PhotoEditor

    motion = MotionModel.load(path=motion_path)
    editor = PhotoEditor(motion, get_synthesizer(), get_recognizer())
    gains = calibrate_photo_gain(data, editor, faces=faces, rounds=rounds)
    motion.info["photo_gain_command"] = command
    motion.save(motion_path)
    return {"photo_gain": {a: round(float(g), 3) for a, g in zip(AUS, gains)}}
