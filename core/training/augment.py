"""Training augmentation (pure functions of a batch and a torch.Generator)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment_batch(images: torch.Tensor, generator: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Random flip, rotation, scale, shift, brightness/contrast and erasing of float images [N,1,H,W] in [0,1]."""
    n = images.shape[0]
    device = images.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=generator).mul(high - low).add(low).to(device)

    angle = uniform(-15, 15) * strength * math.pi / 180
    scale = 1.0 + uniform(-0.12, 0.12) * strength
    shift = torch.stack([uniform(-0.1, 0.1), uniform(-0.1, 0.1)], dim=1) * strength
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0).to(device)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, shift[:, 0]], 1), torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)

    contrast = uniform(0.7, 1.3).view(n, 1, 1, 1)
    brightness = uniform(-0.15, 0.15).view(n, 1, 1, 1)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = ((out - mean) * contrast + mean + brightness).clamp(0, 1)

    # Random erasing: one rectangle of 2-20% of the area on half the images, filled with noise.
    h, w = out.shape[-2:]
    area = uniform(0.02, 0.2) * h * w
    aspect = torch.exp(uniform(math.log(0.3), math.log(3.3)))
    eh = (area * aspect).sqrt().clamp(max=h).long()
    ew = (area / aspect).sqrt().clamp(max=w).long()
    top = (torch.rand(n, generator=generator).to(device) * (h - eh + 1)).long()
    left = (torch.rand(n, generator=generator).to(device) * (w - ew + 1)).long()
    rows = torch.arange(h, device=device).view(1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, w)
    mask = (
        (rows >= top.view(n, 1, 1)) & (rows < (top + eh).view(n, 1, 1))
        & (cols >= left.view(n, 1, 1)) & (cols < (left + ew).view(n, 1, 1))
        & (torch.rand(n, generator=generator).to(device) < 0.5 * strength).view(n, 1, 1)
    ).unsqueeze(1)
    noise = torch.rand(out.shape, generator=generator).to(device)
    return torch.where(mask, noise, out)
