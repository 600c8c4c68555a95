"""Joint synthesis-recognition learning (FESGAN stage 2) with real-data-guided back-propagation,
and SynFER's pseudo-label rectification.

The recognizer R learns from real faces and from faces the generator G draws for requested
expressions. The classification loss on synthetic faces flows into G too (G learns to draw what R
can learn from), G keeps its adversarial loss against D so it stays realistic, and an intra-class
loss pulls the features of synthetic faces of a class towards the features of real faces of that
class. With RDBP the real features are fixed anchors (stop-gradient): only the synthetic branch
moves, so the real-data features are not dragged towards the synthetic bias.

The loss terms are in core.training.joint_losses; here a step draws the batches, adds the terms up
and takes the R(+G) and D steps, and run_joint is the loop around the steps.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from core.device import train_autocast
from core.evaluation.recognition import evaluate_crops
from core.labels import EXPRESSIONS
from core.models.generator import make_condition
from core.training.joint_losses import (
    discriminator_losses,
    generator_adversarial_losses,
    intra_class_loss,
    pseudo_label_targets,
    recognition_losses,
    weighted_sum,
)

__all__ = ["PSEUDO_LABEL_MODES", "JointConfig", "JointState", "intra_class_loss", "pseudo_label_targets", "run_joint"]

PSEUDO_LABEL_MODES = ("none", "filter", "rectify")


@dataclass
class JointConfig:
    steps: int = 1000  # the defaults are `python -m core.train joint`'s; the Fine-tune tab's: finetune.FINE_TUNE
    batch_real: int = 32
    batch_synth: int = 32
    lr_recognizer: float = 0.005  # SGD with momentum, cosine-decayed to 0 over the steps
    lr_generator: float = 5e-5  # Adam
    weight_decay: float = 5e-4
    synth_weight: float = 1.0  # classification loss on synthetic faces (R, and G when update_generator)
    intra_weight: float = 0.05  # intra-class loss (0: off)
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



@dataclass
class _Run:
    """What one run_joint call sets up (`_setup`) and its steps share."""
    r: torch.nn.Module
    r_ema: torch.nn.Module  # reads the synthetic faces for their pseudo-labels
    frozen: torch.nn.Module  # R's first config.frozen_stages stages
    g: torch.nn.Module | None
    d: torch.nn.Module | None
    use_synth: bool
    update_g: bool
    opt_r: torch.optim.Optimizer
    opt_g: torch.optim.Optimizer | None
    opt_d: torch.optim.Optimizer | None
    gen: torch.Generator  # every random draw of the loop, in a fixed order
    x_all: torch.Tensor  # uint8 [N, H, W]
    t_all: torch.Tensor  # [N, 8]
    y7_all: torch.Tensor | None
    typical: torch.Tensor | None  # [8, num_aus] each class's typical AUs
    centres: torch.Tensor  # [8, embed_dim] running means of the real features
    autocast: torch.autocast
    device: torch.device


@dataclass
class _RealBatch:
    index: torch.Tensor  # rows of x_all
    x: torch.Tensor  # augmented, normalised R input
    targets: torch.Tensor
    labels: torch.Tensor  # the targets' top class
    fer2013: torch.Tensor | None


@dataclass
class _SyntheticBatch:
    x_gen: torch.Tensor  # G's faces in the generator range (with G's graph on G steps)
    requested: torch.Tensor
    targets: torch.Tensor  # pseudo-label targets
    keep: torch.Tensor


def _setup(state: JointState, images: np.ndarray, soft_targets: np.ndarray, config: JointConfig,
           fer2013_labels: np.ndarray | None, device: torch.device) -> _Run:
    """Modes, frozen parameters, optimisers, data tensors and the seeded generator of a run."""
    r = state.recognizer.to(device).train()
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
    typical = torch.tensor(np.array([state.class_aus.get(name, [0.0] * (g.config.num_aus if g else 0))
                                     for name in EXPRESSIONS], np.float32)) if use_synth else None
    return _Run(
        r, r_ema, frozen, g, d, use_synth, update_g, opt_r, opt_g, opt_d,
        gen=torch.Generator().manual_seed(config.seed),
        x_all=torch.from_numpy(np.ascontiguousarray(images)),
        t_all=torch.from_numpy(np.ascontiguousarray(soft_targets, dtype=np.float32)),
        y7_all=torch.from_numpy(fer2013_labels.astype(np.int64)) if fer2013_labels is not None else None,
        typical=typical, centres=torch.zeros(len(EXPRESSIONS), r.config.embed_dim, device=device),
        autocast=train_autocast(device, config.amp), device=device)


def _to_recognizer(run: _Run, x_gen: torch.Tensor) -> torch.Tensor:
    """Generator range [-1, 1] -> R's input."""
    return ((x_gen + 1) / 2 - run.r.config.mean) / run.r.config.std


def _real_batch(run: _Run, config: JointConfig) -> _RealBatch:
    from core.training.augment import augment_batch

    index = torch.randint(0, len(run.x_all), (min(config.batch_real, len(run.x_all)),), generator=run.gen)
    x = augment_batch(run.x_all[index].float().div(255).unsqueeze(1), run.gen, config.augment).to(run.device)
    x = (x - run.r.config.mean) / run.r.config.std
    targets = run.t_all[index].to(run.device)
    fer2013 = run.y7_all[index].to(run.device) if run.y7_all is not None else None
    return _RealBatch(index, x, targets, targets.argmax(dim=1), fer2013)


def _synthetic_batch(run: _Run, config: JointConfig, g_step: bool) -> _SyntheticBatch:
    """Faces G draws for random requested classes, intensities and AUs, with the EMA recognizer's pseudo-labels."""
    n, typical = config.batch_synth, run.typical
    requested = torch.randint(0, len(EXPRESSIONS), (n,), generator=run.gen)
    intensity = torch.rand(n, generator=run.gen) * (1 - config.intensity_low) + config.intensity_low
    aus = (typical[requested] + 0.1 * torch.randn(n, typical.shape[1], generator=run.gen)).clamp(0, 1)
    cond = make_condition(F.one_hot(requested, len(EXPRESSIONS)).float(), intensity, aus).to(run.device)
    z = torch.randn(n, run.g.config.z_dim, generator=run.gen).to(run.device)
    with torch.set_grad_enabled(g_step), run.autocast:
        x_gen = run.g(z, cond).float()
    requested = requested.to(run.device)
    with torch.no_grad():
        ema_probs = run.r_ema(_to_recognizer(run, x_gen.detach()))[0].float().softmax(dim=1)
    targets, keep = pseudo_label_targets(ema_probs, requested, config.pseudo_labels, config.pseudo_threshold)
    return _SyntheticBatch(x_gen, requested, targets, keep)


def _recognize(run: _Run, real: _RealBatch, synth: _SyntheticBatch | None):
    """One forward pass of R over [real; synthetic] faces: (float features, logits, FER2013 logits or None)."""
    x_in = torch.cat([real.x, _to_recognizer(run, synth.x_gen)]) if synth is not None else real.x
    with run.autocast:
        features = run.r.embedding(x_in.contiguous(memory_format=torch.channels_last))
        logits8 = run.r.head(features)
        logits7 = run.r.fer2013_head(features) if run.r.fer2013_head is not None else None
    return features.float(), logits8, logits7


def _losses(run: _Run, config: JointConfig, real: _RealBatch, synth: _SyntheticBatch | None, forward,
            g_step: bool, intra_on: bool) -> dict[str, torch.Tensor]:
    """The step's named terms (core.training.joint_losses): real, synth, intra, adv."""
    features, logits8, logits7 = forward
    synthetic = {} if synth is None else dict(requested=synth.requested, synth_targets=synth.targets, keep=synth.keep)
    terms = recognition_losses(features, logits8, logits7, real.targets, real.fer2013, **synthetic, intra=intra_on,
                               rdbp=config.rdbp, centres=run.centres)
    if synth is not None and g_step and run.d is not None and config.adv_weight > 0:
        terms.update(generator_adversarial_losses(run.d, synth.x_gen, run.autocast))
    return terms


def _record(step: int, config: JointConfig, terms: dict, accuracy: torch.Tensor, synth: _SyntheticBatch | None
            ) -> dict:
    """The history record of a step (the first also carries the resolved config, for the run's log)."""
    record = {"step": step + 1, **({"config": asdict(config)} if step == 0 else {}),
              "loss_real": float(terms["real"].detach()), "acc_real": float(accuracy)}
    for name in ("synth", "intra"):
        if name in terms:
            record[f"loss_{name}"] = float(terms[name].detach())
    if synth is not None:
        record["kept"] = float(synth.keep.float().mean())
    if "adv" in terms:
        record["loss_adv"] = float(terms["adv"].detach())
    return record


def _step_recognizer_and_generator(run: _Run, loss: torch.Tensor, g_step: bool) -> None:
    """R step, and on G steps the G step: one backward pass, since the synthetic terms train both."""
    run.opt_r.zero_grad(set_to_none=True)
    if g_step:
        run.opt_g.zero_grad(set_to_none=True)
    loss.backward()
    run.opt_r.step()
    if g_step:
        run.opt_g.step()


def _step_discriminator(run: _Run, real: _RealBatch, synth: _SyntheticBatch) -> None:
    """D step: D keeps judging realism so G cannot drift into adversarial patterns."""
    loss_d = discriminator_losses(run.d, run.x_all[real.index].to(run.device), synth.x_gen)["d"]
    run.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    run.opt_d.step()


def _update_centres(run: _Run, features: torch.Tensor, labels: torch.Tensor) -> None:
    with torch.no_grad():
        real_features = features.detach()
        for k in labels.unique():
            run.centres[k] = 0.9 * run.centres[k] + 0.1 * real_features[labels == k].mean(dim=0)


def _train_step(run: _Run, config: JointConfig, step: int) -> dict:
    """One step of the joint loop; returns its history record (without held-out accuracy and time)."""
    from core.training.schedule import ema_update

    # The decay makes the last step's recognizer a settled one (a constant rate leaves it noisy).
    for group in run.opt_r.param_groups:
        group["lr"] = config.lr_recognizer * 0.5 * (1 + math.cos(math.pi * step / config.steps))
    real = _real_batch(run, config)
    # Before generator_start, and between G updates, G is a frozen source of synthetic faces.
    g_step = run.update_g and step >= config.generator_start and \
        (step - config.generator_start) % config.generator_every == 0
    intra_on = config.intra_weight > 0 and step >= config.generator_start
    synth = _synthetic_batch(run, config, g_step) if run.use_synth else None
    forward = _recognize(run, real, synth)
    terms = _losses(run, config, real, synth, forward, g_step, intra_on)
    n_real = len(real.x)
    accuracy = (forward[1][:n_real].detach().argmax(dim=1) == real.labels).float().mean()
    record = _record(step, config, terms, accuracy, synth)
    weights = {"synth": config.synth_weight, "intra": config.intra_weight, "adv": config.adv_weight}
    _step_recognizer_and_generator(run, weighted_sum(terms, weights), g_step)
    if g_step and run.opt_d is not None:
        _step_discriminator(run, real, synth)
    _update_centres(run, forward[0][:n_real], real.labels)
    ema_update(run.r_ema, run.r, config.ema_decay)
    return record


def _held_out_accuracy(run: _Run, valid: tuple[np.ndarray, np.ndarray]) -> float:
    accuracy = evaluate_crops(run.r, valid[0], valid[1], run.device)["accuracy"]
    run.frozen.eval()  # evaluate_crops puts the whole net back in training mode; frozen stages stay in eval
    return accuracy


def _finish(run: _Run) -> None:
    """The nets leave in eval mode, R as trainable as it came, G and D frozen."""
    run.r.eval()
    for p in run.frozen.parameters():
        p.requires_grad_(True)
    if run.g is not None:
        run.g.eval()
        for p in run.g.parameters():
            p.requires_grad_(False)
    if run.d is not None:
        run.d.eval()


def run_joint(state: JointState, images: np.ndarray, soft_targets: np.ndarray, config: JointConfig,
              fer2013_labels: np.ndarray | None = None, device: torch.device | str = "cpu", on_step=None,
              should_stop=None, valid: tuple[np.ndarray, np.ndarray] | None = None,
              eval_every: int | None = None) -> JointState:
    """Train state.recognizer (and state.generator) in place for config.steps steps.

    images: uint8 [N, H, W] real faces in FER framing; soft_targets: [N, 8] label distributions.
    on_step(record) is called after each step; should_stop() -> True ends the loop early. Each record
    has the losses and the batch accuracy on real faces ("acc_real"); with valid = (crops, label
    indices), every eval_every steps (default: a tenth of the run) and at the last step also the
    accuracy on those held-out faces ("acc_valid"). The first record also has the run's settings
    ("config": dataclasses.asdict(config)), so a run's log says how it was run.
    """
    device = torch.device(device)
    run = _setup(state, images, soft_targets, config, fer2013_labels, device)
    started = time.time()
    eval_every = eval_every or max(1, config.steps // 10)
    for step in range(config.steps):
        if should_stop is not None and should_stop():
            break
        record = _train_step(run, config, step)
        if valid is not None and len(valid[1]) and ((step + 1) % eval_every == 0 or step + 1 == config.steps):
            record["acc_valid"] = _held_out_accuracy(run, valid)
        record["elapsed_s"] = round(time.time() - started, 2)
        state.history.append(record)
        if on_step is not None:
            on_step(record)
    _finish(run)
    return state
