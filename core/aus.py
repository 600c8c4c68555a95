"""Action-unit commands (the measurement itself is core/face/aus.py, the cache and calibration
core/face/au_calibration.py; docs/aus.md explains each AU):

    python -m core.aus annotate  --data ../shared/data/fer2013plus --out ../runs/au_cache
    python -m core.aus calibrate --data ../shared/data/fer2013plus --cache ../runs/au_cache
    python -m core.aus validate  --data ../shared/data/fer2013plus --cache ../runs/au_cache --json
"""

from __future__ import annotations

import argparse
import json
import sys

from core.face.au_calibration import annotate, calibrate, validate


def build_parser() -> argparse.ArgumentParser:
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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
