"""Exported weights: what a file of each kind holds, written and read back with kind and version checks."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from core.models.recognizer import RecognizerNet
from core.weights import FORMAT_VERSION, save_safetensors


def model_tensors(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def strip_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def export_recognizer(path: Path, net: RecognizerNet, extra: dict | None = None) -> None:
    """Inference weights: the (EMA) net in float32 with its config and format version."""
    metadata = {"kind": "recognizer", "version": FORMAT_VERSION, "config": net.config.to_dict(), **(extra or {})}
    save_safetensors(path, net.state_dict(), metadata)


def export_generator(path: Path, g_ema, encoder, extra: dict, discriminator=None) -> None:
    """Inference weights (EMA generator, encoder) and, for joint fine-tuning, the discriminator."""
    tensors = {**{f"g.{k}": v for k, v in g_ema.state_dict().items()},
               **{f"e.{k}": v for k, v in encoder.state_dict().items()}}
    if discriminator is not None:  # only joint fine-tuning uses D: half precision keeps the file under 10 MB
        tensors.update({f"d.{k}": v.half() if v.is_floating_point() else v for k, v in discriminator.state_dict().items()})
    metadata = {"kind": "generator", "version": FORMAT_VERSION, "config": g_ema.config.to_dict(), **extra}
    save_safetensors(path, tensors, metadata)
