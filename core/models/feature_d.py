"""A discriminator on a frozen, pretrained recognizer's features (Projected GAN, Sauer et al. 2021).

A discriminator trained from scratch on 28k faces learns slowly what a face is; one that reads the features of a
network already trained on faces starts from them and gives the generator useful gradients early. The trunk is
a FER+ recognizer's (never trained here: eval mode, no gradients to its weights); a small trainable head reads
each tapped stage and says real or fake, conditioned by projection like StyleGen's own D. It is used beside that D,
not instead of it: a pixel-level D still judges what the features miss.

The trunk must not be the recognizer that measures the generator (core.evaluation reads faces with the shipped
recognizer): StyleGen's training uses the photo edit's guide recognizer, trained apart (weights/edit_guide).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class FeatureHead(nn.Module):
    """One tapped stage [N, C, S, S] -> realism logit [N], with the condition projected onto its pooled features."""

    def __init__(self, channels: int, cond_dim: int, hidden: int = 64):
        super().__init__()
        self.mix = spectral_norm(nn.Conv2d(channels, hidden, 1))  # Projected GAN mixes channels before judging
        self.conv = spectral_norm(nn.Conv2d(hidden, hidden, 3, padding=1))
        self.out = spectral_norm(nn.Linear(hidden, 1))
        self.project = spectral_norm(nn.Linear(cond_dim, hidden))

    def forward(self, h: torch.Tensor, cond: torch.Tensor, project: torch.Tensor | None) -> torch.Tensor:
        h = F.leaky_relu(self.conv(F.leaky_relu(self.mix(h), 0.2)), 0.2)
        pooled = h.mean(dim=(2, 3))
        proj = (self.project(cond) * pooled).sum(dim=1) / math.sqrt(pooled.shape[1])
        if project is not None:
            proj = proj * project.to(proj)
        return self.out(pooled).squeeze(1) + proj


class FeatureDiscriminator(nn.Module):
    """D(x in [-1, 1], cond) -> realism logit [N]: the mean of its heads' logits over the tapped stages."""

    def __init__(self, trunk_net, cond_dim: int, taps: tuple[int, ...] | None = None):
        """taps: the trunk's stages read (1-based); default its last three (edit_guide: 12, 6 and 3 px)."""
        super().__init__()
        config = trunk_net.config
        self.mean, self.std = float(config.mean), float(config.std)
        last = len(config.widths)
        self.taps = tuple(taps) if taps is not None else tuple(range(max(1, last - 2), last + 1))
        bounds = [len(trunk_net.stages(n)) for n in range(1, max(self.taps) + 1)]  # end of each stage's layers
        self.stages = nn.ModuleList(trunk_net.features[a:b] for a, b in zip([0] + bounds[:-1], bounds))
        self.stages.eval().requires_grad_(False)
        self.heads = nn.ModuleList(FeatureHead(config.widths[t - 1], cond_dim) for t in self.taps)

    def train(self, mode: bool = True):
        super().train(mode)
        self.stages.eval()  # the trunk's batch-norm statistics are the recognizer's, always
        return self

    def trainable(self):
        return self.heads.parameters()

    def forward(self, x: torch.Tensor, cond: torch.Tensor, project: torch.Tensor | None = None) -> torch.Tensor:
        h = ((x.float() + 1) / 2 - self.mean) / self.std
        logits = []
        for n, stage in enumerate(self.stages, start=1):
            h = stage(h)
            if n in self.taps:
                logits.append(self.heads[self.taps.index(n)](h, cond, project))
        return torch.stack(logits).mean(dim=0)

    def head_state(self) -> dict:
        """The trainable part only (the trunk comes from its own weights file)."""
        return {k: v for k, v in self.state_dict().items() if k.startswith("heads.")}
