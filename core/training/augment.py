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


def augment_pair(images: torch.Tensor, generator: torch.Generator, max_shift: int = 3, color: float = 0.0,
                 cutout: float = 0.0) -> torch.Tensor:
    """DiffAugment (Zhao et al. 2020), differentiable: random mirror and integer shift up to max_shift px (edge
    padding); with color > 0 brightness and contrast jitter (color 1 = DiffAugment's ranges: +-0.5 in [-1, 1],
    contrast x0.5-1.5); with cutout > 0 a square of that share of the side set to mid-grey. Applied alike to real
    and fake faces before D so D cannot memorise the small data set."""
    n, _, h, w = images.shape
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None].to(images.device), images.flip(-1), images)
    if max_shift > 0:
        x = _shift(x, generator, max_shift)
    if color > 0:
        x = _jitter(x, generator, color)
    if cutout > 0:
        x = _cutout(x, generator, cutout)
    return x


def _shift(x: torch.Tensor, generator: torch.Generator, max_shift: int) -> torch.Tensor:
    n, _, h, w = x.shape
    padded = F.pad(x, [max_shift] * 4, mode="replicate")
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None]).to(x.device)  # [n, h]
    cols = (dx[:, None] + torch.arange(w)[None]).to(x.device)  # [n, w]
    idx = torch.arange(n, device=x.device)[:, None, None]
    return padded[:, 0][idx, rows[:, :, None], cols[:, None, :]].unsqueeze(1)


def _jitter(x: torch.Tensor, generator: torch.Generator, strength: float) -> torch.Tensor:
    n = len(x)
    brightness = (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * strength
    contrast = 1 + (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * strength
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * contrast.to(x) + mean + brightness.to(x)


def _cutout(x: torch.Tensor, generator: torch.Generator, share: float) -> torch.Tensor:
    n, _, h, w = x.shape
    side_h, side_w = max(1, round(h * share)), max(1, round(w * share))
    cy = torch.randint(0, h, (n,), generator=generator)[:, None, None]
    cx = torch.randint(0, w, (n,), generator=generator)[:, None, None]
    ys, xs = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
    hole = ((ys - cy).abs() <= side_h // 2) & ((xs - cx).abs() <= side_w // 2)
    return x * (~hole).unsqueeze(1).to(x)
