"""Training CLI. The same command runs alone or under torchrun (DistributedDataParallel):

    python -m core.train recognizer --data ../shared/data/fer2013plus --out ../runs/recognizer
    python -m core.train recognizer --data ... --out ... --resume
    python -m core.train generator --data ../shared/data/fer2013plus --au-cache ../runs/au_cache --out ../runs/generator
    torchrun --standalone --nproc_per_node 2 -m core.train recognizer --data ... --out ...
    torchrun --standalone --nproc_per_node 2 -m core.train generator --data ... --au-cache ... --out ...
    python -m core.train joint --data ../shared/data/fer2013plus --out ../runs/joint --fraction 0.1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path


def _recognizer(args: argparse.Namespace) -> int:
    from core.models.recognizer import RecognizerConfig
    from core.training.recognizer import RecognizerTrainConfig, train_recognizer

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
    from core.models.generator import GeneratorConfig
    from core.training.generator import GeneratorTrainConfig, train_generator

    model = GeneratorConfig(z_dim=args.z_dim, g_channels=tuple(args.g_channels), d_channels=tuple(args.d_channels),
                            upsample=args.upsample)
    train = GeneratorTrainConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, rec_weight=args.rec_weight,
        latent_weight=args.latent_weight, expression_weight=args.expression_weight, au_weight=args.au_weight,
        recognizer_weight=args.recognizer_weight, cycle_weight=args.cycle_weight,
        recognizer_warmup=args.recognizer_warmup, au_perturb=args.au_perturb, au_critic=args.au_critic or "",
        au_critic_weight=args.au_critic_weight, seed=args.seed,
        checkpoint_minutes=args.checkpoint_minutes, sample_every=args.sample_every,
    )
    result = train_generator(args.data, args.out, args.au_cache, model, train, recognizer_path=args.recognizer,
                             resume=args.resume, device=args.device, init=args.init)
    if int(os.environ.get("RANK", "0")) == 0:
        sys.stdout.write(json.dumps({"event": "done", **result}) + "\n")
    return 0


def _joint(args: argparse.Namespace) -> int:
    """FESGAN stage 2 on a dataset: the recognizer and generator fine-tuned together."""
    import numpy as np

    from core.checkpoint import export_generator, export_recognizer
    from core.evaluation.recognition import evaluate_crops
    from core.recognizer import Recognizer
    from core.synthesizer import Synthesizer
    from core.training.data import load_split, trainable_index
    from core.training.joint import JointConfig, JointState, run_joint
    from core.training.joint_experiments import stratified_fraction

    config = JointConfig(
        steps=args.steps, batch_real=args.batch_real, batch_synth=args.batch_synth, lr_recognizer=args.lr_recognizer,
        lr_generator=args.lr_generator, synth_weight=args.synth_weight, intra_weight=args.intra_weight,
        rdbp=not args.no_rdbp, adv_weight=args.adv_weight, update_generator=not args.frozen_generator,
        pseudo_labels=args.pseudo_labels, seed=args.seed)
    recognizer = Recognizer.load(path=args.recognizer, device=args.device) if args.recognizer else Recognizer.load(
        device=args.device)
    synthesizer = Synthesizer.load(path=args.generator, device=args.device) if args.generator else Synthesizer.load(
        device=args.device)
    train = load_split(args.data, "train")
    train = train.subset(trainable_index(train))
    if args.fraction < 1:
        train = train.subset(stratified_fraction(train.soft_targets.argmax(axis=1), args.fraction, args.seed))
    valid = load_split(args.data, "valid")
    valid = valid.subset(np.flatnonzero(valid.ferplus_label >= 0))
    before = evaluate_crops(recognizer.net, valid.images, valid.ferplus_label, recognizer.device)
    state = JointState.with_synthesizer(recognizer.net, synthesizer)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "log.jsonl", "a") as log:
        def on_step(record):
            if record["step"] % 25 == 0 or record["step"] == config.steps:
                log.write(json.dumps(record) + "\n")
                log.flush()
                sys.stdout.write(json.dumps(record) + "\n")

        run_joint(state, train.images, train.soft_targets, config, fer2013_labels=train.fer2013_label,
                  device=recognizer.device, on_step=on_step)
    after = evaluate_crops(state.recognizer, valid.images, valid.ferplus_label, recognizer.device)
    export_recognizer(out / "recognizer.safetensors", state.recognizer.float().cpu(), {"joint": asdict(config)})
    export_generator(out / "generator.safetensors", state.generator.float().cpu(), synthesizer.e.cpu(),
                     {**synthesizer.metadata, "class_aus": state.class_aus, "joint": asdict(config)}, state.discriminator.cpu()
                     if state.discriminator is not None else None)
    sys.stdout.write(json.dumps({"event": "done", "train_faces": len(train), "valid_accuracy_before": before["accuracy"],
                                 "valid_accuracy_after": after["accuracy"]}) + "\n")
    return 0


def _au_regressor(args: argparse.Namespace) -> int:
    from core.training.au_regressor import AURegressorTrainConfig, train_au_regressor

    result = train_au_regressor(args.data, args.au_cache, args.out, train_config=AURegressorTrainConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed), device=args.device)
    sys.stdout.write(json.dumps({"event": "done", **result}) + "\n")
    return 0


def _export_generator(args: argparse.Namespace) -> int:
    """Re-export a run's generator.safetensors (e.g. from before D was stored in half precision)."""
    from core.checkpoint import export_generator
    from core.synthesizer import Synthesizer

    synth = Synthesizer.load(path=args.source, device="cpu")
    export_generator(Path(args.out), synth.g, synth.e, synth.metadata, synth.d)
    sys.stdout.write(json.dumps({"event": "exported", "out": args.out, "step": synth.metadata.get("step")}) + "\n")
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
    g.add_argument("--au-weight", type=float, default=20.0)
    g.add_argument("--recognizer-weight", type=float, default=0.1)
    g.add_argument("--cycle-weight", type=float, default=2.0)
    g.add_argument("--recognizer-warmup", type=int, default=3000, help="ramp the recognizer loss up over N steps")
    g.add_argument("--au-perturb", type=float, default=0.5,
                   help="share of synthetic conditions whose AUs are partly re-drawn, independent of the expression")
    g.add_argument("--au-critic", default=None, help="frozen AU regressor (.safetensors of `au-regressor`)")
    g.add_argument("--au-critic-weight", type=float, default=0.0)
    g.add_argument("--upsample", default="bilinear", choices=("bilinear", "nearest"))
    g.add_argument("--sample-every", type=int, default=1000)
    g.add_argument("--z-dim", type=int, default=64)
    g.add_argument("--g-channels", type=int, nargs="+", default=[192, 96, 48, 24])
    g.add_argument("--d-channels", type=int, nargs="+", default=[32, 64, 128, 256])
    g.set_defaults(run=_generator)

    a = sub.add_parser("au-regressor", help="train the CNN that reads mesh-measured AUs from pixels (G's AU critic)")
    a.add_argument("--data", required=True)
    a.add_argument("--au-cache", required=True, help="landmark cache of `python -m core.aus annotate`")
    a.add_argument("--out", required=True, help="output .safetensors")
    a.add_argument("--steps", type=int, default=3000)
    a.add_argument("--batch-size", type=int, default=64)
    a.add_argument("--lr", type=float, default=0.02)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--device", default="auto")
    a.set_defaults(run=_au_regressor)

    x = sub.add_parser("export-generator", help="re-export generator weights (D in half precision)")
    x.add_argument("source")
    x.add_argument("out")
    x.set_defaults(run=_export_generator)

    j = sub.add_parser("joint", help="fine-tune recognizer and generator together (FESGAN stage 2, RDBP)")
    j.add_argument("--data", required=True, help="data directory (FER+ npz, class folders) or FER2013 CSV")
    j.add_argument("--out", required=True, help="folder for log.jsonl and the fine-tuned weights")
    j.add_argument("--recognizer", default=None, help="recognizer .safetensors (default: the shipped one)")
    j.add_argument("--generator", default=None, help="generator .safetensors (default: the shipped one)")
    j.add_argument("--device", default="auto")
    j.add_argument("--fraction", type=float, default=1.0, help="stratified share of train labels to use")
    j.add_argument("--steps", type=int, default=1000)
    j.add_argument("--batch-real", type=int, default=32)
    j.add_argument("--batch-synth", type=int, default=32)
    j.add_argument("--lr-recognizer", type=float, default=0.005)
    j.add_argument("--lr-generator", type=float, default=5e-5)
    j.add_argument("--synth-weight", type=float, default=1.0)
    j.add_argument("--intra-weight", type=float, default=0.05)
    j.add_argument("--no-rdbp", action="store_true", help="let the intra-class loss move the real features too")
    j.add_argument("--adv-weight", type=float, default=0.5)
    j.add_argument("--frozen-generator", action="store_true", help="synthetic faces only; G is not updated")
    j.add_argument("--pseudo-labels", default="rectify", choices=("none", "filter", "rectify"))
    j.add_argument("--seed", type=int, default=0)
    j.set_defaults(run=_joint)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
