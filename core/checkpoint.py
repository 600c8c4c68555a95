"""Exported weights, written and read back as pairs: what a file of each kind holds, with its kind,
format version and config checked on the way in.

A file is safetensors with JSON metadata {"kind", "version", "config", ...}. `read_checkpoint` is the
one loader: a file of another kind, of another format version, without a config, or whose config has
keys this code does not know is refused with a WeightsError (never loaded half-right).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from core.errors import WeightsError
from core.models.generator import DiscriminatorNet, EncoderNet, GeneratorConfig, GeneratorNet
from core.models.recognizer import RecognizerConfig, RecognizerNet
from core.weights import FORMAT_VERSION, load_weights, save_safetensors

KIND_NAMES = {"recognizer": "recognizer", "generator": "generator", "au_regressor": "AU regressor",
              "motion": "motion model", "mesh_net": "tracking mesh"}


def model_tensors(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def strip_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def read_checkpoint(kind: str, name: str | None = None, path: str | Path | None = None
                    ) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and metadata of shipped weights `name` (sha256-checked) or of the file `path`."""
    where = str(path) if path is not None else name
    tensors, metadata = load_weights(name or kind, path)
    if metadata.get("kind") != kind:
        found = metadata.get("kind")
        held = f"{KIND_NAMES.get(found, found)} weights" if found else "no weights kind"
        raise WeightsError(f"{where} holds {held}, not {KIND_NAMES[kind]} weights")
    if metadata.get("version") != FORMAT_VERSION:
        raise WeightsError(f"{where} has format version {metadata.get('version')!r}; this code reads version "
                           f"{FORMAT_VERSION}")
    if not isinstance(metadata.get("config"), dict):
        raise WeightsError(f"{where} holds no config for its {kind} weights")
    return tensors, metadata


def config_of(cls, metadata: dict, where: str):
    """The config dataclass a checkpoint was saved with; unknown or malformed keys are a WeightsError."""
    try:
        return cls.from_dict(metadata["config"])
    except (TypeError, ValueError) as error:
        raise WeightsError(f"{where}: its config does not fit this code: {error}") from error


def load_state(net: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> nn.Module:
    try:
        net.load_state_dict(tensors)
    except RuntimeError as error:
        raise WeightsError(f"{where}: weights do not match their config: {error}") from error
    return net


# ---------------------------------------------------------------- recognizer (and the AU regressor, same network)

def export_net(path: str | Path, net: nn.Module, kind: str, extra: dict | None = None) -> None:
    """Inference weights of one network: its state in float32 with its config, kind and format version."""
    metadata = {"kind": kind, "version": FORMAT_VERSION, "config": net.config.to_dict(), **(extra or {})}
    save_safetensors(path, net.state_dict(), metadata)


def load_net(kind: str, net_class, config_class, name: str | None = None, path: str | Path | None = None
             ) -> tuple[nn.Module, dict]:
    """The network saved by export_net (built from its stored config), and the rest of its metadata."""
    tensors, metadata = read_checkpoint(kind, name, path)
    where = str(path) if path is not None else (name or kind)
    return load_state(net_class(config_of(config_class, metadata, where)), tensors, where), metadata


def export_recognizer(path: str | Path, net: RecognizerNet, extra: dict | None = None, kind: str = "recognizer") -> None:
    """Inference weights: the (EMA) net in float32 with its config and format version."""
    export_net(path, net, kind, extra)


def load_recognizer(name: str | None = None, path: str | Path | None = None, kind: str = "recognizer"
                    ) -> tuple[RecognizerNet, dict]:
    """The network saved by export_recognizer, and the rest of its metadata."""
    return load_net(kind, RecognizerNet, RecognizerConfig, name, path)


# ---------------------------------------------------------------- generator

def export_generator(path: str | Path, g_ema, encoder, extra: dict, discriminator=None) -> None:
    """Inference weights (EMA generator, encoder) and, for joint fine-tuning, the discriminator."""
    tensors = {**model_tensors("g", g_ema), **model_tensors("e", encoder)}
    if discriminator is not None:  # only joint fine-tuning uses D: half precision keeps the file under 10 MB
        tensors.update({f"d.{k}": v.half() if v.is_floating_point() else v for k, v in discriminator.state_dict().items()})
    metadata = {"kind": "generator", "version": FORMAT_VERSION, "config": g_ema.config.to_dict(), **extra}
    save_safetensors(path, tensors, metadata)


def load_generator(name: str | None = None, path: str | Path | None = None
                   ) -> tuple[GeneratorNet, EncoderNet, DiscriminatorNet | None, dict]:
    """G, E and (when the file holds one) D saved by export_generator, and the rest of the metadata."""
    tensors, metadata = read_checkpoint("generator", name, path)
    where = str(path) if path is not None else (name or "generator")
    config = config_of(GeneratorConfig, metadata, where)
    g = load_state(GeneratorNet(config), strip_prefix(tensors, "g"), where)
    e = load_state(EncoderNet(config), strip_prefix(tensors, "e"), where)
    d = None
    if any(k.startswith("d.") for k in tensors):
        d = load_state(DiscriminatorNet(config), strip_prefix(tensors, "d"), where)
    return g, e, d, metadata


# ---------------------------------------------------------------- tracking mesh

def export_mesh_net(path: str | Path, net, extra: dict | None = None) -> None:
    """Inference weights of the tracking mesh (core/models/mesh_net.py), with its config."""
    export_net(path, net, "mesh_net", extra)


def load_mesh_net(name: str | None = None, path: str | Path | None = None):
    """(MeshNet in eval mode, the rest of its metadata) saved by export_mesh_net."""
    from core.models.mesh_net import MeshNet, MeshNetConfig

    net, metadata = load_net("mesh_net", MeshNet, MeshNetConfig, name, path)
    return net.eval(), metadata
