"""Generator training (FESGAN stage 1): E, G, D and the latent critic.

The losses are named terms in core/training/generator_losses.py; here: the data, the run's setup and
checkpoint, one D step, one G step and the loop.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from core.checkpoint import export_generator, model_tensors, read_checkpoint, strip_prefix
from core.device import train_autocast
from core.face.aus import consistent_aus
from core.labels import EXPRESSIONS
from core.models.generator import (
    DiscriminatorNet,
    EncoderNet,
    GeneratorConfig,
    GeneratorNet,
    LatentCriticNet,
    make_condition,
    reconstruction_loss,
    to_generator_range,
    to_uint8,
)
from core.training.au_regressor import load_au_regressor
from core.training.data import class_mean_aus, load_au_targets, load_split, trainable_index
from core.training.distributed import DistInfo, average_gradients, broadcast_parameters
from core.training.generator_losses import (
    Fakes,
    GeneratorBatch,
    GeneratorNets,
    generate,
    generator_d_losses,
    generator_g_losses,
    total,
)
from core.training.run_folder import flatten_optimizer, log_line, start_run, unflatten_optimizer
from core.training.schedule import ema_update
from core.weights import FORMAT_VERSION, save_safetensors


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


def d_loss_weights(tc: GeneratorTrainConfig) -> dict[str, float]:
    return {"expression": tc.expression_weight, "au": tc.au_weight, "latent": tc.latent_weight}


def g_loss_weights(tc: GeneratorTrainConfig, step: int) -> dict[str, float]:
    return {"reconstruction": tc.rec_weight, "latent": tc.latent_weight, "expression": tc.expression_weight,
            "au": tc.au_weight, "recognizer": tc.recognizer_weight * min(1.0, step / max(1, tc.recognizer_warmup)),
            "cycle": tc.cycle_weight, "au_critic": tc.au_critic_weight}


# ---------------------------------------------------------------- data

@dataclass
class GeneratorData:
    images: torch.Tensor  # uint8 [N, H, W] train faces with an expression target
    targets: torch.Tensor  # FER+ vote distributions [N, 8]
    aus: torch.Tensor  # [N, num_aus], class-typical where no mesh was found
    au_known: torch.Tensor  # [N] bool
    by_class: list[torch.Tensor]  # per expression: rows with measured AUs (synthetic conditions draw from them)
    class_aus: dict[str, list[float]]  # typical AUs of each expression (exported with G)

    def __len__(self) -> int:
        return len(self.images)


def load_generator_data(data_dir, au_cache, image_size: int) -> GeneratorData:
    full = load_split(data_dir, "train", image_size)
    aus_full = load_au_targets(data_dir, "train", au_cache, full.images)  # the cache indexes the full split
    keep = trainable_index(full)
    train, aus_np = full.subset(keep), aus_full[keep]
    labels = train.soft_targets.argmax(axis=1)
    class_aus = class_mean_aus(aus_np, labels)
    au_known = torch.from_numpy(np.isfinite(aus_np[:, 0]))
    # Faces without a mesh get their class's typical AUs, not zeros (zeros would teach G to ignore AUs).
    typical = consistent_aus(np.array([class_aus[EXPRESSIONS[k]] for k in labels], np.float32))
    aus = torch.from_numpy(np.where(np.isfinite(aus_np), aus_np, typical)).float()
    by_class = [torch.from_numpy(np.flatnonzero((labels == k) & au_known.numpy())) for k in range(len(EXPRESSIONS))]
    return GeneratorData(torch.from_numpy(train.images), torch.from_numpy(train.soft_targets), aus, au_known,
                         by_class, class_aus)


def synthetic_conditions(data: GeneratorData, n: int, gen: torch.Generator, num_aus: int, au_perturb: float
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """n conditions for new faces: an expression, an intensity and the AUs of a real face of that expression,
    some re-drawn at random. Returns them and a [N] bool: the AUs were not re-drawn (fit the expression)."""
    k = torch.randint(0, len(EXPRESSIONS), (n,), generator=gen)
    intensity = torch.rand(n, generator=gen) * 0.7 + 0.3
    expression = F.one_hot(k, len(EXPRESSIONS)).float()
    au = torch.zeros(n, num_aus)
    for i, cls in enumerate(k.tolist()):
        pool = data.by_class[cls]
        if len(pool):
            au[i] = data.aus[pool[torch.randint(0, len(pool), (1,), generator=gen)]]
    perturbed = torch.rand(n, generator=gen) < au_perturb
    redraw = (torch.rand(n, num_aus, generator=gen) < 0.3) & perturbed[:, None]
    au = torch.where(redraw, torch.rand(n, num_aus, generator=gen), au)
    return make_condition(expression, intensity, consistent_aus(au)), ~perturbed


def sample_batch(data: GeneratorData, n: int, gen: torch.Generator, dev, mc: GeneratorConfig, au_perturb: float
                 ) -> GeneratorBatch:
    """Real faces (randomly mirrored), synthetic conditions and prior codes; every draw from `gen`, in this order."""
    index = torch.randint(0, len(data), (n,), generator=gen)
    x = to_generator_range(data.images[index]).to(dev)
    x = torch.where(torch.rand(len(x), 1, 1, 1, generator=gen).to(dev) < 0.5, x, x.flip(-1))
    cond_new, typical_aus = synthetic_conditions(data, len(x), gen, mc.num_aus, au_perturb)
    z_prior = torch.randn(len(x), mc.z_dim, generator=gen).to(dev)
    return GeneratorBatch(x, data.targets[index].to(dev), data.aus[index].to(dev), data.au_known[index].to(dev),
                          cond_new.to(dev), typical_aus.to(dev), z_prior)


# ---------------------------------------------------------------- run: setup, checkpoint

@dataclass
class GeneratorRun:
    nets: GeneratorNets
    g_ema: GeneratorNet
    e_ema: EncoderNet
    opt_ge: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    data: GeneratorData
    mc: GeneratorConfig
    tc: GeneratorTrainConfig
    info: DistInfo
    dev: torch.device
    out: Path
    step: int = 0

    def trained(self) -> tuple[tuple[str, torch.nn.Module], ...]:
        """What last.safetensors holds, by prefix."""
        n = self.nets
        return (("g", n.g), ("e", n.e), ("d", n.d), ("dz", n.dz), ("g_ema", self.g_ema), ("e_ema", self.e_ema))


def setup_generator(data_dir, out_dir, au_cache, model_config, train_config, recognizer_path, resume, device,
                    init) -> GeneratorRun:
    """Data, frozen critics, nets, optimizers and, with resume or init, their state. The order of the
    steps is the order of the global RNG draws (every net's initialisation), so it is kept as it was."""
    from core.recognizer import Recognizer

    dev, info, out, mc, tc, state, meta = start_run(
        out_dir, device, model_config or GeneratorConfig(), train_config or GeneratorTrainConfig(), resume,
        keep="steps")
    torch.manual_seed(tc.seed + info.rank)
    data = load_generator_data(data_dir, au_cache, mc.image_size)
    recognizer = Recognizer.load(path=recognizer_path, device=str(dev)) if recognizer_path else Recognizer.load(
        device=str(dev))
    r_net = recognizer.net.eval()
    for p in r_net.parameters():
        p.requires_grad_(False)
    au_net = load_au_regressor(tc.au_critic, dev) if tc.au_critic and tc.au_critic_weight > 0 else None

    init_tensors = None
    if init is not None and not state:
        init_tensors, init_meta = read_checkpoint("generator", path=init)  # kind, version and config checked
        mc = GeneratorConfig.from_dict(init_meta["config"])
    g, e = GeneratorNet(mc).to(dev), EncoderNet(mc).to(dev)  # this order: the global RNG's draws
    d, dz = DiscriminatorNet(mc).to(dev), LatentCriticNet(mc).to(dev)
    if init_tensors is not None:
        for prefix, net in (("g", g), ("e", e), ("d", d)):
            net.load_state_dict(strip_prefix(init_tensors, prefix))
    broadcast_parameters((g, e, d, dz), info)
    g_ema, e_ema = copy.deepcopy(g).eval(), copy.deepcopy(e).eval()
    for p in list(g_ema.parameters()) + list(e_ema.parameters()):
        p.requires_grad_(False)
    opt_ge = torch.optim.Adam(list(g.parameters()) + list(e.parameters()), lr=tc.lr, betas=(0.5, 0.99))
    opt_d = torch.optim.Adam(list(d.parameters()) + list(dz.parameters()), lr=tc.lr, betas=(0.5, 0.99))
    run = GeneratorRun(GeneratorNets(g, e, d, dz, r_net, au_net), g_ema, e_ema, opt_ge, opt_d, data, mc, tc, info,
                       dev, out)
    if state:
        load_generator_checkpoint(run, state, meta)
    elif init_tensors is not None:
        # Keeps the recognizer warm-up and EMA schedule where the exported run was.
        run.step = int(init_meta.get("step", 0))
    return run


def save_generator_checkpoint(run: GeneratorRun) -> None:
    """OUT/last.safetensors (everything to resume) and OUT/generator.safetensors (the export); main rank only."""
    if not run.info.is_main:
        return
    tensors = {}
    for prefix, net in run.trained():
        tensors.update(model_tensors(prefix, net))
    ge_t, ge_m = flatten_optimizer(run.opt_ge)
    d_t, d_m = flatten_optimizer(run.opt_d)
    tensors.update({f"opt_ge.{k}": v for k, v in ge_t.items()})
    tensors.update({f"opt_d.{k}": v for k, v in d_t.items()})
    save_safetensors(run.out / "last.safetensors", tensors, {
        "version": FORMAT_VERSION, "model_config": run.mc.to_dict(), "train_config": asdict(run.tc), "opt_ge": ge_m,
        "opt_d": d_m, "step": run.step})
    export_generator(run.out / "generator.safetensors", run.g_ema, run.e_ema,
                     {"class_aus": run.data.class_aus, "step": run.step}, run.nets.d)


def load_generator_checkpoint(run: GeneratorRun, state: dict, meta: dict) -> None:
    for prefix, net in run.trained():
        net.load_state_dict(strip_prefix(state, prefix))
    unflatten_optimizer(run.opt_ge, strip_prefix(state, "opt_ge"), meta["opt_ge"])
    unflatten_optimizer(run.opt_d, strip_prefix(state, "opt_d"), meta["opt_d"])
    run.step = meta["step"]


# ---------------------------------------------------------------- steps and loop

def d_step(run: GeneratorRun, batch: GeneratorBatch, fakes: Fakes, amp) -> torch.Tensor:
    """One step of D and the latent critic."""
    loss_d = total(generator_d_losses(run.nets, batch, fakes, amp), d_loss_weights(run.tc))
    run.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    average_gradients(run.nets.critics, run.info)
    run.opt_d.step()
    return loss_d


def g_step(run: GeneratorRun, batch: GeneratorBatch, fakes: Fakes, gen: torch.Generator, amp
           ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One step of G and E (D and the latent critic frozen: they only pass gradients through), then the EMAs."""
    n = run.nets
    for p in n.critics:
        p.requires_grad_(False)
    terms, r_logits = generator_g_losses(n, batch, fakes, gen, amp)
    loss_g = total(terms, g_loss_weights(run.tc, run.step))
    run.opt_ge.zero_grad(set_to_none=True)
    loss_g.backward()
    average_gradients(list(n.g.parameters()) + list(n.e.parameters()), run.info)
    run.opt_ge.step()
    for p in n.critics:
        p.requires_grad_(True)
    ema_update(run.g_ema, n.g, run.tc.ema_decay if run.step > 1000 else 0.0)
    ema_update(run.e_ema, n.e, run.tc.ema_decay if run.step > 1000 else 0.0)
    return loss_g, r_logits


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
    run = setup_generator(data_dir, out_dir, au_cache, model_config, train_config, recognizer_path, resume, device,
                          init)
    tc, info, out = run.tc, run.info, run.out
    gen = torch.Generator().manual_seed(tc.seed * 7919 + run.step + info.rank)
    fixed_z = torch.randn(8, run.mc.z_dim, generator=torch.Generator().manual_seed(123)).to(run.dev)
    amp = train_autocast(run.dev, tc.amp)
    started, last_save = time.time(), time.time()
    log_line(out, {"event": "start", "step": run.step, "world": info.world, "train": len(run.data),
                   "au_known": float(run.data.au_known.float().mean()),
                   "params_g": sum(p.numel() for p in run.nets.g.parameters()),
                   "config": {"model": run.mc.to_dict(), "train": asdict(tc)}}, info)
    running: dict[str, float] = {}
    while run.step < tc.steps:
        batch = sample_batch(run.data, max(1, tc.batch_size // info.world), gen, run.dev, run.mc, tc.au_perturb)
        fakes = generate(run.nets, batch, amp)
        loss_d = d_step(run, batch, fakes, amp)
        loss_g, r_logits = g_step(run, batch, fakes, gen, amp)
        run.step += 1
        for key, value in (("d", loss_d), ("g", loss_g)):
            running[key] = running.get(key, 0.0) + float(value.detach())
        if run.step % tc.log_every == 0:
            means = {k: round(v / tc.log_every, 4) for k, v in running.items()}
            log_line(out, {"event": "step", "step": run.step, **means, **_step_diagnostics(batch, fakes, r_logits),
                           "elapsed_s": round(time.time() - started, 1)}, info)
            running = {}
        if info.is_main and tc.sample_every and run.step % tc.sample_every == 0:
            _save_sample_grid(out / f"sample_{run.step:06d}.png", run.g_ema, fixed_z, run.data.class_aus, run.dev)
        if time.time() - last_save > tc.checkpoint_minutes * 60:
            save_generator_checkpoint(run)
            last_save = time.time()
    save_generator_checkpoint(run)
    in_sync = _ranks_in_sync(run)
    return {"step": run.step, "ranks_in_sync": in_sync}


@torch.no_grad()
def _step_diagnostics(batch: GeneratorBatch, fakes: Fakes, r_logits: torch.Tensor | None) -> dict:
    """The logged reconstruction L1 and how often the recognizer reads the requested expression."""
    r_acc = round(float((r_logits.argmax(1) == batch.expr_new[batch.typical_aus].argmax(1)).float().mean()), 3) if (
        r_logits is not None) else None
    return {"rec_l1": round(float(reconstruction_loss(fakes.rec.float(), batch.x)), 4), "recognizer_acc": r_acc}


def _ranks_in_sync(run: GeneratorRun) -> bool:
    """Every rank must hold the same weights (averaged gradients, same start): compare G's checksums."""
    if run.info.world <= 1:
        return True
    checksum = torch.stack([p.detach().double().sum() for p in run.nets.g.parameters()]).sum().reshape(1)
    sums = [torch.zeros_like(checksum) for _ in range(run.info.world)]
    dist.all_gather(sums, checksum)
    in_sync = all(torch.allclose(s, sums[0], rtol=1e-6) for s in sums)
    log_line(run.out, {"event": "end", "step": run.step, "ranks_in_sync": in_sync}, run.info)
    dist.barrier()
    return in_sync


@torch.no_grad()
def _save_sample_grid(path: Path, g_ema, fixed_z: torch.Tensor, class_aus: dict, device) -> None:
    """Rows: 8 identities; columns: the 8 expressions at full intensity with their class-typical AUs."""
    from PIL import Image

    rows = []
    for k in range(len(EXPRESSIONS)):
        expression = F.one_hot(torch.full((len(fixed_z),), k), len(EXPRESSIONS)).float().to(device)
        typical = torch.tensor(class_aus[EXPRESSIONS[k]], device=device).expand(len(fixed_z), -1)
        cond = make_condition(expression, torch.ones(len(fixed_z), device=device), typical)
        rows.append(to_uint8(g_ema(fixed_z, cond).float()).cpu().numpy())
    grid = np.concatenate([np.concatenate(list(r), axis=0) for r in rows], axis=1)
    Image.fromarray(grid).save(path)
