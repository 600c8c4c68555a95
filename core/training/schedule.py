"""EMA of weights and the learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def linear_ramp(step: int, length: int) -> float:
    """0 -> 1 over `length` steps (1 from the start when length is 0)."""
    return 1.0 if length <= 0 else min(1.0, (step + 1) / length)
