"""Training loops (recognizer first), shared by the CLI and torchrun.

Checkpoints are safetensors (model, EMA, optimizer) with JSON metadata, written atomically every
few minutes, so a killed run resumes where it stopped with `--resume`.
"""

from __future__ import annotations

import copy
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
from core.device import resolve_device
from core.evaluate import evaluate_predictions
from core.labels import EXPRESSIONS
from core.recognizer import RecognizerConfig, RecognizerNet, predict_probs, recognizer_loss
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


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun (or a test's spawn) set up: gloo on CPU, nccl on GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size())


def log_line(out: Path | None, record: dict, info: DistInfo) -> None:
    if not info.is_main:
        return
    line = json.dumps(record)
    print(line, flush=True)
    if out is not None:
        with open(out / "log.jsonl", "a") as f:
            f.write(line + "\n")


# ---------------------------------------------------------------- checkpoints

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


def _trainable(data: LabelledFaces) -> LabelledFaces:
    return data.subset(np.flatnonzero(data.soft_targets.sum(axis=1) > 0))


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
) -> dict:
    """Train (or resume) a recognizer; writes out_dir/{last,best}.safetensors, log.jsonl. Returns the best metrics."""
    dev = resolve_device(device)
    info = init_distributed(dev)
    out = Path(out_dir)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    tc = train_config or RecognizerTrainConfig()
    mc = model_config or RecognizerConfig()

    last_path = out / "last.safetensors"
    state_tensors, state_meta = ({}, {})
    if resume and last_path.is_file():
        state_tensors, state_meta = read_safetensors(last_path)
        mc = RecognizerConfig.from_dict(state_meta["model_config"])
        tc = RecognizerTrainConfig(**{**asdict(tc), **state_meta["train_config"], "max_steps": tc.max_steps})

    torch.manual_seed(tc.seed)
    train = _trainable(load_split(data_dir, "train", mc.input_size))
    valid = load_split(data_dir, "valid", mc.input_size)
    images = torch.from_numpy(train.images)
    targets = torch.from_numpy(train.soft_targets)
    fer2013 = torch.from_numpy(train.fer2013_label)
    class_weights = class_weights_for(train.soft_targets, tc.class_balance).to(dev)

    net = RecognizerNet(mc).to(dev).to(memory_format=torch.channels_last)
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
    use_amp = True

    def save_checkpoint() -> None:
        if not info.is_main:
            return
        opt_tensors, opt_meta = flatten_optimizer(optimizer)
        save_safetensors(
            last_path,
            {**model_tensors("model", net), **model_tensors("ema", ema), **opt_tensors},
            {"version": FORMAT_VERSION, "model_config": mc.to_dict(), "train_config": asdict(tc),
             "optimizer": opt_meta, "step": step, "epoch": epoch, "best": best},
        )

    last_save = time.time()
    started = time.time()
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
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
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

