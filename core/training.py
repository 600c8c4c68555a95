"""Training loops (recognizer first), shared by the CLI and torchrun.

Checkpoints are safetensors (model, EMA, optimizer) with JSON metadata, written atomically every
few minutes, so a killed run resumes where it stopped with `--resume`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from core.data import LabelledFaces, load_split
from core.device import resolve_device, train_autocast
from core.errors import WeightsError
from core.evaluate import evaluate_predictions
from core.labels import AUS, EXPRESSIONS
from core.recognizer import (
    RecognizerConfig,
    RecognizerNet,
    normalize_crops,
    predict_probs,
    recognizer_loss,
    soft_cross_entropy,
)
from core.weights import FORMAT_VERSION, read_safetensors, save_safetensors

# ---------------------------------------------------------------- augmentation (pure functions)

def augment_batch(images: torch.Tensor, generator: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Random flip, rotation, scale, shift, brightness/contrast and erasing of float images [N,1,H,W] in [0,1]."""
    n = images.shape[0]
    device = images.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=generator).mul(high - low).add(low).to(device)

    angle = uniform(-15, 15) * strength * math.pi / 180
    scale = 1.0 + uniform(-0.12, 0.12) * strength
    shift = torch.stack([uniform(-0.1, 0.1), uniform(-0.1, 0.1)], dim=1) * strength
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0).to(device)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, shift[:, 0]], 1), torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)

    contrast = uniform(0.7, 1.3).view(n, 1, 1, 1)
    brightness = uniform(-0.15, 0.15).view(n, 1, 1, 1)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = ((out - mean) * contrast + mean + brightness).clamp(0, 1)

    # Random erasing: one rectangle of 2-20% of the area on half the images, filled with noise.
    h, w = out.shape[-2:]
    area = uniform(0.02, 0.2) * h * w
    aspect = torch.exp(uniform(math.log(0.3), math.log(3.3)))
    eh = (area * aspect).sqrt().clamp(max=h).long()
    ew = (area / aspect).sqrt().clamp(max=w).long()
    top = (torch.rand(n, generator=generator).to(device) * (h - eh + 1)).long()
    left = (torch.rand(n, generator=generator).to(device) * (w - ew + 1)).long()
    rows = torch.arange(h, device=device).view(1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, w)
    mask = (
        (rows >= top.view(n, 1, 1)) & (rows < (top + eh).view(n, 1, 1))
        & (cols >= left.view(n, 1, 1)) & (cols < (left + ew).view(n, 1, 1))
        & (torch.rand(n, generator=generator).to(device) < 0.5 * strength).view(n, 1, 1)
    ).unsqueeze(1)
    noise = torch.rand(out.shape, generator=generator).to(device)
    return torch.where(mask, noise, out)


# ---------------------------------------------------------------- EMA, schedule, distributed

@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[torch.device, DistInfo]:
    """Join the process group torchrun set up: gloo on CPU, nccl on GPU with one GPU per local rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return device, DistInfo()
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device, DistInfo(dist.get_rank(), dist.get_world_size())


def broadcast_parameters(nets, info: DistInfo) -> None:
    """Every rank starts from rank 0's weights (each seeded its own initialisation)."""
    if info.world > 1:
        for net in nets:
            for tensor in list(net.parameters()) + list(net.buffers()):
                dist.broadcast(tensor.data, src=0)


def average_gradients(params, info: DistInfo) -> None:
    """Data parallelism by hand: mean of every rank's gradients, so all ranks take the same step.

    DistributedDataParallel assumes one forward and one backward per step; a GAN step runs G and D
    several times with parameters frozen in between, which this keeps simple and correct.
    """
    if info.world > 1:
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad /= info.world


def log_line(out: Path | None, record: dict, info: DistInfo) -> None:
    if not info.is_main:
        return
    line = json.dumps(record)
    print(line, flush=True)
    if out is not None:
        with open(out / "log.jsonl", "a") as f:
            f.write(line + "\n")


# ---------------------------------------------------------------- checkpoints

def start_run(out_dir, device: str, model_config, train_config, resume: bool, keep: str):
    """Device, process group, run folder and, with resume, the configs and state of OUT/last.safetensors.

    `keep` names the train-config field the command line may change on resume (how long to run).
    """
    dev, info = init_distributed(resolve_device(device))
    out = Path(out_dir)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    state, meta = {}, {}
    last = out / "last.safetensors"
    if resume and last.is_file():
        state, meta = read_safetensors(last)
        stored = {**asdict(train_config), **meta["train_config"], keep: getattr(train_config, keep)}
        model_config = type(model_config).from_dict(meta["model_config"])
        train_config = type(train_config)(**stored)
    return dev, info, out, model_config, train_config, state, meta


def flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"opt.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("opt."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def model_tensors(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def strip_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def export_recognizer(path: Path, net: RecognizerNet, extra: dict | None = None) -> None:
    """Inference weights: the (EMA) net in float32 with its config and format version."""
    metadata = {"kind": "recognizer", "version": FORMAT_VERSION, "config": net.config.to_dict(), **(extra or {})}
    save_safetensors(path, net.state_dict(), metadata)


# ---------------------------------------------------------------- recognizer training

@dataclass
class RecognizerTrainConfig:
    epochs: int = 60
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 5e-4
    warmup_steps: int = 500
    ema_decay: float = 0.999
    class_balance: float = 0.3  # loss weight per top class ~ (median count / count) ** class_balance
    fer2013_weight: float = 0.5
    augment: float = 1.0
    seed: int = 0
    checkpoint_minutes: float = 3.0
    max_steps: int = 0  # stop after this many steps (0: run all epochs); for tests and smoke runs
    eval_every_epochs: int = 1


def trainable_index(data: LabelledFaces) -> np.ndarray:
    """Rows with an expression target (votes mostly "unknown" / "not a face" have none)."""
    return np.flatnonzero(data.soft_targets.sum(axis=1) > 0)


def class_weights_for(targets: np.ndarray, power: float) -> torch.Tensor:
    counts = np.bincount(targets.argmax(axis=1), minlength=len(EXPRESSIONS)).astype(float)
    counts = np.maximum(counts, 1.0)
    weights = (np.median(counts) / counts) ** power
    return torch.tensor(weights / weights.mean(), dtype=torch.float32)


def train_recognizer(
    data_dir: str | Path,
    out_dir: str | Path,
    model_config: RecognizerConfig | None = None,
    train_config: RecognizerTrainConfig | None = None,
    resume: bool = False,
    device: str = "auto",
    init: str | Path | None = None,
) -> dict:
    """Train (or resume) a recognizer; writes out_dir/{last,best}.safetensors, log.jsonl. Returns the best metrics.

    `init` starts from exported recognizer weights (fine-tuning); its config replaces model_config.
    """
    dev, info, out, mc, tc, state_tensors, state_meta = start_run(
        out_dir, device, model_config or RecognizerConfig(), train_config or RecognizerTrainConfig(), resume,
        keep="max_steps")
    last_path = out / "last.safetensors"

    init_tensors = None
    if init is not None and not state_tensors:  # fine-tuning: the weights bring their own config
        init_tensors, init_meta = read_safetensors(init)
        mc = RecognizerConfig.from_dict(init_meta["config"])
    torch.manual_seed(tc.seed)
    full = load_split(data_dir, "train", mc.input_size)
    train = full.subset(trainable_index(full))
    valid = load_split(data_dir, "valid", mc.input_size)
    images = torch.from_numpy(train.images)
    targets = torch.from_numpy(train.soft_targets)
    fer2013 = torch.from_numpy(train.fer2013_label)
    class_weights = class_weights_for(train.soft_targets, tc.class_balance).to(dev)

    if not (train.fer2013_label >= 0).any() or tc.fer2013_weight <= 0:
        mc = dataclasses.replace(mc, num_fer2013_classes=0)  # no labels for that head: do not build it
    net = RecognizerNet(mc)
    if init_tensors is not None:
        if not mc.num_fer2013_classes:
            init_tensors = {k: v for k, v in init_tensors.items() if not k.startswith("fer2013_head.")}
        net.load_state_dict(init_tensors)
    net = net.to(dev).to(memory_format=torch.channels_last)
    ema = copy.deepcopy(net).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    decay, no_decay = [], []
    for _name, p in net.named_parameters():
        (no_decay if p.ndim == 1 else decay).append(p)
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": tc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=tc.lr, momentum=0.9, nesterov=True,
    )
    step, epoch, best = 0, 0, {"score": -1.0}
    if state_tensors:
        net.load_state_dict(strip_prefix(state_tensors, "model"))
        ema.load_state_dict(strip_prefix(state_tensors, "ema"))
        unflatten_optimizer(optimizer, state_tensors, state_meta["optimizer"])
        step, epoch, best = state_meta["step"], state_meta["epoch"], state_meta["best"]

    model = net
    if info.world > 1:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)

    per_rank = max(1, tc.batch_size // info.world)
    steps_per_epoch = len(train) // (per_rank * info.world)
    if steps_per_epoch == 0:
        raise ValueError(f"train split has {len(train)} images, fewer than one batch of {tc.batch_size}")
    total_steps = steps_per_epoch * tc.epochs
    if state_meta and state_meta.get("steps_per_epoch", steps_per_epoch) != steps_per_epoch:
        raise ValueError(f"cannot resume: the run had {state_meta['steps_per_epoch']} steps per epoch, this one "
                         f"{steps_per_epoch} (different data, batch size or number of processes)")

    def save_checkpoint() -> None:
        if not info.is_main:
            return
        opt_tensors, opt_meta = flatten_optimizer(optimizer)
        save_safetensors(
            last_path,
            {**model_tensors("model", net), **model_tensors("ema", ema), **opt_tensors},
            {"version": FORMAT_VERSION, "model_config": mc.to_dict(), "train_config": asdict(tc),
             "optimizer": opt_meta, "step": step, "epoch": epoch, "best": best, "steps_per_epoch": steps_per_epoch},
        )

    last_save = time.time()
    started = time.time()
    amp = train_autocast(dev)  # decided once, entered every step
    log_line(out, {"event": "start", "step": step, "epoch": epoch, "world": info.world, "train": len(train),
                   "steps_per_epoch": steps_per_epoch, "params": sum(p.numel() for p in net.parameters())}, info)
    done = False
    while epoch < tc.epochs and not done:
        # Same permutation on every rank; each takes its own interleaved shard.
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(tc.seed * 1000 + epoch))
        shard = perm[info.rank :: info.world]
        aug_gen = torch.Generator().manual_seed(tc.seed * 7919 + epoch * 31 + info.rank)
        first = step - epoch * steps_per_epoch  # resume mid-epoch
        net.train()
        loss_sum, loss_n = 0.0, 0
        for i in range(max(0, first), steps_per_epoch):
            index = shard[i * per_rank : (i + 1) * per_rank]
            x = images[index].float().div(255).unsqueeze(1)
            x = augment_batch(x, aug_gen, tc.augment).to(dev)
            x = ((x - mc.mean) / mc.std).contiguous(memory_format=torch.channels_last)
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(step, total_steps, tc.lr, tc.warmup_steps)
            with amp:
                logits8, logits7 = model(x)
            loss = recognizer_loss(logits8, logits7, targets[index].to(dev), fer2013[index].to(dev),
                                   class_weights, tc.fer2013_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            ema_update(ema, net, min(tc.ema_decay, (1 + step) / (10 + step)))
            step += 1
            loss_sum += float(loss.detach())
            loss_n += 1
            if step % 50 == 0:
                log_line(out, {"event": "step", "step": step, "epoch": epoch, "loss": round(loss_sum / loss_n, 4),
                               "lr": round(optimizer.param_groups[0]["lr"], 5),
                               "elapsed_s": round(time.time() - started, 1)}, info)
            if tc.max_steps and step >= tc.max_steps:
                done = True
                break
            if time.time() - last_save > tc.checkpoint_minutes * 60:
                save_checkpoint()
                last_save = time.time()
        if not done:
            epoch += 1
        if info.is_main and (done or epoch % tc.eval_every_epochs == 0 or epoch == tc.epochs):
            p8, p7 = predict_probs(ema, valid.images, dev)
            report = evaluate_predictions(valid, p8.numpy(), None if p7 is None else p7.numpy())
            score = report["ferplus"]["accuracy"]
            record = {"event": "valid", "step": step, "epoch": epoch, "ferplus_acc": round(score, 4),
                      "ferplus_macro_f1": round(report["ferplus"]["macro_f1"], 4),
                      "fer2013_acc": round(report.get("fer2013", {}).get("accuracy", float("nan")), 4)}
            if score > best["score"]:
                best = {"score": score, "epoch": epoch, "step": step, **record}
                export_recognizer(out / "best.safetensors", ema, {"valid": record})
                record["best"] = True
            log_line(out, record, info)
        save_checkpoint()
        last_save = time.time()
    if info.world > 1:
        dist.barrier()
    return best



# ---------------------------------------------------------------- generator (FESGAN stage 1)

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


def load_au_targets(data_dir, split: str, au_cache: str | Path | None, images: np.ndarray) -> np.ndarray:
    """Measured AU intensities [N, len(AUS)] (NaN rows: no mesh) from the annotate cache, else measured now."""
    from core.aus import measure_aus_crops, measure_aus_landmarks

    if au_cache is not None and (Path(au_cache) / f"{split}.npz").is_file():
        with np.load(Path(au_cache) / f"{split}.npz") as z:
            landmarks = z["landmarks"].astype(np.float64)
        if len(landmarks) == len(images):
            return measure_aus_landmarks(landmarks)
    return measure_aus_crops(images)


def class_mean_aus(aus: np.ndarray, labels: np.ndarray) -> dict[str, list[float]]:
    """Typical AU vector of each expression (the default AU condition when a user sets none)."""
    out = {}
    for k, name in enumerate(EXPRESSIONS):
        rows = aus[(labels == k) & np.isfinite(aus[:, 0])]
        out[name] = np.round(rows.mean(axis=0), 4).tolist() if len(rows) else [0.0] * aus.shape[1]
    return out


# ---------------------------------------------------------------- AU regressor (a frozen critic for G)

@dataclass
class AURegressorTrainConfig:
    steps: int = 3000
    batch_size: int = 64
    lr: float = 0.02
    augment: float = 1.0
    seed: int = 0
    amp: bool = True  # bf16 autocast where the hardware runs it fast (core.device.train_autocast)


def read_aus(au_net, x_gen: torch.Tensor) -> torch.Tensor:
    """AU intensities [N, len(AUS)] an AU regressor reads from generator-range images [N, 1, H, W]."""
    cfg = au_net.config
    logits, _ = au_net(((x_gen + 1) / 2 - cfg.mean) / cfg.std)
    return torch.sigmoid(logits)


def load_au_regressor(path: str | Path, device) -> RecognizerNet:
    tensors, meta = read_safetensors(path)
    if meta.get("kind") != "au_regressor":
        raise WeightsError(f"{path} does not hold AU regressor weights")
    net = RecognizerNet(RecognizerConfig.from_dict(meta["config"]))
    net.load_state_dict(tensors)
    net.to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def train_au_regressor(data_dir, au_cache, out_path, model_config: RecognizerConfig | None = None,
                       train_config: AURegressorTrainConfig | None = None, device: str = "auto") -> dict:
    """A CNN that reads the mesh-measured AUs straight from pixels: differentiable, so G can be told
    how far the AUs of its faces are from the requested ones (the mesh itself is not differentiable).

    Trained on train faces, reported on valid: Spearman rho per AU between read and measured AUs.
    """
    splits = {}
    for split in ("train", "valid"):
        faces = load_split(data_dir, split)
        aus = load_au_targets(data_dir, split, au_cache, faces.images)
        known = np.flatnonzero(np.isfinite(aus[:, 0]))
        splits[split] = (faces.images[known], aus[known])
    net, rho = fit_au_regressor(*splits["train"], *splits["valid"], model_config, train_config, device,
                                log=lambda record: print(json.dumps(record), flush=True))
    metadata = {"kind": "au_regressor", "version": FORMAT_VERSION, "config": net.config.to_dict(), "aus": list(AUS),
                "valid_spearman": rho, "train_config": asdict(train_config or AURegressorTrainConfig())}
    save_safetensors(out_path, net.state_dict(), metadata)
    return {"valid_spearman": rho}


def fit_au_regressor(train_images: np.ndarray, train_aus: np.ndarray, valid_images: np.ndarray, valid_aus: np.ndarray,
                     model_config: RecognizerConfig | None = None, train_config: AURegressorTrainConfig | None = None,
                     device: str = "auto", log=None) -> tuple[RecognizerNet, dict[str, float]]:
    """uint8 crops [N, H, W] and AU intensities [N, len(AUS)] -> (net, valid Spearman rho per AU).

    log(record) is called every 100 steps with the step, the batch loss and the elapsed seconds.
    """
    from scipy.stats import spearmanr

    dev = resolve_device(device)
    tc = train_config or AURegressorTrainConfig()
    mc = model_config or RecognizerConfig(widths=(32, 64, 128), depths=(1, 2, 2), embed_dim=128, dropout=0.2,
                                          num_classes=len(AUS), num_fer2013_classes=0)
    torch.manual_seed(tc.seed)
    x_train, y_train = torch.from_numpy(train_images), torch.from_numpy(train_aus).float()
    net = RecognizerNet(mc).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=tc.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(tc.seed)
    amp = train_autocast(dev, tc.amp)
    started = time.time()
    for step in range(tc.steps):
        for group in opt.param_groups:
            group["lr"] = tc.lr * 0.5 * (1 + math.cos(math.pi * step / tc.steps))
        index = torch.randint(0, len(x_train), (tc.batch_size,), generator=gen)
        x = x_train[index].float().div(255).unsqueeze(1)
        # Only photometric changes and mirroring: geometry is what the AUs measure.
        flip = torch.rand(len(x), generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        gain = 1 + tc.augment * 0.3 * (torch.rand(len(x), 1, 1, 1, generator=gen) - 0.5)
        x = ((x - 0.5) * gain + 0.5 + tc.augment * 0.1 * (torch.rand(len(x), 1, 1, 1, generator=gen) - 0.5)).clamp(0, 1)
        with amp:
            logits, _ = net(((x - mc.mean) / mc.std).to(dev).contiguous(memory_format=torch.channels_last))
        loss = F.mse_loss(torch.sigmoid(logits.float()), y_train[index].to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if log is not None and ((step + 1) % 100 == 0 or step + 1 == tc.steps):
            log({"step": step + 1, "loss": round(float(loss.detach()), 5), "elapsed_s": round(time.time() - started, 1)})
    net.eval()
    x_valid = torch.from_numpy(valid_images)
    with torch.no_grad():
        read = torch.cat([torch.sigmoid(net(normalize_crops(x_valid[i : i + 512], mc).to(dev))[0]).cpu()
                          for i in range(0, len(x_valid), 512)]).numpy()
    rho = {name: round(float(spearmanr(read[:, k], valid_aus[:, k]).statistic), 3) for k, name in enumerate(AUS)}
    rho = {name: value if math.isfinite(value) else None for name, value in rho.items()}  # constant AU: no rho
    return net, rho


def export_generator(path: Path, g_ema, encoder, extra: dict, discriminator=None) -> None:
    """Inference weights (EMA generator, encoder) and, for joint fine-tuning, the discriminator."""
    tensors = {**{f"g.{k}": v for k, v in g_ema.state_dict().items()},
               **{f"e.{k}": v for k, v in encoder.state_dict().items()}}
    if discriminator is not None:  # only joint fine-tuning uses D: half precision keeps the file under 10 MB
        tensors.update({f"d.{k}": v.half() if v.is_floating_point() else v for k, v in discriminator.state_dict().items()})
    metadata = {"kind": "generator", "version": FORMAT_VERSION, "config": g_ema.config.to_dict(), **extra}
    save_safetensors(path, tensors, metadata)


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
    from core.aus import consistent_aus
    from core.generator import (
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

    from core.generator import make_condition, to_uint8

    rows = []
    for k in range(len(EXPRESSIONS)):
        expression = F.one_hot(torch.full((len(fixed_z),), k), len(EXPRESSIONS)).float().to(device)
        typical = torch.tensor(class_aus[EXPRESSIONS[k]], device=device).expand(len(fixed_z), -1)
        cond = make_condition(expression, torch.ones(len(fixed_z), device=device), typical)
        rows.append(to_uint8(g_ema(fixed_z, cond).float()).cpu().numpy())
    grid = np.concatenate([np.concatenate(list(r), axis=0) for r in rows], axis=1)
    Image.fromarray(grid).save(path)
