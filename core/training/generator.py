"""Generator training (FESGAN stage 1): E, G, D and the latent critic."""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from core.checkpoint import export_generator, model_tensors, strip_prefix
from core.device import train_autocast
from core.labels import EXPRESSIONS
from core.models.recognizer import soft_cross_entropy
from core.training.au_regressor import load_au_regressor, read_aus
from core.training.data import class_mean_aus, load_au_targets, load_split, trainable_index
from core.training.distributed import average_gradients, broadcast_parameters
from core.training.run_folder import flatten_optimizer, log_line, start_run, unflatten_optimizer
from core.training.schedule import ema_update
from core.weights import FORMAT_VERSION, read_safetensors, save_safetensors


@dataclass
class GeneratorTrainConfig:
    steps: int = 30000
    batch_size: int = 32
    lr: float = 2e-4
    ema_decay: float = 0.999
    rec_weight: float = 10.0  # L1 reconstruction of real faces through E and G
    latent_weight: float = 1.0  # latent critic: E's codes look like N(0, I)
    expression_weight: float = 1.0  # D's expression head on generated faces
    au_weight: float = 20.0  # D's AU head on generated faces
    recognizer_weight: float = 0.1  # the frozen recognizer reads the requested expression (0.3-1: G games it)
    cycle_weight: float = 2.0  # E(G(z, c)) = z: changing the condition keeps the person
    recognizer_warmup: int = 3000  # ramp the recognizer's weight up over this many steps (let G learn faces first)
    au_perturb: float = 0.5  # share of synthetic conditions whose AUs are re-drawn independently
    au_critic: str = ""  # frozen AU regressor (python -m core.train au-regressor); "" = none
    au_critic_weight: float = 0.0  # its MSE between requested and read AUs of generated faces

    def __post_init__(self):
        if bool(self.au_critic) != (self.au_critic_weight > 0):
            raise ValueError("an AU critic needs both a file (au_critic) and a weight > 0 (au_critic_weight)")
    seed: int = 0
    checkpoint_minutes: float = 3.0
    sample_every: int = 1000
    log_every: int = 50
    amp: bool = True


def train_generator(
    data_dir: str | Path,
    out_dir: str | Path,
    au_cache: str | Path | None = None,
    model_config=None,
    train_config: GeneratorTrainConfig | None = None,
    recognizer_path: str | Path | None = None,
    resume: bool = False,
    device: str = "auto",
    init: str | Path | None = None,
) -> dict:
    """Stage 1: E, G, D and the latent critic, with the frozen recognizer as a semantic critic.

    `init` continues from exported generator weights (G, E, D; fresh optimizers and latent critic),
    e.g. a committed work-in-progress checkpoint when the run folder is gone.
    """
    from core.face.aus import consistent_aus
    from core.models.generator import (
        DiscriminatorNet,
        EncoderNet,
        GeneratorConfig,
        GeneratorNet,
        LatentCriticNet,
        condition_from_targets,
        d_logistic_loss,
        g_nonsaturating_loss,
        latent_cycle_loss,
        make_condition,
        masked_mse,
        random_shift_flip,
        reconstruction_loss,
        to_generator_range,
    )
    from core.recognizer import Recognizer

    dev, info, out, mc, tc, state, meta = start_run(
        out_dir, device, model_config or GeneratorConfig(), train_config or GeneratorTrainConfig(), resume,
        keep="steps")
    last_path = out / "last.safetensors"
    torch.manual_seed(tc.seed + info.rank)

    full = load_split(data_dir, "train", mc.image_size)
    aus_full = load_au_targets(data_dir, "train", au_cache, full.images)  # the cache indexes the full split
    keep = trainable_index(full)
    train, aus_np = full.subset(keep), aus_full[keep]
    labels = train.soft_targets.argmax(axis=1)
    class_aus = class_mean_aus(aus_np, labels)
    au_known = torch.from_numpy(np.isfinite(aus_np[:, 0]))
    # Faces without a mesh get their class's typical AUs, not zeros (zeros would teach G to ignore AUs).
    typical = consistent_aus(np.array([class_aus[EXPRESSIONS[k]] for k in labels], np.float32))
    aus = torch.from_numpy(np.where(np.isfinite(aus_np), aus_np, typical)).float()
    images = torch.from_numpy(train.images)
    targets = torch.from_numpy(train.soft_targets)
    by_class = [torch.from_numpy(np.flatnonzero((labels == k) & au_known.numpy())) for k in range(len(EXPRESSIONS))]

    recognizer = Recognizer.load(path=recognizer_path, device=str(dev)) if recognizer_path else Recognizer.load(
        device=str(dev))
    r_net = recognizer.net.eval()
    for p in r_net.parameters():
        p.requires_grad_(False)
    r_cfg = r_net.config
    au_net = load_au_regressor(tc.au_critic, dev) if tc.au_critic and tc.au_critic_weight > 0 else None

    init_tensors = None
    if init is not None and not state:
        init_tensors, init_meta = read_safetensors(init)
        mc = GeneratorConfig.from_dict(init_meta["config"])
    g, e, d, dz = GeneratorNet(mc).to(dev), EncoderNet(mc).to(dev), DiscriminatorNet(mc).to(dev), LatentCriticNet(mc).to(dev)
    if init_tensors is not None:
        for prefix, net in (("g", g), ("e", e), ("d", d)):
            net.load_state_dict(strip_prefix(init_tensors, prefix))
        step_offset = int(init_meta.get("step", 0))
    broadcast_parameters((g, e, d, dz), info)
    g_ema, e_ema = copy.deepcopy(g).eval(), copy.deepcopy(e).eval()
    for p in list(g_ema.parameters()) + list(e_ema.parameters()):
        p.requires_grad_(False)
    opt_ge = torch.optim.Adam(list(g.parameters()) + list(e.parameters()), lr=tc.lr, betas=(0.5, 0.99))
    opt_d = torch.optim.Adam(list(d.parameters()) + list(dz.parameters()), lr=tc.lr, betas=(0.5, 0.99))
    step = 0
    if state:
        for prefix, net in (("g", g), ("e", e), ("d", d), ("dz", dz), ("g_ema", g_ema), ("e_ema", e_ema)):
            net.load_state_dict(strip_prefix(state, prefix))
        unflatten_optimizer(opt_ge, strip_prefix(state, "opt_ge"), meta["opt_ge"])
        unflatten_optimizer(opt_d, strip_prefix(state, "opt_d"), meta["opt_d"])
        step = meta["step"]
    elif init_tensors is not None:
        step = step_offset  # keeps the recognizer warm-up and EMA schedule where the exported run was

    def to_recognizer(x):  # generator range [-1, 1] -> recognizer's normalised input
        return ((x + 1) / 2 - r_cfg.mean) / r_cfg.std

    def synthetic_conditions(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        k = torch.randint(0, len(EXPRESSIONS), (n,), generator=gen)
        intensity = torch.rand(n, generator=gen) * 0.7 + 0.3
        expression = F.one_hot(k, len(EXPRESSIONS)).float()
        au = torch.zeros(n, mc.num_aus)
        for i, cls in enumerate(k.tolist()):
            pool = by_class[cls]
            if len(pool):
                au[i] = aus[pool[torch.randint(0, len(pool), (1,), generator=gen)]]
        perturbed = torch.rand(n, generator=gen) < tc.au_perturb
        redraw = (torch.rand(n, mc.num_aus, generator=gen) < 0.3) & perturbed[:, None]
        au = torch.where(redraw, torch.rand(n, mc.num_aus, generator=gen), au)
        cond = make_condition(expression, intensity, consistent_aus(au))
        return cond, cond[:, : len(EXPRESSIONS)], ~perturbed

    def save_checkpoint():
        if not info.is_main:
            return
        tensors = {}
        for prefix, net in (("g", g), ("e", e), ("d", d), ("dz", dz), ("g_ema", g_ema), ("e_ema", e_ema)):
            tensors.update(model_tensors(prefix, net))
        ge_t, ge_m = flatten_optimizer(opt_ge)
        d_t, d_m = flatten_optimizer(opt_d)
        tensors.update({f"opt_ge.{k}": v for k, v in ge_t.items()})
        tensors.update({f"opt_d.{k}": v for k, v in d_t.items()})
        save_safetensors(last_path, tensors, {"version": FORMAT_VERSION, "model_config": mc.to_dict(),
                                              "train_config": asdict(tc), "opt_ge": ge_m, "opt_d": d_m, "step": step})
        export_generator(out / "generator.safetensors", g_ema, e_ema, {"class_aus": class_aus, "step": step}, d)

    gen = torch.Generator().manual_seed(tc.seed * 7919 + step + info.rank)
    fixed_z = torch.randn(8, mc.z_dim, generator=torch.Generator().manual_seed(123)).to(dev)
    amp = train_autocast(dev, tc.amp)
    started, last_save = time.time(), time.time()
    log_line(out, {"event": "start", "step": step, "world": info.world, "train": len(train), "au_known": float(au_known.float().mean()),
                   "params_g": sum(p.numel() for p in g.parameters())}, info)
    running: dict[str, float] = {}
    while step < tc.steps:
        index = torch.randint(0, len(train), (max(1, tc.batch_size // info.world),), generator=gen)
        x = to_generator_range(images[index]).to(dev)
        x = torch.where(torch.rand(len(x), 1, 1, 1, generator=gen).to(dev) < 0.5, x, x.flip(-1))
        t, a, known = targets[index].to(dev), aus[index].to(dev), au_known[index].to(dev)
        cond_real = condition_from_targets(t, a)
        cond_new, expr_new, typical_aus = (v.to(dev) for v in synthetic_conditions(len(x), gen))
        z_prior = torch.randn(len(x), mc.z_dim, generator=gen).to(dev)

        # --- D and latent critic
        with amp:
            z_real = e(x)
            fake_rec = g(z_real, cond_real)
            fake_new = g(z_prior, cond_new)
            real_adv, real_expr, real_au = d(x)
            fake_adv, _, _ = d(torch.cat([fake_new, fake_rec]).detach())
            zr_logits, zp_logits = dz(z_real.detach()), dz(z_prior)
        loss_d = (d_logistic_loss(real_adv.float(), fake_adv.float())
                  + tc.expression_weight * soft_cross_entropy(real_expr, t)
                  + tc.au_weight * masked_mse(real_au, a, known)
                  + tc.latent_weight * d_logistic_loss(zp_logits.float(), zr_logits.float()))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        average_gradients(list(d.parameters()) + list(dz.parameters()), info)
        opt_d.step()

        # --- G and E (D and the latent critic only pass gradients through)
        for p in list(d.parameters()) + list(dz.parameters()):
            p.requires_grad_(False)
        with amp:
            adv_all, expr_all, au_all = d(torch.cat([fake_new, fake_rec]))
            # The recognizer judges only faces whose AUs fit their expression: on re-drawn AUs
            # ("neutral, but AU12 at 0.9") it would fight the AU condition and G would learn to ignore AUs.
            r_logits = r_net(to_recognizer(random_shift_flip(fake_new[typical_aus], gen)))[0] if bool(
                typical_aus.any()) else None
            z_logits = dz(z_real)
            z_cycle = latent_cycle_loss(e, fake_new, z_prior)
            au_read = read_aus(au_net, random_shift_flip(fake_new, gen)) if au_net is not None else None
        n = len(x)
        # Both expression critics judge only faces whose AUs fit their expression (see above).
        recognizer_term = soft_cross_entropy(r_logits, expr_new[typical_aus]) if r_logits is not None else 0.0
        expression_term = soft_cross_entropy(expr_all[:n][typical_aus], expr_new[typical_aus]) if bool(
            typical_aus.any()) else 0.0
        loss_g = (g_nonsaturating_loss(adv_all.float())
                  + tc.rec_weight * reconstruction_loss(fake_rec.float(), x)
                  + tc.latent_weight * g_nonsaturating_loss(z_logits.float())
                  + tc.expression_weight * (expression_term + soft_cross_entropy(expr_all[n:], t))
                  + tc.au_weight * (F.mse_loss(au_all[:n].float(), cond_new[:, -mc.num_aus:])
                                    + masked_mse(au_all[n:], a, known))
                  + tc.recognizer_weight * min(1.0, step / max(1, tc.recognizer_warmup)) * recognizer_term
                  + tc.cycle_weight * z_cycle.float()
                  + (tc.au_critic_weight * F.mse_loss(au_read.float(), cond_new[:, -mc.num_aus:])
                     if au_read is not None else 0.0))
        opt_ge.zero_grad(set_to_none=True)
        loss_g.backward()
        average_gradients(list(g.parameters()) + list(e.parameters()), info)
        opt_ge.step()
        for p in list(d.parameters()) + list(dz.parameters()):
            p.requires_grad_(True)
        ema_update(g_ema, g, tc.ema_decay if step > 1000 else 0.0)
        ema_update(e_ema, e, tc.ema_decay if step > 1000 else 0.0)
        step += 1

        for key, value in (("d", loss_d), ("g", loss_g)):
            running[key] = running.get(key, 0.0) + float(value.detach())
        if step % tc.log_every == 0:
            with torch.no_grad():
                r_acc = round(float((r_logits.argmax(1) == expr_new[typical_aus].argmax(1)).float().mean()), 3) if (
                    r_logits is not None) else None
                rec = float(reconstruction_loss(fake_rec.float(), x))
            log_line(out, {"event": "step", "step": step, **{k: round(v / tc.log_every, 4) for k, v in running.items()},
                           "rec_l1": round(rec, 4), "recognizer_acc": r_acc,
                           "elapsed_s": round(time.time() - started, 1)}, info)
            running = {}
        if info.is_main and tc.sample_every and step % tc.sample_every == 0:
            _save_sample_grid(out / f"sample_{step:06d}.png", g_ema, fixed_z, class_aus, dev)
        if time.time() - last_save > tc.checkpoint_minutes * 60:
            save_checkpoint()
            last_save = time.time()
    save_checkpoint()
    in_sync = True
    if info.world > 1:  # every rank must hold the same weights: averaged gradients, same start
        checksum = torch.stack([p.detach().double().sum() for p in g.parameters()]).sum().reshape(1)
        sums = [torch.zeros_like(checksum) for _ in range(info.world)]
        dist.all_gather(sums, checksum)
        in_sync = all(torch.allclose(s, sums[0], rtol=1e-6) for s in sums)
        log_line(out, {"event": "end", "step": step, "ranks_in_sync": in_sync}, info)
        dist.barrier()
    return {"step": step, "ranks_in_sync": in_sync}


@torch.no_grad()
def _save_sample_grid(path: Path, g_ema, fixed_z: torch.Tensor, class_aus: dict, device) -> None:
    """Rows: 8 identities; columns: the 8 expressions at full intensity with their class-typical AUs."""
    from PIL import Image

    from core.models.generator import make_condition, to_uint8

    rows = []
    for k in range(len(EXPRESSIONS)):
        expression = F.one_hot(torch.full((len(fixed_z),), k), len(EXPRESSIONS)).float().to(device)
        typical = torch.tensor(class_aus[EXPRESSIONS[k]], device=device).expand(len(fixed_z), -1)
        cond = make_condition(expression, torch.ones(len(fixed_z), device=device), typical)
        rows.append(to_uint8(g_ema(fixed_z, cond).float()).cpu().numpy())
    grid = np.concatenate([np.concatenate(list(r), axis=0) for r in rows], axis=1)
    Image.fromarray(grid).save(path)
