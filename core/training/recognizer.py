"""Recognizer training (FER+ vote distributions, EMA, cosine schedule, DDP)."""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from core.checkpoint import export_recognizer, model_tensors, strip_prefix
from core.device import train_autocast
from core.evaluation.recognition import evaluate_predictions
from core.labels import EXPRESSIONS
from core.models.recognizer import RecognizerConfig, RecognizerNet, predict_probs, recognizer_loss
from core.training.augment import augment_batch
from core.training.data import load_split, trainable_index
from core.training.run_folder import flatten_optimizer, log_line, start_run, unflatten_optimizer
from core.training.schedule import cosine_lr, ema_update
from core.weights import FORMAT_VERSION, read_safetensors, save_safetensors


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
