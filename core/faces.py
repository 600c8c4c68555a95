"""Face-alignment command (the library is core/face/):

    python -m core.faces calibrate --data ../shared/data/fer2013plus   # re-measure FER_TEMPLATE
"""

from __future__ import annotations

import argparse

from core.face.alignment import calibrate_template


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.faces")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("calibrate", help="measure FER_TEMPLATE on FER2013 train crops")
    c.add_argument("--data", required=True)
    c.add_argument("--count", type=int, default=4000)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    calibrate_template(args.data, args.count)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
