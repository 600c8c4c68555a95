"""Analyse images, folders and videos: one CSV row per face per frame, a JSON summary on stdout.

    python -m core.analyse VIDEO_OR_IMAGE_OR_FOLDER... --csv OUT.csv
    python -m core.analyse clip.mp4 --csv faces.csv --annotated ../runs/annotated --fps 10

Columns: file, frame, time_s, face_id, x0, y0, x1, y1, the 8 expression probabilities and the 17 AU
intensities (core/labels.py). Video faces keep their id while tracked; the faces of an image are numbered
largest first. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

from core.analysis import analyse_inputs
from core.face.detection import TRACKERS
from core.video import DEFAULT_SAMPLE_FPS, MAX_SAMPLE_FPS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.analyse", description=__doc__.split("\n")[0])
    parser.add_argument("inputs", nargs="+", help="images, videos (mp4, mov, webm, mkv, avi) or folders of them")
    parser.add_argument("--csv", required=True, help="the table to write")
    parser.add_argument("--annotated", default=None, help="a folder for annotated copies of the videos")
    parser.add_argument("--fps", type=float, default=DEFAULT_SAMPLE_FPS,
                        help=f"video frames analysed per second of video (at most {MAX_SAMPLE_FPS:g})")
    parser.add_argument("--tracker", default="mesh-net", choices=TRACKERS,
                        help="videos: mesh-net follows faces with the tracking mesh (fast, its AUs read from the crop); "
                             "mediapipe fits MediaPipe's mesh on every frame (AUs closer to the photo's, slower)")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 < args.fps <= MAX_SAMPLE_FPS:
        parser.error(f"--fps must be in (0, {MAX_SAMPLE_FPS:g}]")
    summary = analyse_inputs(args.inputs, args.csv, args.annotated, args.fps, show_progress=not args.no_progress,
                             tracker=args.tracker)
    sys.stdout.write(json.dumps(summary) + "\n")
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
