"""StyleGen's training losses as named terms (D, R1, G, E) and their sum."""

from __future__ import annotations

import torch

from core.labels import EXPRESSIONS
from core.models import stylegen as sg
from core.training.augment import augment_pair


def augment(images, gen, tc):
    """D's view of a batch of faces, real or fake alike (the train config's augmentation)."""
    return augment_pair(images, gen, tc.shift, tc.augment_color, tc.augment_cutout)


def d_losses(d, real, real_cond, targets, aus, au_known, fake, fake_cond, fake_info, gen, tc,
             diagnostics: dict | None = None) -> dict:
    """D's terms; `diagnostics` (if given) gets ADA's overfitting heuristic r_t = E[sign(D(real))] (Karras et al.
    2020): near 0 while D generalises, towards 1 as it memorises the training faces."""
    real_logit, real_expr, real_au = d(augment(real, gen, tc), real_cond)
    fake_logit, _, _ = d(augment(fake, gen, tc), fake_cond, project=~fake_info["perturbed"])
    if diagnostics is not None:
        diagnostics["d_real_sign"] = torch.sign(real_logit.detach().float()).mean()
    terms = {"d_adv": sg.d_logistic(real_logit, fake_logit),
             "d_expression": tc.d_expression_weight * sg.soft_ce(real_expr, targets)}
    if bool(au_known.any()):
        terms["d_au"] = tc.d_au_weight * sg.au_loss(real_au[au_known], aus[au_known])
    return terms


def r1_losses(d, real, real_cond, tc) -> dict:
    real = real.detach().requires_grad_(True)
    logit, _, _ = d(real, real_cond)  # no augmentation, float32: the penalty is on the data itself
    return {"r1": 0.5 * tc.r1_gamma * tc.r1_every * sg.r1_penalty(real, logit)}


def g_losses(d, fake, info, gen, tc, step: int, recognizer=None) -> dict:
    cond, keep = info["cond"], ~info["perturbed"]
    logit, expr, au = d(augment(fake, gen, tc), cond, project=keep)
    n_expr = len(EXPRESSIONS)
    # A re-drawn AU is one entry in 17 on a quarter of the faces: weighted up, it is what teaches its slider
    au_weight = None if tc.au_redraw_weight == 1 else 1 + (tc.au_redraw_weight - 1) * info["redrawn"].float()
    terms = {"g_adv": sg.g_nonsaturating(logit),
             "g_au": tc.g_au_weight * sg.au_loss(au, cond[:, n_expr + 1:], au_weight)}
    if bool(keep.any()):  # re-drawn AUs may contradict the class: only the AU head judges those faces
        terms["g_expression"] = tc.g_expression_weight * sg.expression_loss(expr[keep], cond[keep, :n_expr])
    if tc.diversity_weight > 0 and info.get("paired") and len(fake) >= 2:
        terms["g_diversity"] = tc.diversity_weight * sg.diversity_hinge(fake, info["real"])
    readable = info["readable"]
    if recognizer is not None and tc.recognizer_weight > 0 and step >= tc.recognizer_start and bool(readable.any()):
        from core.models.generator import random_shift_flip

        cfg = recognizer.config
        x = (random_shift_flip(fake[readable], gen) + 1) / 2
        logits, _ = recognizer((x - cfg.mean) / cfg.std)
        terms["g_recognizer"] = tc.recognizer_weight * sg.recognizer_hinge(logits, info["classes"][readable])
    return terms


def feature_d_losses(fd, real, real_cond, fake, fake_info, gen, tc) -> dict:
    """The feature discriminator's logistic loss (core/models/feature_d.py), on the same augmented views as D's."""
    real_logit = fd(augment(real, gen, tc), real_cond)
    fake_logit = fd(augment(fake, gen, tc), fake_info["cond"], project=~fake_info["perturbed"])
    return {"fd_adv": sg.d_logistic(real_logit, fake_logit)}


def g_feature_loss(fd, fake, info, gen, tc) -> dict:
    """G's non-saturating term against the feature discriminator."""
    logit = fd(augment(fake, gen, tc), info["cond"], project=~info["perturbed"])
    return {"g_feature": tc.feature_d_weight * sg.g_nonsaturating(logit)}


def identity_losses(g, z, cond, other_cond, weight: float, gen: torch.Generator) -> dict:
    """The same people (z) under two conditions, drawn with the same per-pixel noise (fresh noise on one side only
    would count as a change of person and push the noise strengths down): their low-pass faces should agree."""
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    a, b = (g(z, c, noise=torch.Generator().manual_seed(seed)) for c in (cond, other_cond))
    return {"g_identity": weight * sg.identity_hold(a, b)}


def e_losses(e, g_ema, z_prior, fake_cond, real, real_cond, tc) -> dict:
    """E inverts the (frozen) EMA generator: the codes of its faces back, and real faces redrawn.

    The cycle is compared in w (after G's mapping), not in z: directions of z that G ignores
    cannot be read off a face, and an L1 in z stays stuck at predicting their mean.
    """
    with torch.no_grad():
        fake = g_ema(z_prior, fake_cond)
        w_true = g_ema.mapping(z_prior, fake_cond)
    rec = g_ema(e(real), real_cond)  # gradients reach E only: g_ema's parameters are frozen
    return {"e_cycle": tc.e_cycle_weight * sg.latent_cycle(g_ema.mapping(e(fake), fake_cond), w_true),
            "e_rec": tc.e_rec_weight * sg.reconstruction(rec, real)}


def total(terms: dict) -> torch.Tensor:
    return sum(terms.values())

