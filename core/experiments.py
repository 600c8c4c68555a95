"""The joint-learning experiments of issue "joint synthesis-recognition learning", one command each.

    python -m core.experiments few-labels --data ../shared/data/fer2013plus --out weights/results/joint.json
    python -m core.experiments synthetic-only --data ../shared/data/fer2013plus --out weights/results/joint.json
    python -m core.experiments table weights/results/joint.json      # the docs' markdown tables

few-labels      (Yan et al.) a recognizer trained from scratch on 5/10/25/100% of FER+ train labels:
                recognizer only; + synthetic faces of a frozen G; joint (G updated by R's loss);
                joint + intra-class loss; joint + intra-class loss with RDBP
synthetic-only  (SynFER) a recognizer trained only on generated faces, 1x and 5x the train set
                size, labelled by the request or relabelled by a pseudo-labeller trained on real
                faces (the shipped recognizer), next to the same recognizer trained on real faces

Each cell is trained with every seed and reported as mean and std of FER+ test accuracy and
macro-F1; results are merged into the JSON file, so the two commands can run separately.
The recognizer is a small version of the shipped one, with a short schedule (CPU budget); the
settings used are written into the JSON next to the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from core.training.joint_experiments import (
    FEW_LABEL_METHODS,
    SMALL_RECOGNIZER,
    base_config,
    few_labels,
    markdown_tables,
    merge_into,
    synthetic_cells,
    synthetic_only,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.experiments", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="experiment", required=True)
    for name in ("few-labels", "synthetic-only"):
        p = sub.add_parser(name)
        p.add_argument("--data", required=True)
        p.add_argument("--out", default="weights/results/joint.json")
        p.add_argument("--generator", default=None, help="generator .safetensors (default: the shipped one)")
        p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
        p.add_argument("--steps", type=int, default=1500, help="recognizer steps per run (batch 64 real + 32 synthetic)")
    sub.choices["few-labels"].add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.1, 0.25, 1.0])
    sub.choices["few-labels"].add_argument("--methods", nargs="+", default=list(FEW_LABEL_METHODS),
                                           choices=list(FEW_LABEL_METHODS))
    sub.choices["synthetic-only"].add_argument("--multiples", type=int, nargs="+", default=[1, 5])
    sub.choices["synthetic-only"].add_argument("--cells", nargs="+", default=None,
                                               help="only these rows, e.g. real 5x_rectified (default: all)")
    t = sub.add_parser("table", help="print the results file as the docs' markdown tables")
    t.add_argument("results", nargs="?", default="weights/results/joint.json")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.experiment == "synthetic-only" and args.cells:
        unknown = set(args.cells) - set(synthetic_cells(args.multiples))
        if unknown:
            parser.error(f"unknown cells {sorted(unknown)}: choose from {synthetic_cells(args.multiples)}")
    if args.experiment == "table":
        sys.stdout.write(markdown_tables(json.loads(Path(args.results).read_text())))
        return 0

    from core.synthesizer import Synthesizer

    torch.set_num_threads(max(1, torch.get_num_threads()))
    synthesizer = Synthesizer.load(path=args.generator, device="cpu") if args.generator else Synthesizer.load(
        device="cpu")

    def log(record):
        sys.stderr.write(json.dumps(record) + "\n")

    settings = {"recognizer": SMALL_RECOGNIZER.to_dict(), "joint": asdict(base_config(args.steps, 0)),
                "seeds": args.seeds, "generator": synthesizer.source, "command": "python -m core.experiments "
                + " ".join(argv if argv is not None else sys.argv[1:])}
    if args.experiment == "few-labels":
        settings["methods"] = {m: FEW_LABEL_METHODS[m] for m in args.methods}
        few_labels(args.data, synthesizer, args.fractions, args.seeds, args.steps, args.methods, log,
                   on_run=lambda table: merge_into(Path(args.out), "few_labels", table, dict(settings)))
    else:
        from core import get_recognizer

        settings["labeller"] = "shipped recognizer (trained on real FER+ train)"
        synthetic_only(args.data, synthesizer, get_recognizer(), args.multiples, args.seeds, args.steps, log,
                       on_run=lambda table: merge_into(Path(args.out), "synthetic_only", table, dict(settings)),
                       cells=args.cells)
    results = json.loads(Path(args.out).read_text())
    sys.stdout.write(json.dumps(results[args.experiment.replace("-", "_")]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
