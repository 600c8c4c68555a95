"""A small StyleGAN2-like conditional generator for 48x48 grey FER faces (issue 15).

    w = mapping([normalised z, embedded condition])      identity and condition enter as one style code
    G: learned 6x6 constant -> modulated 3x3 convs (weight demodulation) at 6, 12, 24, 48 px,
       skip connections through 1x1 to-grey layers; output in [-1, 1] (clamped outside training)
    E: FER-framed crop -> identity z (trained to invert G; it never trains G)
    D: residual conv trunk, minibatch-stddev, realism logit with a projection of the condition,
       plus auxiliary expression / AU heads (fitted on real faces only)

The condition is core.generator's: [expression mix (8), 1 - neutral share (1), AU intensities (17)],
built by make_condition / condition_from_targets, so core.synthesizer.Synthesizer drives G and E
unchanged (see load_synthesizer). Layers use equalised learning rate (weights ~ N(0, 1), scaled at
run time), so Adam's step size means the same thing in every layer. Losses are pure functions below.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.labels import AUS, EXPRESSIONS

ARCH = "stylegen"  # metadata "arch" of exported files: a loader tells these from core.generator's


@dataclass(frozen=True)
class StyleGenConfig:
    image_size: int = 48
    z_dim: int = 64
    w_dim: int = 128
    mapping_layers: int = 4
    mapping_lr_mult: float = 0.1  # slower mapping (StyleGAN uses 0.01 over 25M images; we see ~0.2M)
    g_channels: tuple[int, ...] = (192, 128, 64, 32)  # at 6, 12, 24, 48 px
    d_channels: tuple[int, ...] = (24, 48, 96, 192)  # at 48, 24, 12, 6 px
    e_channels: tuple[int, ...] = (16, 32, 64, 128)  # E ships with G: kept small (10 MB limit)
    num_expressions: int = len(EXPRESSIONS)
    num_aus: int = len(AUS)

    @property
    def cond_dim(self) -> int:
        return self.num_expressions + 1 + self.num_aus

    @property
    def start(self) -> int:
        return self.image_size // 2 ** (len(self.g_channels) - 1)

    def to_dict(self) -> dict:
        return {"arch": ARCH, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, values: dict) -> StyleGenConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in known})


# ---------------------------------------------------------------- equalised-lr layers

class EqLinear(nn.Module):
    def __init__(self, c_in: int, c_out: int, bias_init: float = 0.0, lr_mult: float = 1.0, act: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in) / lr_mult)
        self.bias = nn.Parameter(torch.full((c_out,), float(bias_init) / lr_mult))
        self.scale, self.lr_mult, self.act = lr_mult / math.sqrt(c_in), lr_mult, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight * self.scale, self.bias * self.lr_mult)
        return F.leaky_relu(y, 0.2) * math.sqrt(2) if self.act else y


class EqConv2d(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        self.scale, self.stride, self.pad = 1 / math.sqrt(c_in * kernel * kernel), stride, kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, self.stride, self.pad)


class ModConv(nn.Module):
    """Modulated conv, computed as scale-input / shared conv / demodulate-output.

    Equivalent to StyleGAN2's per-sample weights, but one ordinary conv for the whole batch is far
    faster on CPU than the grouped-conv form.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, w_dim: int, demodulate: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.affine = EqLinear(w_dim, c_in, bias_init=1.0)  # styles start at 1: a plain conv
        self.scale, self.pad, self.demodulate = 1 / math.sqrt(c_in * kernel * kernel), kernel // 2, demodulate

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        style = self.affine(w)  # [N, c_in]
        weight = self.weight * self.scale
        y = F.conv2d(x * style[:, :, None, None], weight, padding=self.pad)
        if self.demodulate:  # unit expected output variance per sample and channel
            energy = style.square() @ weight.square().sum(dim=(2, 3)).t()  # [N, c_out]
            y = y * torch.rsqrt(energy + 1e-8)[:, :, None, None]
        return y + self.bias[None, :, None, None]


# ---------------------------------------------------------------- networks

class MappingNet(nn.Module):
    def __init__(self, config: StyleGenConfig):
        super().__init__()
        self.embed = EqLinear(config.cond_dim, config.z_dim)
        dims = [2 * config.z_dim] + [config.w_dim] * config.mapping_layers
        self.layers = nn.Sequential(*[EqLinear(a, b, lr_mult=config.mapping_lr_mult, act=True)
                                      for a, b in zip(dims[:-1], dims[1:])])

    def forward(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        def unit(v):  # StyleGAN's pixel norm: only directions matter, scale of z or c does not blow up w
            return v * torch.rsqrt(v.square().mean(dim=1, keepdim=True) + 1e-8)

        return self.layers(torch.cat([unit(z), unit(self.embed(cond))], dim=1))


class NoiseInput(nn.Module):
    """StyleGAN's per-pixel noise after a conv, with a learned strength that starts at 0 (files saved before it
    existed load unchanged). Training draws fresh noise (from `gen` when given); inference uses one fixed map
    per layer, so a seed always gives the same face."""

    def __init__(self, side: int, seed: int = 0):
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(()))
        fixed = torch.randn(1, 1, side, side, generator=torch.Generator().manual_seed(1000 * side + seed))
        self.register_buffer("fixed", fixed, persistent=False)

    def forward(self, h: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        if self.training:
            noise = torch.randn(len(h), 1, *h.shape[2:], generator=gen).to(h)
        else:
            noise = self.fixed.to(h)
        return h + self.strength.to(h) * noise


class SynthesisBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, w_dim: int, upsample: bool, side: int):
        super().__init__()
        self.upsample = upsample
        self.conv1 = ModConv(c_in, c_out, 3, w_dim)
        self.conv2 = ModConv(c_out, c_out, 3, w_dim)
        self.noise1, self.noise2 = NoiseInput(side, 1), NoiseInput(side, 2)
        self.to_grey = ModConv(c_out, 1, 1, w_dim, demodulate=False)

    def forward(self, h, img, w, gen=None):
        if self.upsample:
            h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
        h = F.leaky_relu(self.noise1(self.conv1(h, w), gen), 0.2) * math.sqrt(2)
        h = F.leaky_relu(self.noise2(self.conv2(h, w), gen), 0.2) * math.sqrt(2)
        grey = self.to_grey(h, w)
        if img is not None:  # skip architecture: each scale refines the upsampled image
            grey = grey + F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False)
        return h, grey


class StyleGenerator(nn.Module):
    """G(z, cond) -> [N, 1, 48, 48]; the same call signature as core.generator.GeneratorNet."""

    def __init__(self, config: StyleGenConfig):
        super().__init__()
        self.config = config
        c = config.g_channels
        self.mapping = MappingNet(config)
        self.const = nn.Parameter(torch.randn(1, c[0], config.start, config.start))
        sides = [config.start * 2 ** i for i in range(len(c))]
        self.blocks = nn.ModuleList([SynthesisBlock(c[0], c[0], config.w_dim, upsample=False, side=sides[0])] + [
            SynthesisBlock(a, b, config.w_dim, upsample=True, side=s) for a, b, s in zip(c[:-1], c[1:], sides[1:])])

    def synthesize(self, w: torch.Tensor, noise: torch.Generator | None = None) -> torch.Tensor:
        h, img = self.const.expand(len(w), -1, -1, -1), None
        for block in self.blocks:
            h, img = block(h, img, w, noise)
        # No tanh while training (StyleGAN2: linear output); inference stays in the [-1, 1] contract.
        return img if self.training else img.clamp(-1, 1)

    def forward(self, z: torch.Tensor, cond: torch.Tensor, noise: torch.Generator | None = None) -> torch.Tensor:
        """noise: the torch.Generator that training's per-pixel noise is drawn from (exact resume)."""
        return self.synthesize(self.mapping(z, cond), noise)


def load_generator_state(g: StyleGenerator, state: dict) -> None:
    """G's weights from a file; one saved before the noise inputs existed gets them at strength 0 (as new)."""
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    missing, unexpected = g.load_state_dict(state, strict=False)
    if unexpected or any(not k.endswith(".strength") for k in missing):
        from core.errors import WeightsError

        raise WeightsError(f"generator weights do not fit: missing {missing}, unexpected {unexpected}")


class DownBlock(nn.Module):
    """Residual downsampling block (StyleGAN2's D)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = EqConv2d(c_in, c_in, 3)
        self.conv2 = EqConv2d(c_in, c_out, 3)
        self.skip = EqConv2d(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.conv1(x), 0.2) * math.sqrt(2)
        h = F.avg_pool2d(F.leaky_relu(self.conv2(h), 0.2) * math.sqrt(2), 2)
        return (h + self.skip(F.avg_pool2d(x, 2))) / math.sqrt(2)


def _trunk(channels: tuple[int, ...]) -> nn.Module:
    layers = [EqConv2d(1, channels[0], 1)]
    layers += [DownBlock(a, b) for a, b in zip(channels[:-1], channels[1:])]
    return nn.Sequential(*layers)


def _last_side(config: StyleGenConfig, channels: tuple[int, ...]) -> int:
    """The trunk's last feature map side: the image halved once per stage after the first."""
    return config.image_size // 2 ** (len(channels) - 1)


class StyleDiscriminator(nn.Module):
    """D(x, cond) -> (realism logit [N], expression logits [N, 8], AU intensities [N, 17])."""

    def __init__(self, config: StyleGenConfig):
        super().__init__()
        c, side = config.d_channels, _last_side(config, config.d_channels)
        self.trunk = _trunk(c)
        self.final_conv = EqConv2d(c[-1] + 1, c[-1], 3)
        self.fc = EqLinear(c[-1] * side * side, c[-1], act=True)
        self.out = EqLinear(c[-1], 1)
        self.project = EqLinear(config.cond_dim, c[-1])  # projection discriminator (Miyato & Koyama 2018)
        self.expression = EqLinear(c[-1], config.num_expressions)
        self.aus = EqLinear(c[-1], config.num_aus)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x)
        # Minibatch stddev (groups of up to 4): lets D see a lack of variety across faces.
        g = min(4, len(h)) if len(h) % min(4, len(h)) == 0 else 1
        s = h.view(g, -1, *h.shape[1:]).std(dim=0, unbiased=False).mean(dim=(1, 2, 3))  # [N / g]
        s = s.repeat(g).view(-1, 1, 1, 1).expand(-1, 1, *h.shape[2:])
        h = F.leaky_relu(self.final_conv(torch.cat([h, s], dim=1)), 0.2) * math.sqrt(2)
        return self.fc(h.flatten(1))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, project: torch.Tensor | None = None):
        """project [N] bool: rows whose condition enters the realism logit (default all)."""
        h = self.features(x)
        proj = (self.project(cond) * h).sum(dim=1) / math.sqrt(h.shape[1])
        if project is not None:
            proj = proj * project.to(proj)
        return self.out(h).squeeze(1) + proj, self.expression(h), torch.sigmoid(self.aus(h))


class StyleEncoder(nn.Module):
    """FER-framed face [N, 1, 48, 48] in [-1, 1] -> identity code z."""

    def __init__(self, config: StyleGenConfig):
        super().__init__()
        c, side = config.e_channels, _last_side(config, config.e_channels)
        self.trunk = _trunk(c)
        self.to_z = EqLinear(c[-1] * side * side, config.z_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_z(self.trunk(x).flatten(1))


# ---------------------------------------------------------------- losses (pure functions)

def d_logistic(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits.float()).mean()


def r1_penalty(real: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """Squared norm of dD/dx on real images (Mescheder et al. 2018); real must require grad."""
    (grad,) = torch.autograd.grad(real_logits.float().sum(), real, create_graph=True)
    return grad.float().square().sum(dim=(1, 2, 3)).mean()


def soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def expression_loss(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.1) -> torch.Tensor:
    """Soft CE against the requested mix, smoothed: its minimum is a face read with ~(1 - smoothing)
    confidence, not a caricature pushed towards certainty."""
    k = target.shape[1]
    return soft_ce(logits, (1 - smoothing) * target + smoothing / k)


def au_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error; weight [N, K] scales entries (re-drawn AUs count more than copied ones)."""
    se = (pred.float() - target.float()) ** 2
    return se.mean() if weight is None else (se * weight).mean()


def recognizer_hinge(logits: torch.Tensor, classes: torch.Tensor, margin: float = 0.5) -> torch.Tensor:
    """Zero once the recognizer gives the requested class probability >= margin: it rewards reading
    the class, never drawing what the recognizer likes best."""
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, classes[:, None]).squeeze(1)
    return F.relu(math.log(margin) - log_p).mean()


def diversity_hinge(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Batches of pairs (row i with row i + n/2): fake pairs share a condition and differ in z, real pairs share
    a class. Zero once G's pairs differ (mean L1 per pixel, over the batch) at least as much as the real pairs:
    it asks for the variety real faces of a class have, never more (Mao et al. 2019 reward any variety)."""
    half = len(fake) // 2
    spread = (fake[:half].float() - fake[half : 2 * half].float()).abs().mean()
    target = (real[:half].float() - real[half : 2 * half].float()).abs().mean().detach()
    return F.relu(target - spread)


def identity_hold(a: torch.Tensor, b: torch.Tensor, pool: int = 8) -> torch.Tensor:
    """Mean L1 of two batches of faces of the same z under different conditions, each pooled pool x pool: pose,
    hair, lighting and face shape should not change with an expression (its furrows and lips are finer)."""
    return (F.avg_pool2d(a.float(), pool) - F.avg_pool2d(b.float(), pool)).abs().mean()


def latent_cycle(z_pred: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return (z_pred.float() - z.float()).abs().mean()


def reconstruction(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    return (fake.float() - real.float()).abs().mean()


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def is_stylegen_file(path) -> bool:
    """Whether a safetensors file holds a StyleGen generator export (reads only its header; False when the
    file is missing or unreadable, so the caller's own loader reports that)."""
    import json

    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            config = json.loads((f.metadata() or {}).get("config", "{}"))
    except Exception:  # not a file, not safetensors, or metadata not JSON: not ours to judge
        return False
    return isinstance(config, dict) and config.get("arch") == ARCH


def load_synthesizer(path, device: str = "cpu"):
    """A core.synthesizer.Synthesizer around an exported StyleGen file (EMA G + E)."""
    from core.checkpoint import strip_prefix
    from core.errors import WeightsError
    from core.synthesizer import Synthesizer
    from core.weights import read_safetensors

    tensors, meta = read_safetensors(path)
    if meta.get("kind") != "generator" or meta.get("config", {}).get("arch") != ARCH:
        raise WeightsError(f"{path} does not hold {ARCH} generator weights")
    config = StyleGenConfig.from_dict(meta["config"])
    g, e = StyleGenerator(config), StyleEncoder(config)
    load_generator_state(g, strip_prefix(tensors, "g"))
    e.load_state_dict({k: v.float() for k, v in strip_prefix(tensors, "e").items()})
    return Synthesizer(g, e, meta.get("class_aus", {}), torch.device(device), source=str(path), metadata=meta)
