"""Evaluation of the generator, as issue "expression synthesis you can steer" measures it.

    python -m core.evaluate_synth --data ../shared/data/fer2013plus --json [--weights generator.safetensors]

controllability  8 classes x 100 seeds at full intensity: share the recognizer reads as requested
au_control       per AU, a 0 -> 1 sweep (7 steps, expression neutral, other AUs fixed) over 20 seeds:
                 Spearman rho between the slider and the AU measured on the generated faces, over the
                 mean curve (rho_mean_curve), over all (seed, step) pairs (rho_pooled) and per seed (median);
                 the mean rise of the measured AU from slider 0 to 1
expression_sliders  each expression slider alone 0 -> 1 (6 steps, 20 seeds): per-seed Spearman rho of the
                 slider against the recognizer's probability of that class
edit             (only when asked) photo edits of FER+ test neutral faces upscaled to 192 px: size and
                 background kept, identity (LBP re-identification), the requested class read, AU sliders on
                 real faces, speed (docs/photo_edit.md)
text             a dozen descriptions read into sliders, 20 faces each: share the recognizer reads as the
                 sentence's expression
identity         distance between identity codes E(G(z, c)) of one seed across the 8 expressions,
                 against the distance between different seeds with the same expression
realism          Frechet distance in the recognizer's penultimate features and a two-sample test: 2,000
                 generated vs 2,000 real test faces, next to 2,000 real train vs 2,000 real test faces and
                 2,000 real train faces of uniform classes (what a perfect generator would score)
"""

from __future__ import annotations

import argparse
import json
import sys

from core.evaluation.synthesis import au_control, controllability, expression_sliders, identity, realism, text_control

MEASURES = ("controllability", "au_control", "expression_sliders", "text", "identity", "realism")
EDIT = "edit"  # issue 14's photo-edit figures: slow (thousands of edits), so only when asked for


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.evaluate_synth", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--weights", default=None, help="generator .safetensors instead of the shipped one")
    parser.add_argument("--only", nargs="+", default=list(MEASURES), choices=[*MEASURES, EDIT])
    parser.add_argument("--edit-faces", type=int, default=300, help="edit: neutral faces edited into each class")
    parser.add_argument("--edit-sweep-faces", type=int, default=50, help="edit: faces per AU slider sweep")
    parser.add_argument("--edit-parts", nargs="+", default=None,
                        choices=("size", "identity", "expression", "aus", "speed", "sheet"),
                        help="edit: only these parts (sheet: only when named, see --edit-sheet)")
    parser.add_argument("--edit-guidance", type=float, default=0.0,
                        help="edit: also measure edits with this semantic guidance (0: not; the default edit, "
                             "measured as 'default', is guided already)")
    parser.add_argument("--edit-guide", default=None,
                        help="edit: recognizer weights guidance climbs instead of the shipped edit_guide "
                             "('recognizer': the shipped recognizer, which also scores the edits)")
    parser.add_argument("--motion", default=None,
                        help="edit, au_control, text: a motion model .safetensors instead of the shipped one")
    parser.add_argument("--edit-sheet", default=None,
                        help="edit, part sheet: where to write the contact sheet of edits (default edit_sheet.png)")
    parser.add_argument("--edit-extra-appearance", type=float, nargs="+", default=(),
                        help="edit: also measure expression edits at these appearance strengths (unguided): "
                             "the readability / realism trade-off")
    parser.add_argument("--edit-critics", type=_positive, default=None,
                        help="edit: two-sample critics per realism figure, the best one's accuracy being the "
                             "figure (default 3; about a minute each)")
    parser.add_argument("--no-au-warp", dest="au_warp", action="store_false",
                        help="au_control and text: G's faces as drawn, without the motion model's AU warp")
    parser.add_argument("--json", action="store_true")
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    from core import get_recognizer
    from core.synthesizer import Synthesizer

    if args.motion:  # the AU warp of new faces (au_control, text) as well as the photo edit
        from core import set_motion_model
        from core.models.motion import MotionModel

        set_motion_model(MotionModel.load(path=args.motion))
    synth = Synthesizer.load(path=args.weights) if args.weights else Synthesizer.load()
    recognizer = get_recognizer()
    report = {"weights": synth.source, "au_warp": args.au_warp}
    if "controllability" in args.only:
        report["controllability"] = controllability(synth, recognizer)
    if "au_control" in args.only:
        report["au_control"] = au_control(synth, warp_aus=args.au_warp)
    if "expression_sliders" in args.only:
        report["expression_sliders"] = expression_sliders(synth, recognizer)
    if "text" in args.only:
        report["text"] = text_control(synth, recognizer, warp_aus=args.au_warp)
    if "identity" in args.only:
        report["identity"] = identity(synth)
    if "realism" in args.only:
        report["realism"] = realism(synth, recognizer, args.data)
    if EDIT in args.only:
        from core.evaluation.edit import evaluate as evaluate_edits

        report[EDIT] = evaluate_edits(args.data, motion=args.motion, faces=args.edit_faces,
                                      sweep_faces=args.edit_sweep_faces, parts=args.edit_parts,
                                      guidance=args.edit_guidance, guide=args.edit_guide,
                                      extra_strengths=args.edit_extra_appearance, sheet=args.edit_sheet,
                                      critics=args.edit_critics)
    sys.stdout.write(json.dumps(report, indent=None if args.json else 1, default=_plain) + "\n")
    return 0


def _plain(value):
    """numpy scalars and arrays in the report, as JSON numbers and lists."""
    import numpy as np

    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


if __name__ == "__main__":
    raise SystemExit(main())
