"""The generator's training losses as named terms: D's step, G's step, and their weighted sum.

Each loss function returns its terms unweighted, so a test can check them one by one; `total` weighs
and adds them in the dict's order, which is part of the float result (the order the trainer always used).
Forward passes run under the caller's autocast context, the loss arithmetic outside it in float32.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.labels import EXPRESSIONS
from core.models.generator import (
    condition_from_targets,
    d_logistic_loss,
    g_nonsaturating_loss,
    latent_cycle_loss,
    masked_mse,
    random_shift_flip,
    reconstruction_loss,
)
from core.models.recognizer import soft_cross_entropy
from core.training.au_regressor import read_aus

FP32 = nullcontext()  # no autocast (the default of the loss functions; reusable)


@dataclass
class GeneratorNets:
    g: nn.Module
    e: nn.Module
    d: nn.Module
    dz: nn.Module  # latent critic
    recognizer: nn.Module  # frozen semantic critic
    au_critic: nn.Module | None = None  # frozen AU regressor, if the run has one

    @property
    def critics(self) -> list[nn.Parameter]:
        """D's and the latent critic's parameters: trained in the D step, frozen in the G step."""
        return list(self.d.parameters()) + list(self.dz.parameters())


@dataclass
class GeneratorBatch:
    x: torch.Tensor  # real faces [N, 1, H, W] in [-1, 1]
    targets: torch.Tensor  # their FER+ vote distributions [N, 8]
    aus: torch.Tensor  # their AUs [N, num_aus] (class-typical where no mesh was found)
    au_known: torch.Tensor  # [N] bool: AUs measured on a mesh
    cond_new: torch.Tensor  # synthetic conditions [N, cond_dim] for the faces G draws from the prior
    typical_aus: torch.Tensor  # [N] bool: cond_new's AUs fit its expression (were not re-drawn)
    z_prior: torch.Tensor  # [N, z_dim] ~ N(0, I)

    @property
    def expr_new(self) -> torch.Tensor:
        return self.cond_new[:, : len(EXPRESSIONS)]


@dataclass
class Fakes:
    z_real: torch.Tensor  # E(x)
    rec: torch.Tensor  # G(E(x), c_real): reconstructions of the real faces
    new: torch.Tensor  # G(z_prior, c_new): new faces


def generate(nets: GeneratorNets, batch: GeneratorBatch, amp=FP32) -> Fakes:
    """The step's fakes, once: D sees them detached, G and E learn through them."""
    with amp:
        z_real = nets.e(batch.x)
        rec = nets.g(z_real, condition_from_targets(batch.targets, batch.aus))
        new = nets.g(batch.z_prior, batch.cond_new)
    return Fakes(z_real, rec, new)


def generator_d_losses(nets: GeneratorNets, batch: GeneratorBatch, fakes: Fakes, amp=FP32
                       ) -> dict[str, torch.Tensor]:
    """D's and the latent critic's terms: realism, D's expression and AU heads on real faces, latent critic."""
    with amp:
        real_adv, real_expr, real_au = nets.d(batch.x)
        fake_adv, _, _ = nets.d(torch.cat([fakes.new, fakes.rec]).detach())
        zr_logits, zp_logits = nets.dz(fakes.z_real.detach()), nets.dz(batch.z_prior)
    return {
        "adversarial": d_logistic_loss(real_adv.float(), fake_adv.float()),
        "expression": soft_cross_entropy(real_expr, batch.targets),
        "au": masked_mse(real_au, batch.aus, batch.au_known),
        "latent": d_logistic_loss(zp_logits.float(), zr_logits.float()),
    }


def generator_g_losses(nets: GeneratorNets, batch: GeneratorBatch, fakes: Fakes, gen: torch.Generator,
                       amp=FP32) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """G's and E's terms (D, the latent critic and the frozen critics only pass gradients through).

    Returns the terms and the recognizer's logits on the typical-AU new faces (None if there are none),
    for the logged accuracy. `gen` draws the critics' random shifts: the recognizer's first, then the AU critic's.
    """
    n, typical = len(batch.x), batch.typical_aus
    any_typical = bool(typical.any())
    with amp:
        adv_all, expr_all, au_all = nets.d(torch.cat([fakes.new, fakes.rec]))
        # The recognizer judges only faces whose AUs fit their expression: on re-drawn AUs
        # ("neutral, but AU12 at 0.9") it would fight the AU condition and G would learn to ignore AUs.
        r_logits = nets.recognizer(to_recognizer(random_shift_flip(fakes.new[typical], gen), nets.recognizer.config)
                                   )[0] if any_typical else None
        z_logits = nets.dz(fakes.z_real)
        z_cycle = latent_cycle_loss(nets.e, fakes.new, batch.z_prior)
        au_read = read_aus(nets.au_critic, random_shift_flip(fakes.new, gen)) if nets.au_critic is not None else None
    zero = torch.zeros((), device=batch.x.device)  # an absent term: adds exactly nothing
    requested_aus = batch.cond_new[:, -nets.g.config.num_aus :]
    expr_new = batch.expr_new[typical]
    # Both expression critics judge only faces whose AUs fit their expression (see above).
    expression_new = soft_cross_entropy(expr_all[:n][typical], expr_new) if any_typical else zero
    terms = {
        "adversarial": g_nonsaturating_loss(adv_all.float()),
        "reconstruction": reconstruction_loss(fakes.rec.float(), batch.x),
        "latent": g_nonsaturating_loss(z_logits.float()),
        "expression": expression_new + soft_cross_entropy(expr_all[n:], batch.targets),
        "au": F.mse_loss(au_all[:n].float(), requested_aus) + masked_mse(au_all[n:], batch.aus, batch.au_known),
        "recognizer": soft_cross_entropy(r_logits, expr_new) if r_logits is not None else zero,
        "cycle": z_cycle.float(),
        "au_critic": F.mse_loss(au_read.float(), requested_aus) if au_read is not None else zero,
    }
    return terms, r_logits


def total(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Sum of weight * term in the terms' order; a term without a weight counts once."""
    loss = None
    for name, term in terms.items():
        weighted = weights[name] * term if name in weights else term
        loss = weighted if loss is None else loss + weighted
    return loss


def to_recognizer(x: torch.Tensor, config) -> torch.Tensor:
    """Generator range [-1, 1] -> the recognizer's normalised input."""
    return ((x + 1) / 2 - config.mean) / config.std
