"""Joint synthesis-recognition learning (FESGAN stage 2) with real-data-guided back-propagation,
and SynFER's pseudo-label rectification.

The recognizer R learns from real faces and from faces the generator G draws for requested
expressions. The classification loss on synthetic faces flows into G too (G learns to draw what R
can learn from), G keeps its adversarial loss against D so it stays realistic, and an intra-class
loss pulls the features of synthetic faces of a class towards the features of real faces of that
class. With RDBP the real features are fixed anchors (stop-gradient): only the synthetic branch
moves, so the real-data features are not dragged towards the synthetic bias.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from core.device import train_autocast
from core.evaluation.recognition import evaluate_crops
from core.labels import EXPRESSIONS
from core.models.generator import d_logistic_loss, g_nonsaturating_loss, make_condition, to_generator_range
from core.models.recognizer import recognizer_loss, soft_cross_entropy

PSEUDO_LABEL_MODES = ("none", "filter", "rectify")


@dataclass
class JointConfig:
    steps: int = 300
    batch_real: int = 32
    batch_synth: int = 32
    lr_recognizer: float = 0.005  # SGD with momentum, cosine-decayed to 0 over the steps
    lr_generator: float = 5e-5  # Adam
    weight_decay: float = 5e-4
    synth_weight: float = 1.0  # classification loss on synthetic faces (R, and G when update_generator)
    intra_weight: float = 0.0  # intra-class loss (0: off)
    rdbp: bool = True  # real features are stop-gradient anchors of the intra-class loss
    adv_weight: float = 0.5  # G's adversarial loss, so it stays realistic
    update_generator: bool = True  # False: synthetic faces from a frozen G
    generator_start: int = 0  # G, D and the intra-class loss join in at this step: R first learns from a frozen G
    generator_every: int = 1  # G and D are updated every this many steps (in between G is frozen: cheaper)
    use_synthetic: bool = True  # False: recognizer only
    frozen_stages: int = 0  # R's first N stages keep their trained weights and statistics (cheaper steps)
    pseudo_labels: str = "rectify"  # "none", "filter" or "rectify"
    pseudo_threshold: float = 0.2  # filter: drop synthetic faces whose requested class gets less (EMA R)
    ema_decay: float = 0.99
    intensity_low: float = 0.6
    augment: float = 1.0
    seed: int = 0
    amp: bool = True  # bf16 autocast where the hardware runs it fast (core.device.train_autocast)

    def __post_init__(self):
        if self.pseudo_labels not in PSEUDO_LABEL_MODES:
            raise ValueError(f"pseudo_labels must be one of {PSEUDO_LABEL_MODES}")
        if self.generator_every < 1 or self.generator_start < 0 or self.frozen_stages < 0:
            raise ValueError("generator_every must be >= 1; generator_start and frozen_stages >= 0")


# ---------------------------------------------------------------- losses (pure functions)

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


# ---------------------------------------------------------------- the joint loop

@dataclass
class JointState:
    recognizer: torch.nn.Module  # RecognizerNet
    generator: torch.nn.Module | None = None  # GeneratorNet
    discriminator: torch.nn.Module | None = None
    class_aus: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)

    @classmethod
    def with_synthesizer(cls, recognizer_net, synthesizer) -> JointState:
        """recognizer_net as given; copies of the synthesizer's G and D, which training changes."""
        if synthesizer is None:
            return cls(recognizer_net)
        return cls(recognizer_net, copy.deepcopy(synthesizer.g),
                   copy.deepcopy(synthesizer.d) if synthesizer.d is not None else None,
                   {k: np.asarray(v, float).tolist() for k, v in synthesizer.class_aus.items()})


def run_joint(state: JointState, images: np.ndarray, soft_targets: np.ndarray, config: JointConfig,
              fer2013_labels: np.ndarray | None = None, device: torch.device | str = "cpu", on_step=None,
              should_stop=None, valid: tuple[np.ndarray, np.ndarray] | None = None,
              eval_every: int | None = None) -> JointState:
    """Train state.recognizer (and state.generator) in place for config.steps steps.

    images: uint8 [N, H, W] real faces in FER framing; soft_targets: [N, 8] label distributions.
    on_step(record) is called after each step; should_stop() -> True ends the loop early. Each record
    has the losses and the batch accuracy on real faces ("acc_real"); with valid = (crops, label
    indices), every eval_every steps (default: a tenth of the run) and at the last step also the
    accuracy on those held-out faces ("acc_valid").
    """
    from core.training.augment import augment_batch
    from core.training.schedule import ema_update

    device = torch.device(device)
    r = state.recognizer.to(device).train()
    r_cfg = r.config
    frozen = r.stages(config.frozen_stages).eval()  # eval: their batch-norm statistics stay the trained ones
    for p in frozen.parameters():
        p.requires_grad_(False)
    r_ema = copy.deepcopy(r).eval()
    use_synth = config.use_synthetic and state.generator is not None
    g, d = state.generator, state.discriminator
    update_g = use_synth and config.update_generator
    params_g = []
    if use_synth:
        g.to(device).train(update_g)
        for p in g.parameters():
            p.requires_grad_(update_g)
        params_g = list(g.parameters())
        if d is not None:
            d.to(device).train()
    opt_r = torch.optim.SGD([p for p in r.parameters() if p.requires_grad], lr=config.lr_recognizer, momentum=0.9,
                            nesterov=True, weight_decay=config.weight_decay)
    opt_g = torch.optim.Adam(params_g, lr=config.lr_generator, betas=(0.5, 0.99)) if update_g else None
    opt_d = torch.optim.Adam(d.parameters(), lr=config.lr_generator, betas=(0.5, 0.99)) if update_g and d is not None \
        else None

    gen = torch.Generator().manual_seed(config.seed)
    x_all = torch.from_numpy(np.ascontiguousarray(images))
    t_all = torch.from_numpy(np.ascontiguousarray(soft_targets, dtype=np.float32))
    y7_all = torch.from_numpy(fer2013_labels.astype(np.int64)) if fer2013_labels is not None else None
    typical = torch.tensor(np.array([state.class_aus.get(name, [0.0] * (g.config.num_aus if g else 0))
                                     for name in EXPRESSIONS], np.float32)) if use_synth else None
    centres = torch.zeros(len(EXPRESSIONS), r_cfg.embed_dim, device=device)
    autocast = train_autocast(device, config.amp)
    started = time.time()
    eval_every = eval_every or max(1, config.steps // 10)

    def held_out_accuracy() -> float:
        accuracy = evaluate_crops(r, valid[0], valid[1], device)["accuracy"]
        frozen.eval()  # evaluate_crops puts the whole net back in training mode; frozen stages stay in eval
        return accuracy

    def to_recognizer(x_gen: torch.Tensor) -> torch.Tensor:  # generator range [-1, 1] -> R's input
        return ((x_gen + 1) / 2 - r_cfg.mean) / r_cfg.std

    for step in range(config.steps):
        if should_stop is not None and should_stop():
            break
        # The decay makes the last step's recognizer a settled one (a constant rate leaves it noisy).
        for group in opt_r.param_groups:
            group["lr"] = config.lr_recognizer * 0.5 * (1 + math.cos(math.pi * step / config.steps))
        index = torch.randint(0, len(x_all), (min(config.batch_real, len(x_all)),), generator=gen)
        x_real = augment_batch(x_all[index].float().div(255).unsqueeze(1), gen, config.augment).to(device)
        x_real = (x_real - r_cfg.mean) / r_cfg.std
        t_real = t_all[index].to(device)
        y_real = t_real.argmax(dim=1)
        record = {"step": step + 1}

        # Before generator_start, and between G updates, G is a frozen source of synthetic faces.
        g_step = update_g and step >= config.generator_start and \
            (step - config.generator_start) % config.generator_every == 0
        intra_on = config.intra_weight > 0 and step >= config.generator_start
        if use_synth:
            n = config.batch_synth
            requested = torch.randint(0, len(EXPRESSIONS), (n,), generator=gen)
            intensity = torch.rand(n, generator=gen) * (1 - config.intensity_low) + config.intensity_low
            aus = (typical[requested] + 0.1 * torch.randn(n, typical.shape[1], generator=gen)).clamp(0, 1)
            cond = make_condition(F.one_hot(requested, len(EXPRESSIONS)).float(), intensity, aus).to(device)
            z = torch.randn(n, g.config.z_dim, generator=gen).to(device)
            with torch.set_grad_enabled(g_step), autocast:
                x_synth_gen = g(z, cond).float()
            requested = requested.to(device)
            with torch.no_grad():
                ema_probs = r_ema(to_recognizer(x_synth_gen.detach()))[0].float().softmax(dim=1)
            targets_synth, keep = pseudo_label_targets(ema_probs, requested, config.pseudo_labels,
                                                       config.pseudo_threshold)
            x_in = torch.cat([x_real, to_recognizer(x_synth_gen)])
        else:
            x_in = x_real
        with autocast:
            features = r.embedding(x_in.contiguous(memory_format=torch.channels_last))
            logits8 = r.head(features)
            logits7 = r.fer2013_head(features) if r.fer2013_head is not None else None
        features = features.float()
        nr = len(x_real)
        y7 = y7_all[index].to(device) if y7_all is not None else None
        loss = recognizer_loss(logits8[:nr], logits7[:nr] if logits7 is not None else None, t_real, y7)
        record["loss_real"] = float(loss.detach())
        record["acc_real"] = float((logits8[:nr].detach().argmax(dim=1) == y_real).float().mean())
        if use_synth:
            fs, ls, rs = features[nr:][keep], logits8[nr:][keep], requested[keep]
            if len(fs):
                loss_synth = soft_cross_entropy(ls, targets_synth[keep])
                loss = loss + config.synth_weight * loss_synth
                record["loss_synth"] = float(loss_synth.detach())
                if intra_on:
                    intra = intra_class_loss(features[:nr], y_real, fs, rs, config.rdbp, centres)
                    loss = loss + config.intra_weight * intra
                    record["loss_intra"] = float(intra.detach())
            record["kept"] = float(keep.float().mean())
            if g_step and d is not None and config.adv_weight > 0:
                with autocast:
                    adv = g_nonsaturating_loss(d(x_synth_gen)[0].float())
                loss = loss + config.adv_weight * adv
                record["loss_adv"] = float(adv.detach())
        opt_r.zero_grad(set_to_none=True)
        if g_step:
            opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_r.step()
        if g_step:
            opt_g.step()
        if g_step and opt_d is not None:  # D keeps judging realism so G cannot drift into adversarial patterns
            x_real_gen = x_all[index].to(device)
            real_adv = d(to_generator_range(x_real_gen))[0]
            fake_adv = d(x_synth_gen.detach())[0]
            loss_d = d_logistic_loss(real_adv.float(), fake_adv.float())
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        with torch.no_grad():
            real_features = features[:nr].detach()
            for k in y_real.unique():
                centres[k] = 0.9 * centres[k] + 0.1 * real_features[y_real == k].mean(dim=0)
        ema_update(r_ema, r, config.ema_decay)
        if valid is not None and len(valid[1]) and ((step + 1) % eval_every == 0 or step + 1 == config.steps):
            record["acc_valid"] = held_out_accuracy()
        record["elapsed_s"] = round(time.time() - started, 2)
        state.history.append(record)
        if on_step is not None:
            on_step(record)
    r.eval()
    for p in frozen.parameters():  # the net leaves as trainable as it came
        p.requires_grad_(True)
    if g is not None:
        g.eval()
        for p in g.parameters():
            p.requires_grad_(False)
    if d is not None:
        d.eval()
    return state
