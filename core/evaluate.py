"""Recognizer evaluation command (the library is core/evaluation/recognition.py).

    python -m core.evaluate --data ../shared/data/fer2013plus --split test --json
    python -m core.evaluate --data ../shared/data/fer2013plus --split test --json --no-mirror   # as live frames

ferplus: images with a FER+ majority label (8 classes); fer2013: images with an original label
(7 classes); clean_*: without the images whose pixels also occur in train (`dup_in_train`).
"""

from __future__ import annotations

import argparse
import json
import sys

from core.evaluation.recognition import evaluate_predictions
from core.recognizer import RUNTIMES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="data directory (FER+ npz layout, class folders or CSV)")
    parser.add_argument("--split", default="test", choices=("train", "valid", "test"))
    parser.add_argument("--weights", default=None, help="a .safetensors file instead of the shipped weights")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runtime", default="auto", choices=RUNTIMES,
                        help="auto (what the app uses): ONNX Runtime int8 where ranges were measured on these "
                             "weights, else float, else torch")
    parser.add_argument("--no-mirror", action="store_true",
                        help="one pass per face, as on live frames (default: averaged with the mirror image)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    from core.recognizer import Recognizer
    from core.training.data import load_split

    data = load_split(args.data, args.split)
    recognizer = Recognizer.load(path=args.weights, device=args.device, runtime=args.runtime)
    mirror = not args.no_mirror
    ferplus_probs, fer2013_probs = recognizer.predict_crops_with_fer2013(data.images, mirror=mirror)
    report = evaluate_predictions(data, ferplus_probs, fer2013_probs)
    report["split"] = args.split
    report["weights"] = recognizer.source
    report["runtime"], report["mirror"] = recognizer.runtime, mirror
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        p, f = report["ferplus"], report.get("fer2013", {})
        print(f"{args.split}: FER+ accuracy {p['accuracy']:.4f} (clean {p['clean_accuracy']:.4f}), "
              f"macro-F1 {p['macro_f1']:.4f}; FER2013 accuracy {f.get('accuracy', float('nan')):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
