"""The one place that turns a device request into a torch.device."""

from __future__ import annotations

import torch

from core.errors import InputError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" picks CUDA when present, else CPU; anything else is passed to torch.device."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise InputError(f"unknown device {device!r}: use 'auto', 'cpu' or 'cuda'") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was requested but no CUDA GPU is available")
    return resolved


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 autocast speeds training up here: on CUDA with bf16 support, and on CPUs with
    native bf16 (AVX-512 BF16 / AMX). On other CPUs (AVX2 only) oneDNN emulates it, about 8x slower
    than fp32 (measured on a 2-core AVX2 EPYC), so training stays in fp32 there."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def train_autocast(device: torch.device, enabled: bool = True) -> torch.autocast:
    """bf16 autocast when asked for (`enabled`, a config's `amp`) and fast on this hardware."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled and bf16_is_fast(device))
