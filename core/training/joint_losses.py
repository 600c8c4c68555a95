"""The joint loop's losses (core.training.joint): pure functions that return their **named terms**.

A step of the joint loop adds up, for R and G together (one backward pass: the synthetic terms flow
into G through its faces),

    real   recognizer_loss on the real rows (FER+ soft targets, plus the FER2013 head)
    synth  soft cross-entropy of the kept synthetic rows against their pseudo-label targets
    intra  intra_class_loss of the kept synthetic features to the real class means (RDBP: real anchors fixed)
    adv    G's non-saturating adversarial loss against D, so G stays realistic

weighted by JointConfig's synth_weight, intra_weight and adv_weight (`weighted_sum`), and, for D on its
own, the logistic loss `d`. A term that does not apply to a step is absent from the dict (no zero
placeholder): the run's history records name exactly the terms that were trained on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from core.labels import EXPRESSIONS
from core.models.generator import d_logistic_loss, g_nonsaturating_loss, to_generator_range
from core.models.recognizer import recognizer_loss, soft_cross_entropy

WEIGHTED_TERMS = ("synth", "intra", "adv")  # added to "real" in this order, each times its weight


def intra_class_loss(real_features: torch.Tensor, real_labels: torch.Tensor, synth_features: torch.Tensor,
                     synth_labels: torch.Tensor, rdbp: bool = True, centres: torch.Tensor | None = None
                     ) -> torch.Tensor:
    """Mean squared distance of each (L2-normalised) synthetic feature to the real mean of its class.

    Features are normalised first, so R cannot lower the loss by shrinking every feature, and the
    loss weight does not depend on the feature scale.

    rdbp=True (real-data-guided back-propagation): the real anchors carry no gradient, so only the
    synthetic branch is pulled. Classes with no real face in the batch use `centres` (running real
    means) when given, else are skipped.
    """
    real_features = F.normalize(real_features, dim=1)
    synth_features = F.normalize(synth_features, dim=1)
    losses = []
    for k in synth_labels.unique():
        real_k = real_features[real_labels == k]
        if len(real_k):
            anchor = real_k.mean(dim=0)
        elif centres is not None:
            anchor = F.normalize(centres[k], dim=0)
        else:
            continue
        if rdbp:
            anchor = anchor.detach()
        losses.append((synth_features[synth_labels == k] - anchor).pow(2).sum(dim=1).mean())
    if not losses:
        return synth_features.sum() * 0.0
    return torch.stack(losses).mean()


def pseudo_label_targets(ema_probs: torch.Tensor, requested: torch.Tensor, mode: str, threshold: float
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets and keep-mask for synthetic faces, from an EMA recognizer's reading of them (SynFER).

    none: the requested class. filter: the requested class, dropping faces whose requested class the
    EMA recognizer believes less than `threshold`. rectify: filter, then mix the requested class
    with the EMA recognizer's distribution half and half.
    """
    onehot = F.one_hot(requested, len(EXPRESSIONS)).float()
    keep = torch.ones(len(requested), dtype=torch.bool, device=requested.device)
    if mode == "none":
        return onehot, keep
    belief = (ema_probs * onehot).sum(dim=1)
    keep = belief >= threshold
    if mode == "filter":
        return onehot, keep
    return 0.5 * onehot + 0.5 * ema_probs, keep


def recognition_losses(features: torch.Tensor, logits: torch.Tensor, fer2013_logits: torch.Tensor | None,
                       real_targets: torch.Tensor, fer2013_labels: torch.Tensor | None = None,
                       requested: torch.Tensor | None = None, synth_targets: torch.Tensor | None = None,
                       keep: torch.Tensor | None = None, intra: bool = False, rdbp: bool = True,
                       centres: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """R's terms on one forward pass over [real; synthetic] faces: the first len(real_targets) rows are real.

    "real" always; with synthetic rows (requested, synth_targets and keep given, e.g. from
    pseudo_label_targets), "synth" when any row is kept, and "intra" too when `intra` is set.
    """
    n_real = len(real_targets)
    terms = {"real": recognizer_loss(logits[:n_real], fer2013_logits[:n_real] if fer2013_logits is not None else None,
                                     real_targets, fer2013_labels)}
    if requested is None:
        return terms
    kept_features, kept_logits, kept_classes = features[n_real:][keep], logits[n_real:][keep], requested[keep]
    if len(kept_features):
        terms["synth"] = soft_cross_entropy(kept_logits, synth_targets[keep])
        if intra:
            terms["intra"] = intra_class_loss(features[:n_real], real_targets.argmax(dim=1), kept_features,
                                              kept_classes, rdbp, centres)
    return terms


def generator_adversarial_losses(discriminator: torch.nn.Module, fake: torch.Tensor, autocast) -> dict[str, torch.Tensor]:
    """"adv": G's non-saturating loss on D's realism logits of its faces (generator range [-1, 1])."""
    with autocast:
        return {"adv": g_nonsaturating_loss(discriminator(fake)[0].float())}


def discriminator_losses(discriminator: torch.nn.Module, real_uint8: torch.Tensor, fake: torch.Tensor
                         ) -> dict[str, torch.Tensor]:
    """"d": D's logistic loss, real uint8 faces against G's faces (detached: this term never reaches G)."""
    real_logits = discriminator(to_generator_range(real_uint8))[0]
    fake_logits = discriminator(fake.detach())[0]
    return {"d": d_logistic_loss(real_logits.float(), fake_logits.float())}


def weighted_sum(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """terms["real"] + weights[name] * terms[name] for the WEIGHTED_TERMS present, added in that order."""
    loss = terms["real"]
    for name in WEIGHTED_TERMS:
        if name in terms:
            loss = loss + weights[name] * terms[name]
    return loss
