"""Training of the StyleGen generator (core/models/stylegen.py): library code behind `python -m core.train stylegen`.

One iteration: D step (logistic loss on augmented real and fake faces, projection of the condition,
auxiliary expression / AU heads fitted on real faces), lazy R1 on reals every r1_every steps, G step
(non-saturating loss, D's heads reading the requested condition, an optional recognizer hinge that
only asks for the class to be read), EMA of G, and every e_every steps an E step that inverts the
EMA generator without ever changing it. Every random draw comes from one torch.Generator that is
saved in the checkpoint, so `resume` continues exactly.

Run folder: log.jsonl, last.safetensors (all nets, optimizers, RNG; every checkpoint_minutes, atomic),
generator.safetensors (EMA G + E, every export_minutes; a copy of each as generator_STEP.safetensors) with quick
metrics appended to the log.
"""

from __future__ import annotations

import copy
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from core.models import stylegen as sg
from core.training import stylegen_losses as losses
from core.training.schedule import linear_ramp
from core.training.stylegen_data import Pools, batch_classes, fake_conditions, load_pools, real_batch
from core.training.stylegen_losses import d_losses, e_losses, g_losses, identity_losses, r1_losses, total

__all__ = ["Pools", "Trainer", "fake_conditions", "load_pools", "real_batch", "train"]


@dataclass
class StyleTrainConfig:
    steps: int = 100_000  # stop here (a resumed run may raise it)
    batch_size: int = 32
    lr: float = 0.0025
    beta2: float = 0.99
    r1_gamma: float = 0.1
    r1_every: int = 16  # lazy regularisation (StyleGAN2): the penalty is scaled by the interval
    ema_kimg: float = 5.0  # half-life of the EMA generator in thousands of images
    ema_rampup: float = 0.05  # early on, the half-life is at most this share of the images seen
    d_expression_weight: float = 1.0  # D's heads on real faces
    d_au_weight: float = 10.0
    # D's heads reading fakes, for G (an auxiliary classifier's term pulls G towards faces of its class that are
    # easiest to read, i.e. less varied); the first run (to step 3,169) used 0.5 and 10
    g_expression_weight: float = 0.25
    g_au_weight: float = 5.0
    # hinge, zero once the recognizer reads the class at p >= 0.5; off: at 0.3 (steps 2000-2425) the faces
    # collapsed to one per class and the Frechet distance rose from 11.8 to 17.5
    recognizer_weight: float = 0.0
    recognizer_start: int = 2000  # ... switched on after this step, when G draws faces
    # real and fake faces of a D batch share classes drawn ~ n_k ** class_temper (core/training/stylegen_data.py);
    # class_matched off: the first run's scheme (real faces at FER+'s frequencies, fakes uniform)
    class_matched: bool = True
    class_temper: float = 0.5
    # hinge pulling the mean L1 between two faces of one condition (two z) up to that of two real faces of the
    # class (zero once G's faces of a class are as varied as real ones); the first run collapsed to one face per class
    # (needs class_matched: it makes the pairs)
    diversity_weight: float = 1.0
    onehot_share: float = 0.5  # fake conditions: one-hot expression (the Synthesizer's) vs a real face's votes
    au_perturb: float = 0.25  # share of fake conditions with some AUs re-drawn (teaches AU sliders)
    # G's AU term on those re-drawn entries, relative to the copied ones: at 1 (to step 11,502), D's AU head read
    # 0.09 for AU12 asked at 1 on a neutral face, and the mesh no smile at all; 8 (run gen19) moved 8 AU sliders
    # of 17 instead of 5 but cost realism and readability (weights/README.md)
    au_redraw_weight: float = 1.0
    # L1 between the low-pass (8x8-pooled) faces of one z under two conditions: at 0 (to step 11,502) an expression
    # slider swept 0 -> 1 kept the person on 0.25 of the faces (fear 0.15; core.evaluate_synth same_person_rank1)
    identity_hold_weight: float = 0.0
    # After a warm start the optimizers are fresh, and Adam with beta1 = 0 first moves every weight by a full lr
    # step; the lr ramps up over this many steps instead (0: no ramp, the recipe to run gen21)
    init_lr_rampup: int = 500
    shift: int = 3  # D's augmentation: mirror + shift up to this many pixels
    # ... and DiffAugment's colour (brightness, contrast; 1 = its ranges) and cutout (a square of this share of the
    # side): 0 to step 11,502, whose continuations all drifted worse within 1,200-3,500 steps (D memorising 28k faces?)
    augment_color: float = 0.0
    augment_cutout: float = 0.0
    # A second D on a frozen recognizer's features (core/models/feature_d.py; Projected GAN): G's term against it
    # has this weight (0: no such D, the recipe to step 11,502); its trunk is these weights (never the shipped
    # recognizer, which measures G)
    feature_d_weight: float = 0.0
    feature_d_net: str = "edit_guide"  # a shipped weights name or a .safetensors path
    e_every: int = 4
    e_batch: int = 32
    e_cycle_weight: float = 1.0
    e_rec_weight: float = 1.0
    amp: bool = True  # bf16 autocast where fast (core.device.train_autocast); R1 stays float32
    seed: int = 0
    checkpoint_minutes: float = 5.0
    export_minutes: float = 17.0
    metric_faces: int = 1000
    log_every: int = 50

    def __post_init__(self):
        if self.class_matched and self.batch_size % 2:
            raise ValueError(f"class_matched pairs faces i and i + batch_size // 2: batch_size must be even, "
                             f"not {self.batch_size}")


# ---------------------------------------------------------------- losses (dicts of named terms)


def ema_beta(step: int, tc: StyleTrainConfig) -> float:
    images = step * tc.batch_size
    half_life = min(tc.ema_kimg * 1000, max(images * tc.ema_rampup, 1e-8))
    return 0.5 ** (tc.batch_size / half_life)


@torch.no_grad()
def ema_update(ema, model, beta: float) -> None:
    for a, b in zip(ema.parameters(), model.parameters()):
        a.lerp_(b.detach(), 1.0 - beta)


# ---------------------------------------------------------------- the trainer

class Trainer:
    def __init__(self, mc: sg.StyleGenConfig, tc: StyleTrainConfig, pools: Pools, recognizer=None):
        torch.manual_seed(tc.seed)  # initial weights only; training draws use self.gen
        self.mc, self.tc, self.pools = mc, tc, pools
        self.g, self.d, self.e = sg.StyleGenerator(mc), sg.StyleDiscriminator(mc), sg.StyleEncoder(mc)
        self.g_ema = copy.deepcopy(self.g).eval().requires_grad_(False)
        self.recognizer = recognizer
        betas = (0.0, tc.beta2)
        # Lazy R1: Adam's betas and lr are corrected for the interval (StyleGAN2, appendix B).
        ratio = tc.r1_every / (tc.r1_every + 1)
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=tc.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=tc.lr * ratio, betas=(0.0, tc.beta2 ** ratio))
        self.opt_e = torch.optim.Adam(self.e.parameters(), lr=tc.lr * 0.4, betas=(0.9, tc.beta2))
        self.fd = self.opt_fd = None
        if tc.feature_d_weight > 0:
            from core.models.feature_d import FeatureDiscriminator

            self.fd = FeatureDiscriminator(load_recognizer_net(tc.feature_d_net).net, mc.cond_dim)
            self.opt_fd = torch.optim.Adam(self.fd.trainable(), lr=tc.lr, betas=betas)
        self.gen = torch.Generator().manual_seed(tc.seed)
        self.step = 0
        self.ramp_start = None  # the step a warm start began at (load_warm_start)
        self.base_lrs = {name: [g["lr"] for g in opt.param_groups] for name, opt in self.optimizers().items()}

    def nets(self) -> dict:
        return {"g": self.g, "d": self.d, "e": self.e, "g_ema": self.g_ema, **({"fd": self.fd} if self.fd else {})}

    def optimizers(self) -> dict:
        return {"opt_g": self.opt_g, "opt_d": self.opt_d, "opt_e": self.opt_e,
                **({"opt_fd": self.opt_fd} if self.opt_fd else {})}

    def train_step(self, amp) -> dict:
        tc, gen = self.tc, self.gen
        ramp = 1.0 if self.ramp_start is None else linear_ramp(self.step - self.ramp_start, tc.init_lr_rampup)
        for name, opt in self.optimizers().items():
            for group, base in zip(opt.param_groups, self.base_lrs[name]):
                group["lr"] = base * ramp
        classes = None if not tc.class_matched else batch_classes(self.pools, tc.batch_size, gen, tc.class_temper)
        real, real_cond, targets, aus, known = real_batch(self.pools, tc.batch_size, gen, classes)
        info = fake_conditions(self.pools, tc.batch_size, gen, tc, classes)
        info["real"] = real
        z = torch.randn(tc.batch_size, self.mc.z_dim, generator=gen)
        with amp:
            fake = self.g(z, info["cond"], noise=gen)  # one forward feeds both steps
            diagnostics = {}
            d_terms = d_losses(self.d, real, real_cond, targets, aus, known, fake.detach(), info["cond"], info, gen, tc,
                               diagnostics)
        self.opt_d.zero_grad(set_to_none=True)
        total(d_terms).backward()
        self.opt_d.step()
        if self.step % tc.r1_every == 0:
            r1_terms = r1_losses(self.d, real, real_cond, tc)
            self.opt_d.zero_grad(set_to_none=True)
            total(r1_terms).backward()
            self.opt_d.step()
            d_terms.update(r1_terms)
        if self.fd is not None:
            d_terms.update(self.fd_step(real, real_cond, fake.detach(), info, amp))
        self.d.requires_grad_(False)
        self._fd_trainable(False)
        with amp:
            g_terms = g_losses(self.d, fake, info, gen, tc, self.step, self.recognizer)
            if self.fd is not None:
                g_terms.update(losses.g_feature_loss(self.fd, fake, info, gen, tc))
            if tc.identity_hold_weight > 0:
                q = max(1, tc.batch_size // 4)  # a quarter of the batch's people under conditions of their own
                g_terms.update(identity_losses(self.g, z[:q], info["cond"][:q],
                                               fake_conditions(self.pools, q, gen, tc)["cond"], tc.identity_hold_weight, gen))
        self.opt_g.zero_grad(set_to_none=True)
        total(g_terms).backward()
        self.opt_g.step()
        self.d.requires_grad_(True)
        self._fd_trainable(True)
        ema_update(self.g_ema, self.g, ema_beta(self.step, tc))
        terms = {**d_terms, **g_terms, **diagnostics}
        if self.step % tc.e_every == 0:
            terms.update(self.e_step(amp))
        self.step += 1
        return {k: float(v.detach()) for k, v in terms.items()}

    def fd_step(self, real, real_cond, fake, info, amp) -> dict:
        with amp:
            terms = losses.feature_d_losses(self.fd, real, real_cond, fake, info, self.gen, self.tc)
        self.opt_fd.zero_grad(set_to_none=True)
        total(terms).backward()
        self.opt_fd.step()
        return terms

    def _fd_trainable(self, flag: bool) -> None:
        if self.fd is not None:
            for p in self.fd.trainable():
                p.requires_grad_(flag)

    def e_step(self, amp) -> dict:
        tc, gen = self.tc, self.gen
        real, real_cond, _, _, _ = real_batch(self.pools, tc.e_batch // 2, gen)
        info = fake_conditions(self.pools, tc.e_batch, gen, tc)
        z = torch.randn(tc.e_batch, self.mc.z_dim, generator=gen)
        with amp:
            terms = e_losses(self.e, self.g_ema, z, info["cond"], real, real_cond, tc)
        self.opt_e.zero_grad(set_to_none=True)
        total(terms).backward()
        self.opt_e.step()
        return terms

    # -- state
    def state(self) -> tuple[dict, dict]:
        from core.checkpoint import model_tensors
        from core.training.run_folder import flatten_optimizer

        tensors, meta = {}, {}
        for name, net in self.nets().items():
            tensors.update(model_tensors(name, net))
        for name, opt in self.optimizers().items():
            t, m = flatten_optimizer(opt)
            tensors.update({f"{name}.{k}": v for k, v in t.items()})
            meta[name] = m
        tensors["rng"] = self.gen.get_state()
        return tensors, {**meta, "step": self.step, "ramp_start": self.ramp_start}

    def load_state(self, tensors: dict, meta: dict) -> None:
        from core.checkpoint import strip_prefix
        from core.models.stylegen import load_generator_state
        from core.training.run_folder import unflatten_optimizer

        for name, net in self.nets().items():
            if name in ("g", "g_ema"):  # a run folder from before the noise inputs gets them at strength 0
                load_generator_state(net, strip_prefix(tensors, name))
            else:
                net.load_state_dict(strip_prefix(tensors, name))
        for name, opt in self.optimizers().items():
            unflatten_optimizer(opt, strip_prefix(tensors, name), meta[name])
        self.gen.set_state(tensors["rng"])
        self.step = int(meta["step"])
        self.ramp_start = meta.get("ramp_start")


# ---------------------------------------------------------------- the run: checkpoints, exports, log

def log_line(out: Path, record: dict) -> None:
    import json

    line = json.dumps(record)
    print(line, flush=True)
    with open(out / "log.jsonl", "a") as f:
        f.write(line + "\n")


def save_checkpoint(path: Path, trainer: Trainer) -> None:
    from core.weights import FORMAT_VERSION, save_safetensors

    tensors, meta = trainer.state()
    save_safetensors(path, tensors, {"version": FORMAT_VERSION, "model_config": trainer.mc.to_dict(),
                                     "train_config": asdict(trainer.tc), "class_aus": trainer.pools.class_aus, **meta})


def export(path: Path, trainer: Trainer, extra: dict | None = None) -> None:
    """Inference file: EMA G and E in float32, config and typical AUs as metadata (Synthesizer-ready)."""
    from core.checkpoint import model_tensors

    tensors = {**model_tensors("g", trainer.g_ema), **model_tensors("e", trainer.e)}
    write_generator(path, tensors, {"model_config": trainer.mc.to_dict(), "class_aus": trainer.pools.class_aus,
                                     "step": trainer.step, "train_config": asdict(trainer.tc)}, extra)


def write_generator(path, tensors: dict, info: dict, extra: dict | None = None) -> None:
    """The inference file's layout, shared by export() and generator_from_checkpoint()."""
    from core.weights import FORMAT_VERSION, save_safetensors

    save_safetensors(path, tensors, {"kind": "generator", "version": FORMAT_VERSION, "config": info["model_config"],
                                     "class_aus": info["class_aus"], "step": info["step"],
                                     "train_config": info["train_config"], **(extra or {})})


def restore(out: Path, mc: sg.StyleGenConfig, tc: StyleTrainConfig, resume: bool, overrides: tuple = ()):
    """Configs and state of OUT/last.safetensors on resume: the stored train config wins, except
    `steps` and the fields named in overrides (a deliberate change of a loss weight mid-run)."""
    from core.weights import read_safetensors

    last = out / "last.safetensors"
    if not (resume and last.is_file()):
        return mc, tc, None, None
    tensors, meta = read_safetensors(last)
    stored = {**meta["train_config"], **{k: getattr(tc, k) for k in ("steps", *overrides)}}
    return sg.StyleGenConfig.from_dict(meta["model_config"]), StyleTrainConfig(**stored), tensors, meta


def load_recognizer_net(path=None):
    """A recognizer for training on CPU, frozen: the shipped one, or a weights file or shipped name (edit_guide)."""
    from core.recognizer import Recognizer

    named = path is not None and not str(path).endswith(".safetensors")
    recognizer = (Recognizer.load(str(path), device="cpu", runtime="torch") if named
                  else Recognizer.load(path=path, device="cpu"))
    recognizer.net.eval().requires_grad_(False)
    return recognizer


def train(data_dir, out_dir, au_cache=None, model_config: sg.StyleGenConfig | None = None,
          train_config: StyleTrainConfig | None = None, resume: bool = False, recognizer_path=None,
          metrics: bool = True, overrides: tuple = (), init=None) -> dict:
    """Train or resume; returns {"step": ..., "seconds": ...}. Stops at train_config.steps.
    overrides: train-config fields that train_config changes on resume (see restore).
    init: a warm start (export_warm_start) to begin from when OUT holds no checkpoint to resume."""
    from core.device import bf16_is_fast, train_autocast
    from core.training.stylegen_monitor import QuickMetrics

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mc, tc, state, meta = restore(out, model_config or sg.StyleGenConfig(), train_config or StyleTrainConfig(), resume,
                                  overrides)
    pools = load_pools(data_dir, au_cache)
    recognizer = load_recognizer_net(recognizer_path)
    trainer = Trainer(mc, tc, pools, recognizer.net)
    if state is not None:
        trainer.load_state(state, meta)
    elif init is not None:
        from core.training.stylegen_warm_start import load_warm_start

        load_warm_start(trainer, init)
    amp = train_autocast(torch.device("cpu"), tc.amp)
    log_line(out, {"event": "start", "step": trainer.step, "resumed": state is not None, "train": len(pools.images),
                   **{k: getattr(tc, k) for k in overrides},
                   "params_g": sg.parameter_count(trainer.g), "params_d": sg.parameter_count(trainer.d),
                   "params_e": sg.parameter_count(trainer.e), "threads": torch.get_num_threads(),
                   "bf16": tc.amp and bf16_is_fast(torch.device("cpu")), "time": time.strftime("%H:%M:%S")})
    quick = QuickMetrics(data_dir, recognizer, tc.metric_faces) if metrics else None
    started = last_save = last_export = time.time()
    running, first = {}, trainer.step
    stop = _stop_on_sigterm()
    while trainer.step < tc.steps and not stop:
        for k, v in trainer.train_step(amp).items():
            running.setdefault(k, []).append(v)
        if trainer.step % tc.log_every == 0:
            elapsed = time.time() - started
            log_line(out, {"event": "step", "step": trainer.step, **{k: round(float(np.mean(v)), 4)
                                                                      for k, v in running.items()},
                           "steps_per_s": round((trainer.step - first) / elapsed, 3), "elapsed_s": round(elapsed)})
            running = {}
        if time.time() - last_save > tc.checkpoint_minutes * 60:
            save_checkpoint(out / "last.safetensors", trainer)
            last_save = time.time()
        if time.time() - last_export > tc.export_minutes * 60:
            export_and_measure(out, trainer, quick)
            last_export = time.time()
    save_checkpoint(out / "last.safetensors", trainer)
    export_and_measure(out, trainer, quick)
    return {"step": trainer.step, "seconds": round(time.time() - started, 1)}


def _stop_on_sigterm() -> list:
    """A list that becomes non-empty on SIGTERM: the loop then ends with a checkpoint, not mid-step."""
    import signal
    import threading

    flag: list = []
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: flag.append(True))
    return flag


def export_and_measure(out: Path, trainer: Trainer, quick) -> None:
    export(out / "generator.safetensors", trainer)
    if quick is None:
        return
    record = {"event": "metrics", "step": trainer.step, **quick(trainer)}
    export(out / "generator.safetensors", trainer, {"quick_metrics": record})
    # every measured export kept under its step (5-6 MB each): the monitor is noisy, and the best step of a run
    # is often not its last (run gen23's best was overwritten by the next export before it could be measured)
    shutil.copyfile(out / "generator.safetensors", out / f"generator_{trainer.step:06d}.safetensors")
    log_line(out, record)
    from core.synthesizer import Synthesizer
    from core.training.stylegen_monitor import sample_grid

    synth = Synthesizer(trainer.g_ema, trainer.e, trainer.pools.class_aus, torch.device("cpu"))
    sample_grid(out / f"sample_{trainer.step:06d}.png", synth)
