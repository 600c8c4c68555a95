"""FESGAN-style expression synthesis: encoder E, generator G, image discriminator D, latent critic.

Identities are codes z; a latent critic pushes E's codes towards the prior N(0, I) (adversarial
autoencoder), so z ~ N(0, I) draws people who never existed. G(z, c) draws a 48x48 grey face in
FER2013 framing, where the condition c = [expression distribution (8), intensity (1), AUs (17)].
D judges realism and predicts the expression and the AUs of its input (auxiliary heads).
Losses are pure functions below; the trainer lives in core/training.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from core.config import SavedConfig, config_kwargs
from core.labels import AUS, EXPRESSIONS

NEUTRAL = EXPRESSIONS.index("neutral")


@dataclass(frozen=True)
class GeneratorConfig(SavedConfig):
    image_size: int = 48
    z_dim: int = 64
    g_channels: tuple[int, ...] = (192, 96, 48, 24)  # at 6, 12, 24, 48 px
    d_channels: tuple[int, ...] = (32, 64, 128, 256)  # at 48, 24, 12, 6 px
    num_expressions: int = len(EXPRESSIONS)
    num_aus: int = len(AUS)
    upsample: str = "bilinear"  # "nearest" leaves checkerboard patterns
    # How E and D summarise their last feature map: "flatten" keeps where things are (a mouth
    # corner here, an eyebrow there); "mean" (global average) threw that away: blurry
    # reconstructions and a D that could not tell a face layout from a caricature.
    summary: str = "flatten"

    @property
    def cond_dim(self) -> int:
        return self.num_expressions + 1 + self.num_aus

    @classmethod
    def from_dict(cls, values: dict) -> GeneratorConfig:
        values = {"upsample": "nearest", "summary": "mean", **values}  # what checkpoints from before these fields used
        return cls(**config_kwargs(cls, values))


# ---------------------------------------------------------------- conditions

def make_condition(expression: torch.Tensor, intensity: torch.Tensor, aus: torch.Tensor) -> torch.Tensor:
    """[N, 8] distribution, [N] intensity in [0, 1], [N, 17] AU intensities -> condition [N, 26].

    The intensity blends the distribution with neutral, so intensity 0 always means a neutral face.
    """
    expression = expression / expression.sum(dim=1, keepdim=True).clamp(min=1e-8)
    neutral = torch.zeros_like(expression)
    neutral[:, NEUTRAL] = 1.0
    s = intensity.view(-1, 1)
    mixed = s * expression + (1 - s) * neutral
    return torch.cat([mixed, (1 - mixed[:, NEUTRAL : NEUTRAL + 1]), aus], dim=1)


def condition_from_targets(soft_targets: torch.Tensor, aus: torch.Tensor) -> torch.Tensor:
    """Condition of a real face: its FER+ vote distribution (already mixed with neutral) and measured AUs."""
    return torch.cat([soft_targets, 1 - soft_targets[:, NEUTRAL : NEUTRAL + 1], aus], dim=1)


# ---------------------------------------------------------------- AU14, drawn by a warp

# G does not learn AU14 (one-sided corner pull): measured from the mesh as the height difference of
# the mouth corners, it is a pixel or two at 48 px, and a CNN trained to read it from FER+ train faces
# reaches Spearman 0.10 on valid (`python -m core.train au-regressor`), so D's AU head could not teach
# it either; G answered its AU14 input with unrelated changes (brows). The Synthesizer therefore gives
# G the expression's typical AU14 and draws the requested one as a lift of the face's right mouth corner.
# Where that corner sits in FER framing: mesh point 61, median over the FER+ train faces of the AU cache
# (docs/synthesis.md), as a fraction of the crop size.
MOUTH_CORNER_XY = (17.14 / 48, 37.03 / 48)
CORNER_LIFT = 3 / 48  # the lift at amount 1, as a fraction of the crop height
CORNER_RADIUS = 4 / 48  # the Gaussian window of the lift (covers the corners' spread between faces)


def lift_mouth_corner(images: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """Images [N, 1, H, W] (FER framing) with the face's right mouth corner pulled up by amount [N] in
    [0, 1] times CORNER_LIFT; pixels outside the window stay as they are. Differentiable."""
    n, _, h, w = images.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=images.dtype, device=images.device),
                            torch.arange(w, dtype=images.dtype, device=images.device), indexing="ij")
    cx, cy = MOUTH_CORNER_XY[0] * w, MOUTH_CORNER_XY[1] * h
    window = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * (CORNER_RADIUS * h) ** 2))
    source_y = ys + amount.to(images.dtype).view(n, 1, 1) * (CORNER_LIFT * h) * window  # read from below: moves up
    grid = torch.stack([(xs * 2 / (w - 1) - 1).expand(n, h, w), source_y * 2 / (h - 1) - 1], dim=-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)


# ---------------------------------------------------------------- networks

class FiLM(nn.Module):
    """Feature-wise scale and shift from the condition (and identity code)."""

    def __init__(self, cond_dim: int, channels: int):
        super().__init__()
        self.to_scale_shift = nn.Linear(cond_dim, channels * 2)
        nn.init.zeros_(self.to_scale_shift.weight)
        nn.init.zeros_(self.to_scale_shift.bias)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.to_scale_shift(cond).chunk(2, dim=1)
        return h * (1 + scale[:, :, None, None]) + shift[:, :, None, None]


class GeneratorNet(nn.Module):
    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config
        c = config.g_channels
        start = config.image_size // 2 ** (len(c) - 1)
        self.start = start
        in_dim = config.z_dim + config.cond_dim
        self.fc = nn.Linear(in_dim, c[0] * start * start)
        self.blocks = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.films = nn.ModuleList()
        for c_in, c_out in zip(c[:-1], c[1:]):
            self.blocks.append(nn.Conv2d(c_in, c_out, 3, padding=1))
            # Instance norm + FiLM (AdaIN-like): no batch statistics, so the EMA generator needs no
            # re-estimated running stats and each face is independent of the others in its batch.
            self.norms.append(nn.InstanceNorm2d(c_out, affine=False))
            self.films.append(FiLM(in_dim, c_out))
        self.refine = nn.Conv2d(c[-1], c[-1], 3, padding=1)
        self.to_image = nn.Conv2d(c[-1], 1, 3, padding=1)

    def forward(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        zc = torch.cat([z, cond], dim=1)
        h = F.leaky_relu(self.fc(zc).view(len(z), -1, self.start, self.start), 0.2)
        for conv, norm, film in zip(self.blocks, self.norms, self.films):
            h = F.interpolate(h, scale_factor=2, mode=self.config.upsample)
            h = F.leaky_relu(film(norm(conv(h)), zc), 0.2)
        h = F.leaky_relu(self.refine(h), 0.2)
        return torch.tanh(self.to_image(h))  # [-1, 1]


def _down_blocks(channels: tuple[int, ...], sn: bool) -> nn.Sequential:
    wrap = spectral_norm if sn else (lambda m: m)
    layers: list[nn.Module] = []
    c_in = 1
    for i, c_out in enumerate(channels):
        stride = 1 if i == 0 else 2
        layers += [wrap(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
        c_in = c_out
    return nn.Sequential(*layers)


def _summary_width(config: GeneratorConfig) -> int:
    side = config.image_size // 2 ** (len(config.d_channels) - 1)
    return config.d_channels[-1] * (side * side if config.summary == "flatten" else 1)


def _summarise(h: torch.Tensor, summary: str) -> torch.Tensor:
    return h.flatten(1) if summary == "flatten" else h.mean(dim=(2, 3))


class EncoderNet(nn.Module):
    """Face -> identity code z (deterministic; the latent critic shapes their distribution)."""

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.summary = config.summary
        self.features = _down_blocks(config.d_channels, sn=False)
        self.to_z = nn.Linear(_summary_width(config), config.z_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_z(_summarise(self.features(x), self.summary))


class DiscriminatorNet(nn.Module):
    """Realism logit, expression logits and AU intensities of an image."""

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.summary = config.summary
        self.features = _down_blocks(config.d_channels, sn=True)
        width = _summary_width(config)
        self.adv = spectral_norm(nn.Linear(width, 1))
        self.expression = nn.Linear(width, config.num_expressions)
        self.aus = nn.Linear(width, config.num_aus)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = _summarise(self.features(x), self.summary)
        return self.adv(h).squeeze(1), self.expression(h), torch.sigmoid(self.aus(h))


class LatentCriticNet(nn.Module):
    def __init__(self, config: GeneratorConfig, width: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(config.z_dim, width), nn.LeakyReLU(0.2), nn.Linear(width, width),
                                 nn.LeakyReLU(0.2), nn.Linear(width, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).squeeze(1)


# ---------------------------------------------------------------- losses (pure functions)

def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits).mean()


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE over rows with a known target (mask [N] bool)."""
    if not bool(mask.any()):
        return pred.sum() * 0.0
    return F.mse_loss(pred[mask].float(), target[mask].float())


def reconstruction_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    return (fake - real).abs().mean()


def to_generator_range(crops_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W] -> float [N, 1, H, W] in [-1, 1]."""
    return crops_uint8.float().div(127.5).sub(1.0).unsqueeze(1)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [N, 1, H, W] in [-1, 1] -> uint8 [N, H, W]."""
    return images.squeeze(1).add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def latent_cycle_loss(encoder: nn.Module, fake: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """E(G(z, c)) should give back z: the identity must survive whatever condition c asks for."""
    return (encoder(fake) - z).abs().mean()


def random_shift_flip(images: torch.Tensor, generator: torch.Generator, max_shift: float = 0.08) -> torch.Tensor:
    """Differentiable random mirror and shift, so G cannot please the recognizer with pixel-exact patterns."""
    n = len(images)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0).to(images)
    shift = ((torch.rand(n, 2, generator=generator) * 2 - 1) * max_shift).to(images)
    theta = torch.zeros(n, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0], theta[:, 1, 1] = flip, 1.0
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
