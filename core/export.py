"""Runtime files derived from the shipped recognizer weights (library: core/models/onnx_runtime.py, quantization.py).

    python -m core.export onnx        # write the cached float and int8 graphs now (else first use does)
    python -m core.export calibrate --data ../shared/data/fer2013plus   # re-measure weights/recognizer_int8_ranges.json

Neither graph is kept in git: both are derived from weights/recognizer.safetensors (sha256-checked) and, for
int8, from the activation ranges that `calibrate` measured on FER+ train crops through the float graph.
"""

from __future__ import annotations

import argparse
import json
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.export", description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("onnx", "calibrate"))
    parser.add_argument("--data", default=None, help="calibrate: FER+ data directory (its train split is used)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from core.models.quantization import write_calibration, write_graphs

    if args.what == "calibrate" and not args.data:
        parser.error("calibrate needs --data")
    report = write_calibration(args.data) if args.what == "calibrate" else write_graphs()
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
