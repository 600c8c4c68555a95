"""Training CLI. The same command runs alone or under torchrun (DistributedDataParallel):

    python -m core.train recognizer --data ../shared/data/fer2013plus --out ../runs/recognizer
    python -m core.train recognizer --data ... --out ... --resume
    python -m core.train generator --data ../shared/data/fer2013plus --au-cache ../runs/au_cache --out ../runs/generator
    torchrun --standalone --nproc_per_node 2 -m core.train recognizer --data ... --out ...
    torchrun --standalone --nproc_per_node 2 -m core.train generator --data ... --au-cache ... --out ...
    python -m core.train mesh-net --data ../shared/data/fer2013plus --au-cache ../runs/au_cache --out ../runs/mesh_net
    python -m core.train joint --data ../shared/data/fer2013plus --out ../runs/joint --fraction 0.1

Every option but the paths is a field of a config dataclass (core.models.*Config, core.training.*Config),
with the dataclass's default: `python -m core.train MODEL --help` lists them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from core.config import add_config_arguments, config_from_args
from core.models.generator import GeneratorConfig
from core.models.mesh_net import MeshNetConfig
from core.models.motion import MotionConfig
from core.models.recognizer import RecognizerConfig
from core.models.stylegen import StyleGenConfig
from core.training.au_regressor import AURegressorTrainConfig
from core.training.generator import GeneratorTrainConfig
from core.training.joint import PSEUDO_LABEL_MODES, JointConfig
from core.training.mesh_net import MeshTrainConfig
from core.training.recognizer import RecognizerTrainConfig
from core.training.stylegen import StyleTrainConfig

# Model-config fields fixed by the data and the labels, not chosen on the command line.
FIXED_MODEL_FIELDS = ("input_size", "image_size", "num_classes", "num_fer2013_classes", "num_expressions",
                      "num_aus", "mean", "std")


def _recognizer(args: argparse.Namespace) -> int:
    from core.training.recognizer import train_recognizer

    best = train_recognizer(args.data, args.out, config_from_args(RecognizerConfig, args),
                            config_from_args(RecognizerTrainConfig, args), resume=args.resume, device=args.device,
                            init=args.init)
    if int(os.environ.get("RANK", "0")) == 0:
        sys.stdout.write(json.dumps({"event": "done", "best": best}) + "\n")
    return 0


def _generator(args: argparse.Namespace) -> int:
    from core.training.generator import train_generator

    result = train_generator(args.data, args.out, args.au_cache, config_from_args(GeneratorConfig, args),
                             config_from_args(GeneratorTrainConfig, args), recognizer_path=args.recognizer,
                             resume=args.resume, device=args.device, init=args.init)
    if int(os.environ.get("RANK", "0")) == 0:
        sys.stdout.write(json.dumps({"event": "done", **result}) + "\n")
    return 0


def _joint(args: argparse.Namespace) -> int:
    """FESGAN stage 2 on a dataset: the recognizer and generator fine-tuned together."""
    from core.training.joint_dataset import joint_on_dataset

    config = config_from_args(JointConfig, args)
    if args.frozen_generator:  # the older spelling of --no-update-generator
        config = config_from_args(JointConfig, args, update_generator=False)
    result = joint_on_dataset(args.data, args.out, config, args.fraction, args.recognizer, args.generator,
                              args.device, log=lambda line: sys.stdout.write(line + "\n"))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


def _au_regressor(args: argparse.Namespace) -> int:
    from core.training.au_regressor import train_au_regressor

    result = train_au_regressor(args.data, args.au_cache, args.out,
                                train_config=config_from_args(AURegressorTrainConfig, args), device=args.device)
    sys.stdout.write(json.dumps({"event": "done", **result}) + "\n")
    return 0


def _stylegen(args: argparse.Namespace) -> int:
    """The StyleGAN2-like generator of issue 15 (core/models/stylegen.py), trained or resumed in --out."""
    from core.models.stylegen import StyleGenConfig
    from core.training.stylegen import StyleTrainConfig, train

    # On --resume (and --init) the stored train config wins; a field typed on this command line changes it.
    typed = " ".join(sys.argv[1:] if args.argv is None else args.argv)
    flags = {word.split("=")[0] for word in typed.split()}
    overrides = tuple(f.name for f in dataclasses.fields(StyleTrainConfig)
                      if f.name != "steps" and {"--" + f.name.replace("_", "-"), "--no-" + f.name.replace("_", "-")} & flags)
    model, config = config_from_args(StyleGenConfig, args), config_from_args(StyleTrainConfig, args)
    if args.init:  # the warm start's own configs, but for the steps and the weights typed here
        from core.training.stylegen_warm_start import warm_start_configs

        model, stored = warm_start_configs(args.init)
        config = dataclasses.replace(stored, **{k: getattr(config, k) for k in ("steps", *overrides)})
    result = train(args.data, args.out, args.au_cache, model, config, resume=args.resume,
                   recognizer_path=args.recognizer, overrides=overrides, init=args.init)
    sys.stdout.write(json.dumps({"event": "done", **result}) + "\n")
    return 0


def _motion(args: argparse.Namespace) -> int:
    from core.training.motion import fit_motion

    command = _command(args)
    result = fit_motion(args.data, args.au_cache, args.out, config_from_args(MotionConfig, args), command)
    sys.stdout.write(json.dumps({"event": "done", **result}) + "\n")
    return 0


def _motion_photo_gain(args: argparse.Namespace) -> int:
    from core.training.motion import fit_photo_gain

    command = _command(args)
    result = fit_photo_gain(args.data, args.motion, args.faces, args.rounds, command)
    sys.stdout.write(json.dumps({"event": "done", **result}) + "\n")
    return 0


def _mesh_net(args: argparse.Namespace) -> int:
    """The tracking mesh (core/models/mesh_net.py): trained in --out, exported to OUT/mesh_net.safetensors."""
    from core.training.mesh_net import train_mesh_net

    command = _command(args)
    result = train_mesh_net(args.data, args.au_cache, args.out, config_from_args(MeshNetConfig, args),
                            config_from_args(MeshTrainConfig, args), resume=args.resume, device=args.device,
                            command=command)
    sys.stdout.write(json.dumps({"event": "done", **result}) + "\n")
    return 0


def _export_generator(args: argparse.Namespace) -> int:
    """Re-export a run's generator.safetensors (e.g. from before D was stored in half precision)."""
    from core.synthesizer import Synthesizer

    synth = Synthesizer.load(path=args.source, device="cpu")
    synth.save(Path(args.out))
    sys.stdout.write(json.dumps({"event": "exported", "out": args.out, "step": synth.metadata.get("step")}) + "\n")
    return 0


def _stylegen_warm_start(args: argparse.Namespace) -> int:
    """A StyleGen run's last.safetensors as a committable warm start (no optimizer state, half precision)."""
    from core.training.stylegen_warm_start import warm_start_from_checkpoint

    result = warm_start_from_checkpoint(args.source, args.out)
    if args.generator:
        from core.training.stylegen_warm_start import generator_from_checkpoint

        result["generator"] = {"out": args.generator, **generator_from_checkpoint(args.source, args.generator)}
    sys.stdout.write(json.dumps({"event": "exported", "out": args.out, **result}) + "\n")
    return 0


def _command(args: argparse.Namespace) -> str:
    """The command line that ran, as a model card records it."""
    return "python -m core.train " + " ".join(sys.argv[1:] if args.argv is None else args.argv)


def _paths(parser: argparse.ArgumentParser, resume: bool = True) -> None:
    parser.add_argument("--data", required=True, help="data directory (FER+ npz, class folders) or FER2013 CSV")
    parser.add_argument("--out", required=True, help="run folder: checkpoints, log.jsonl, exported weights")
    if resume:
        parser.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors if present")
    parser.add_argument("--device", default="auto")


def _data_and_cache(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True)
    parser.add_argument("--au-cache", required=True, help="landmark cache of `python -m core.aus annotate`")


def _add_fitted_models(sub) -> None:
    """The motion model, its photo gains and the tracking mesh: fitted on the AU/landmark cache."""
    m = sub.add_parser("motion", help="fit the motion model (how the mesh moves with each AU) for photo edits")
    _data_and_cache(m)
    m.add_argument("--out", default="weights/motion.safetensors")
    add_config_arguments(m, MotionConfig)
    m.set_defaults(run=_motion)
    p = sub.add_parser("motion-photo-gain", help="fit the motion model's per-AU gains on FER+ train faces as photos")
    p.add_argument("--data", required=True)
    p.add_argument("--motion", default="weights/motion.safetensors")
    p.add_argument("--faces", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2)
    p.set_defaults(run=_motion_photo_gain)

    t = sub.add_parser("mesh-net", help="train the tracking mesh that live tracking re-fits each frame with")
    _paths(t)
    t.add_argument("--au-cache", required=True, help="landmark cache of `python -m core.aus annotate`")
    add_config_arguments(t, MeshNetConfig, exclude=("input_size", "mean", "std"))
    add_config_arguments(t, MeshTrainConfig)
    t.set_defaults(run=_mesh_net)


def _add_exports(sub) -> None:
    """Commands that re-package a run's weights."""
    w = sub.add_parser("stylegen-warm-start", help="a StyleGen run's last.safetensors as a warm start (< 10 MB)")
    w.add_argument("source", help="the run folder's last.safetensors")
    w.add_argument("out", help="e.g. weights/wip/stylegen_warm_start.safetensors")
    w.add_argument("--generator", default=None, help="also its EMA G + E as an inference file, to measure")
    w.set_defaults(run=_stylegen_warm_start)

    x = sub.add_parser("export-generator", help="re-export generator weights (D in half precision)")
    x.add_argument("source")
    x.add_argument("out")
    x.set_defaults(run=_export_generator)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.train")
    sub = parser.add_subparsers(dest="model", required=True)
    r = sub.add_parser("recognizer", help="train the expression recognizer")
    _paths(r)
    r.add_argument("--init", default=None, help="start from these recognizer weights (.safetensors) to fine-tune")
    add_config_arguments(r, RecognizerConfig, exclude=FIXED_MODEL_FIELDS)
    add_config_arguments(r, RecognizerTrainConfig, help={"max_steps": "stop after N steps (smoke runs, tests)"})
    r.set_defaults(run=_recognizer)

    g = sub.add_parser("generator", help="train the expression generator (FESGAN stage 1)")
    _paths(g)
    g.add_argument("--au-cache", default=None, help="landmark cache of `python -m core.aus annotate` (else measured)")
    g.add_argument("--recognizer", default=None, help="recognizer .safetensors (default: the shipped one)")
    g.add_argument("--init", default=None, help="continue from exported generator weights (.safetensors)")
    add_config_arguments(g, GeneratorConfig, exclude=FIXED_MODEL_FIELDS,
                         choices={"upsample": ("bilinear", "nearest"), "summary": ("flatten", "mean")})
    add_config_arguments(g, GeneratorTrainConfig, help={
        "au_critic": "frozen AU regressor (.safetensors of `au-regressor`)",
        "au_perturb": "share of synthetic conditions whose AUs are partly re-drawn, independent of the expression",
        "recognizer_warmup": "ramp the recognizer loss up over N steps"})
    g.set_defaults(run=_generator)

    a = sub.add_parser("au-regressor", help="train the CNN that reads mesh-measured AUs from pixels (G's AU critic)")
    _data_and_cache(a)
    a.add_argument("--out", required=True, help="output .safetensors")
    a.add_argument("--device", default="auto")
    add_config_arguments(a, AURegressorTrainConfig)
    a.set_defaults(run=_au_regressor)

    s = sub.add_parser("stylegen", allow_abbrev=False, help="train the StyleGAN2-like generator (issue 15, in progress; not shipped)")
    _paths(s)
    s.add_argument("--au-cache", default=None, help="landmark cache of `python -m core.aus annotate` (else measured)")
    s.add_argument("--recognizer", default=None, help="recognizer .safetensors (default: the shipped one)")
    s.add_argument("--init", default=None, help="begin from a committed warm start (weights/wip/), not from scratch")
    add_config_arguments(s, StyleGenConfig, exclude=FIXED_MODEL_FIELDS)
    add_config_arguments(s, StyleTrainConfig)
    s.set_defaults(run=_stylegen)

    _add_fitted_models(sub)
    _add_exports(sub)

    j = sub.add_parser("joint", help="fine-tune recognizer and generator together (FESGAN stage 2, RDBP)")
    _paths(j, resume=False)
    j.add_argument("--recognizer", default=None, help="recognizer .safetensors (default: the shipped one)")
    j.add_argument("--generator", default=None, help="generator .safetensors (default: the shipped one)")
    j.add_argument("--fraction", type=float, default=1.0, help="stratified share of train labels to use")
    j.add_argument("--frozen-generator", action="store_true", help="synthetic faces only; G is not updated")
    add_config_arguments(j, JointConfig, choices={"pseudo_labels": PSEUDO_LABEL_MODES},
                         help={"rdbp": "--no-rdbp lets the intra-class loss move the real features too"})
    j.set_defaults(run=_joint)
    return parser


def main(argv: list[str] | None = None) -> int:
    if "OMP_NUM_THREADS" not in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        os.environ["OMP_NUM_THREADS"] = "1"  # one thread per rank: more oversubscribes small CPUs
    args = build_parser().parse_args(argv)
    args.argv = argv  # written into the weights a command fits (the command that made them)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
