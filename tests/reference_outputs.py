"""Outputs of the shipped recognizer and generator on a fixed batch.

tests/data/reference_outputs.npz was written by this computation at commit 1ce73f5, before core/ was
re-laid out by concept; test_reference_outputs.py recomputes it with today's code and compares.
Regenerate only when a model or its behaviour is meant to change:

    .venv/bin/python -m tests.reference_outputs tests/data/reference_outputs.npz --data ../shared/data/fer2013plus
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

PHOTO = "grace_hopper.jpg"


def compute(data_dir: str | Path) -> dict[str, np.ndarray]:
    import matplotlib

    from core import Recognizer, Synthesizer
    from core.training.data import load_split

    photo = str(Path(matplotlib.get_data_path()) / "sample_data" / PHOTO)
    crops = load_split(data_dir, "test").images[:32]
    # The torch network with its mirror pass, as at 1ce73f5 (ONNX Runtime's parity: tests/test_onnx_runtime.py).
    r = Recognizer.load(runtime="torch")
    p8, p7 = r.predict_crops_with_fer2013(crops)
    faces = r.predict(photo, mirror=True)
    s = Synthesizer.load()
    return {
        "crops": crops, "rec_probs": r.predict_crops(crops), "rec_probs7": p7,
        "photo_probs": np.array([list(f.probs.values()) for f in faces]),
        "photo_box": np.array([f.box for f in faces]),
        "photo_aus": np.array([list(f.aus.values()) for f in faces]),
        "photo_crop": np.stack([f.crop for f in faces]),
        "gen_happy": np.stack(s.generate(expression={"happiness": 1.0}, seed=0, n=4)),
        "gen_mix": np.stack(s.generate(expression={"surprise": 0.6, "fear": 0.4}, aus={"AU12": 0.8, "AU14": 0.9},
                                       seed=7, n=3, intensity=0.7, warp_aus=False)),  # G's own drawing
        "gen_guided": np.stack(s.generate(expression={"anger": 1.0}, seed=3, n=2, guidance=2.0)),
        "edit": s.edit_crop(photo, expression={"surprise": 1.0}),  # the 48-px redraw (edit() before the photo edit)
        "morph": np.stack(s.morph(expression={"sadness": 1.0}, seed=5, steps=4)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reference_outputs")
    parser.add_argument("out")
    parser.add_argument("--data", required=True)
    args = parser.parse_args(argv)
    np.savez_compressed(args.out, **compute(args.data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
