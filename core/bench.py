"""Benchmarks that print JSON. Timings are wall-clock on this machine, median and p90.

    python -m core.bench live --json    # live_frame_ms (tracked stream), photo_frame_ms (no tracking), photo_pipeline_ms, stage times
    python -m core.bench streams --json  # webcam sessions at 10 frames/s one process serves (p95 <= 100 ms)
    python -m core.bench live-options --json  # the live path's settings timed beside their alternatives
    python -m core.bench photo-mesh --json  # photo mesh from the detection vs re-detecting (landmarks, AUs, time)
    python -m core.bench tracking --json  # the live trackers' landmarks, AUs and readings against the photo mesh
    python -m core.bench synth --json   # generate one face; edit the face of a photo
    python -m core.bench finetune --json  # ingest a 500-image upload; fine-tune on 100 faces
    python -m core.bench load --json    # 8 gradio clients for 60 s (photos, synthesis) + 2 queued fine-tunes
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.benchmarks.finetune import bench_finetune
from core.benchmarks.live import bench_live
from core.benchmarks.live_options import bench_live_options
from core.benchmarks.load import bench_load
from core.benchmarks.photo_mesh import bench_photo_mesh
from core.benchmarks.streams import bench_streams
from core.benchmarks.synth import bench_synth
from core.benchmarks.tracking import bench_tracking


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.bench")
    parser.add_argument("what", choices=("live", "streams", "live-options", "photo-mesh", "tracking", "synth",
                                                  "finetune", "load"))
    parser.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"
                                              / "fer2013plus"))
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--steps", type=int, default=150, help="finetune: joint steps (the tab's default)")
    parser.add_argument("--uploads", type=int, default=500, help="finetune: images in the upload to ingest")
    parser.add_argument("--frozen-stages", type=int, default=None, help="finetune: override the tab's frozen R stages")
    parser.add_argument("--clients", type=int, default=8, help="load: concurrent gradio clients")
    parser.add_argument("--seconds", type=float, default=60.0, help="load: how long the clients keep calling")
    parser.add_argument("--url", default=None, help="load: a running app (default: start python app.py)")
    parser.add_argument("--max-streams", type=int, default=40, help="streams: the most sessions tried")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="streams: handler calls at once (default: the app's stream concurrency limit)")
    parser.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result = {"live": lambda: bench_live(args.frames),
              "streams": lambda: bench_streams(args.max_streams, concurrency=args.concurrency),
              "live-options": lambda: bench_live_options(args.frames // 2),
              "photo-mesh": lambda: bench_photo_mesh(args.data, args.frames + args.frames // 2),
              "tracking": lambda: bench_tracking(args.data),
              "synth": lambda: bench_synth(args.frames // 2),
              "finetune": lambda: bench_finetune(args.data, args.steps, args.uploads, args.frozen_stages),
              "load": lambda: bench_load(args.clients, args.seconds, args.url, args.data)}[args.what]()
    sys.stdout.write(json.dumps(result if args.json else result, indent=None if args.json else 2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
