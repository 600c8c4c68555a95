"""A StyleGen run's warm start: its state small enough to commit (weights/wip/, < 10 MB), so a later run continues
from it; and the inference file of the same step (python -m core.train stylegen-warm-start)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from core.models import stylegen as sg
from core.training.stylegen import StyleTrainConfig, Trainer, write_generator

WARM_START_KIND = "stylegen_warm_start"


def export_warm_start(path: Path, trainer: Trainer) -> None:
    """A run's state small enough to commit (< 10 MB): EMA G, D and E in half precision, the step and configs;
    no optimizer state. `train(init=path)` continues from it (G restarts from its EMA, optimizers fresh)."""
    nets = {"g_ema": trainer.g_ema, "d": trainer.d, "e": trainer.e}
    tensors = {f"{name}.{k}": v for name, net in nets.items() for k, v in net.state_dict().items()}
    _write_warm_start(path, tensors, {"model_config": trainer.mc.to_dict(), "train_config": asdict(trainer.tc),
                                      "class_aus": trainer.pools.class_aus, "step": trainer.step})


def warm_start_from_checkpoint(source, path) -> dict:
    """export_warm_start of a run folder's last.safetensors (save_checkpoint), without building the nets."""
    from core.weights import read_safetensors

    tensors, meta = read_safetensors(source)
    kept = {k: v for k, v in tensors.items() if k.split(".")[0] in ("g_ema", "d", "e")}
    info = {k: meta[k] for k in ("model_config", "train_config", "class_aus", "step")}
    _write_warm_start(path, kept, info)
    return {"step": info["step"], "bytes": Path(path).stat().st_size}


def generator_from_checkpoint(source, path) -> dict:
    """export() of a run folder's last.safetensors: its EMA G and E as an inference file (Synthesizer.load reads
    it), so a warm start and the generator measured from it are the same step."""
    from core.checkpoint import strip_prefix
    from core.weights import read_safetensors

    tensors, meta = read_safetensors(source)
    kept = {f"{new}.{k}": v for old, new in (("g_ema", "g"), ("e", "e")) for k, v in strip_prefix(tensors, old).items()}
    write_generator(path, kept, meta)
    return {"step": meta["step"], "bytes": Path(path).stat().st_size}


def _write_warm_start(path, tensors: dict, info: dict) -> None:
    from core.weights import FORMAT_VERSION, save_safetensors

    tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    save_safetensors(path, tensors, {"kind": WARM_START_KIND, "version": FORMAT_VERSION, **info})


def load_warm_start(trainer: Trainer, path) -> None:
    from core.checkpoint import strip_prefix
    from core.errors import WeightsError
    from core.weights import read_safetensors

    tensors, meta = read_safetensors(path)
    if meta.get("kind") != WARM_START_KIND:
        raise WeightsError(f"{path} is not a StyleGen warm start")
    for net in (trainer.g, trainer.g_ema):
        sg.load_generator_state(net, strip_prefix(tensors, "g_ema"))
    for name, net in (("d", trainer.d), ("e", trainer.e)):
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in strip_prefix(tensors, name).items()})
    trainer.step = int(meta["step"])  # the EMA ramp and the recognizer's start go on from there
    trainer.ramp_start = trainer.step


def warm_start_configs(path) -> tuple[sg.StyleGenConfig, StyleTrainConfig]:
    from core.weights import read_safetensors

    _, meta = read_safetensors(path)
    return sg.StyleGenConfig.from_dict(meta["model_config"]), StyleTrainConfig(**meta["train_config"])
