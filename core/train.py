"""Training CLI. The same command runs alone or under torchrun (DistributedDataParallel):

    python -m core.train recognizer --data ../shared/data/fer2013plus --out ../runs/recognizer
    python -m core.train recognizer --data ... --out ... --resume
    python -m core.train generator --data ../shared/data/fer2013plus --au-cache ../runs/au_cache --out ../runs/generator
    torchrun --standalone --nproc_per_node 2 -m core.train recognizer --data ... --out ...
    torchrun --standalone --nproc_per_node 2 -m core.train generator --data ... --au-cache ... --out ...
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _recognizer(args: argparse.Namespace) -> int:
    from core.recognizer import RecognizerConfig
    from core.training import RecognizerTrainConfig, train_recognizer

    model = RecognizerConfig(
        widths=tuple(args.widths), depths=tuple(args.depths), embed_dim=args.embed_dim, dropout=args.dropout
    )
    train = RecognizerTrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        class_balance=args.class_balance, fer2013_weight=args.fer2013_weight, augment=args.augment,
        seed=args.seed, checkpoint_minutes=args.checkpoint_minutes, max_steps=args.max_steps,
    )
    best = train_recognizer(args.data, args.out, model, train, resume=args.resume, device=args.device, init=args.init)
    if int(os.environ.get("RANK", "0")) == 0:
        sys.stdout.write(json.dumps({"event": "done", "best": best}) + "\n")
    return 0


def _generator(args: argparse.Namespace) -> int:
    from core.generator import GeneratorConfig
    from core.training import GeneratorTrainConfig, train_generator

    model = GeneratorConfig(z_dim=args.z_dim, g_channels=tuple(args.g_channels), d_channels=tuple(args.d_channels),
                            upsample=args.upsample)
    train = GeneratorTrainConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, rec_weight=args.rec_weight,
        latent_weight=args.latent_weight, expression_weight=args.expression_weight, au_weight=args.au_weight,
        recognizer_weight=args.recognizer_weight, cycle_weight=args.cycle_weight,
        recognizer_warmup=args.recognizer_warmup, au_perturb=args.au_perturb, seed=args.seed,
        checkpoint_minutes=args.checkpoint_minutes, sample_every=args.sample_every,
    )
    result = train_generator(args.data, args.out, args.au_cache, model, train, recognizer_path=args.recognizer,
                             resume=args.resume, device=args.device, init=args.init)
    if int(os.environ.get("RANK", "0")) == 0:
        sys.stdout.write(json.dumps({"event": "done", **result}) + "\n")
    return 0


def _run_arguments(parser: argparse.ArgumentParser, batch_size: int, lr: float) -> None:
    """Arguments every training command shares."""
    parser.add_argument("--data", required=True, help="data directory (FER+ npz, class folders) or FER2013 CSV")
    parser.add_argument("--out", required=True, help="run folder: checkpoints, log.jsonl, exported weights")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors if present")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-minutes", type=float, default=3.0)


def main(argv: list[str] | None = None) -> int:
    if "OMP_NUM_THREADS" not in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        os.environ["OMP_NUM_THREADS"] = "1"  # one thread per rank: more oversubscribes small CPUs
    parser = argparse.ArgumentParser(prog="python -m core.train")
    sub = parser.add_subparsers(dest="model", required=True)
    r = sub.add_parser("recognizer", help="train the expression recognizer")
    _run_arguments(r, batch_size=128, lr=0.05)
    r.add_argument("--epochs", type=int, default=60)
    r.add_argument("--init", default=None, help="start from these recognizer weights (.safetensors) to fine-tune")
    r.add_argument("--warmup-steps", type=int, default=500)
    r.add_argument("--weight-decay", type=float, default=5e-4)
    r.add_argument("--class-balance", type=float, default=0.3)
    r.add_argument("--fer2013-weight", type=float, default=0.5)
    r.add_argument("--augment", type=float, default=1.0)
    r.add_argument("--max-steps", type=int, default=0, help="stop after N steps (smoke runs, tests)")
    r.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128, 256])
    r.add_argument("--depths", type=int, nargs="+", default=[2, 2, 3, 3])
    r.add_argument("--embed-dim", type=int, default=256)
    r.add_argument("--dropout", type=float, default=0.4)
    r.set_defaults(run=_recognizer)

    g = sub.add_parser("generator", help="train the expression generator (FESGAN stage 1)")
    _run_arguments(g, batch_size=32, lr=2e-4)
    g.add_argument("--au-cache", default=None, help="landmark cache of `python -m core.aus annotate` (else measured)")
    g.add_argument("--recognizer", default=None, help="recognizer .safetensors (default: the shipped one)")
    g.add_argument("--steps", type=int, default=30000)
    g.add_argument("--init", default=None, help="continue from exported generator weights (.safetensors)")
    g.add_argument("--rec-weight", type=float, default=10.0)
    g.add_argument("--latent-weight", type=float, default=1.0)
    g.add_argument("--expression-weight", type=float, default=1.0)
    g.add_argument("--au-weight", type=float, default=10.0)
    g.add_argument("--recognizer-weight", type=float, default=0.3)
    g.add_argument("--cycle-weight", type=float, default=5.0)
    g.add_argument("--recognizer-warmup", type=int, default=2000, help="ramp the recognizer loss up over N steps")
    g.add_argument("--au-perturb", type=float, default=0.5,
                   help="share of synthetic conditions whose AUs are partly re-drawn, independent of the expression")
    g.add_argument("--upsample", default="bilinear", choices=("bilinear", "nearest"))
    g.add_argument("--sample-every", type=int, default=1000)
    g.add_argument("--z-dim", type=int, default=64)
    g.add_argument("--g-channels", type=int, nargs="+", default=[192, 96, 48, 24])
    g.add_argument("--d-channels", type=int, nargs="+", default=[32, 64, 128, 256])
    g.set_defaults(run=_generator)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
