"""Recognizer training (FER+ vote distributions, EMA, cosine schedule, DDP)."""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from core.checkpoint import export_recognizer, model_tensors, read_checkpoint, strip_prefix
from core.device import train_autocast
from core.evaluation.recognition import evaluate_predictions
from core.labels import EXPRESSIONS
from core.models.recognizer import RecognizerConfig, RecognizerNet, predict_probs, recognizer_loss
from core.training.augment import augment_batch
from core.training.data import LabelledFaces, load_split, trainable_index
from core.training.distributed import DistInfo
from core.training.run_folder import flatten_optimizer, log_line, start_run, unflatten_optimizer
from core.training.schedule import cosine_lr, ema_update
from core.weights import FORMAT_VERSION, save_safetensors


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


@dataclass
class RecognizerData:
    train: LabelledFaces  # train faces with an expression target
    valid: LabelledFaces
    images: torch.Tensor  # train.images, uint8 [N, H, W]
    targets: torch.Tensor  # FER+ vote distributions [N, 8]
    fer2013: torch.Tensor  # FER2013 labels [N] (-1 = none)
    class_weights: torch.Tensor


def load_recognizer_data(data_dir, input_size: int, class_balance: float, dev) -> RecognizerData:
    full = load_split(data_dir, "train", input_size)
    train = full.subset(trainable_index(full))
    valid = load_split(data_dir, "valid", input_size)
    return RecognizerData(train, valid, torch.from_numpy(train.images), torch.from_numpy(train.soft_targets),
                          torch.from_numpy(train.fer2013_label),
                          class_weights_for(train.soft_targets, class_balance).to(dev))


@dataclass
class RecognizerRun:
    net: RecognizerNet
    ema: RecognizerNet
    model: nn.Module  # net, or net wrapped in DistributedDataParallel
    optimizer: torch.optim.Optimizer
    data: RecognizerData
    mc: RecognizerConfig
    tc: RecognizerTrainConfig
    info: DistInfo
    dev: torch.device
    out: Path
    per_rank: int  # batch size of one process
    steps_per_epoch: int
    step: int = 0
    epoch: int = 0
    best: dict = field(default_factory=lambda: {"score": -1.0})
    last_save: float = field(default_factory=time.time)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.tc.epochs


def build_recognizer(mc: RecognizerConfig, tc: RecognizerTrainConfig, init_tensors: dict | None, dev
                     ) -> tuple[RecognizerNet, RecognizerNet, torch.optim.Optimizer]:
    """The net (from `init_tensors` if given), its EMA copy and SGD with no weight decay on biases and norms."""
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
    return net, ema, optimizer


def setup_recognizer(data_dir, out_dir, model_config, train_config, resume, device, init) -> RecognizerRun:
    """Data, net, EMA, optimizer and, with resume, their state. The global RNG is seeded right before the
    net's initialisation and then drives dropout, so nothing between may draw from it."""
    dev, info, out, mc, tc, state_tensors, state_meta = start_run(
        out_dir, device, model_config or RecognizerConfig(), train_config or RecognizerTrainConfig(), resume,
        keep="max_steps")
    init_tensors = None
    if init is not None and not state_tensors:  # fine-tuning: the weights bring their own config
        init_tensors, init_meta = read_checkpoint("recognizer", path=init)  # kind, version and config checked
        mc = RecognizerConfig.from_dict(init_meta["config"])
    torch.manual_seed(tc.seed)
    data = load_recognizer_data(data_dir, mc.input_size, tc.class_balance, dev)
    if not (data.train.fer2013_label >= 0).any() or tc.fer2013_weight <= 0:
        mc = dataclasses.replace(mc, num_fer2013_classes=0)  # no labels for that head: do not build it
    net, ema, optimizer = build_recognizer(mc, tc, init_tensors, dev)
    model = net
    if info.world > 1:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)

    per_rank = max(1, tc.batch_size // info.world)
    steps_per_epoch = len(data.train) // (per_rank * info.world)
    if steps_per_epoch == 0:
        raise ValueError(f"train split has {len(data.train)} images, fewer than one batch of {tc.batch_size}")
    if state_meta and state_meta.get("steps_per_epoch", steps_per_epoch) != steps_per_epoch:
        raise ValueError(f"cannot resume: the run had {state_meta['steps_per_epoch']} steps per epoch, this one "
                         f"{steps_per_epoch} (different data, batch size or number of processes)")
    run = RecognizerRun(net, ema, model, optimizer, data, mc, tc, info, dev, out, per_rank, steps_per_epoch)
    if state_tensors:
        load_recognizer_checkpoint(run, state_tensors, state_meta)
    return run


def save_recognizer_checkpoint(run: RecognizerRun) -> None:
    """OUT/last.safetensors: net, EMA, optimizer and where the run is; main rank only."""
    if not run.info.is_main:
        return
    opt_tensors, opt_meta = flatten_optimizer(run.optimizer)
    save_safetensors(
        run.out / "last.safetensors",
        {**model_tensors("model", run.net), **model_tensors("ema", run.ema), **opt_tensors},
        {"version": FORMAT_VERSION, "model_config": run.mc.to_dict(), "train_config": asdict(run.tc),
         "optimizer": opt_meta, "step": run.step, "epoch": run.epoch, "best": run.best,
         "steps_per_epoch": run.steps_per_epoch},
    )


def load_recognizer_checkpoint(run: RecognizerRun, tensors: dict, meta: dict) -> None:
    run.net.load_state_dict(strip_prefix(tensors, "model"))
    run.ema.load_state_dict(strip_prefix(tensors, "ema"))
    unflatten_optimizer(run.optimizer, tensors, meta["optimizer"])
    run.step, run.epoch, run.best = meta["step"], meta["epoch"], meta["best"]


def recognizer_step(run: RecognizerRun, index: torch.Tensor, aug_gen: torch.Generator, amp) -> torch.Tensor:
    """One SGD step on the train rows `index` (augmented with `aug_gen`), then the EMA; returns the loss."""
    mc, tc, dev = run.mc, run.tc, run.dev
    x = run.data.images[index].float().div(255).unsqueeze(1)
    x = augment_batch(x, aug_gen, tc.augment).to(dev)
    x = ((x - mc.mean) / mc.std).contiguous(memory_format=torch.channels_last)
    for group in run.optimizer.param_groups:
        group["lr"] = cosine_lr(run.step, run.total_steps, tc.lr, tc.warmup_steps)
    with amp:
        logits8, logits7 = run.model(x)
    loss = recognizer_loss(logits8, logits7, run.data.targets[index].to(dev), run.data.fer2013[index].to(dev),
                           run.data.class_weights, tc.fer2013_weight)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    ema_update(run.ema, run.net, min(tc.ema_decay, (1 + run.step) / (10 + run.step)))
    run.step += 1
    return loss


def run_epoch(run: RecognizerRun, amp, started: float) -> bool:
    """The rest of the current epoch (from mid-epoch on resume); True if max_steps stopped it."""
    tc, info = run.tc, run.info
    # Same permutation on every rank; each takes its own interleaved shard.
    perm = torch.randperm(len(run.data.train), generator=torch.Generator().manual_seed(tc.seed * 1000 + run.epoch))
    shard = perm[info.rank :: info.world]
    aug_gen = torch.Generator().manual_seed(tc.seed * 7919 + run.epoch * 31 + info.rank)
    first = run.step - run.epoch * run.steps_per_epoch  # resume mid-epoch
    run.net.train()
    loss_sum, loss_n = 0.0, 0
    for i in range(max(0, first), run.steps_per_epoch):
        loss = recognizer_step(run, shard[i * run.per_rank : (i + 1) * run.per_rank], aug_gen, amp)
        loss_sum += float(loss.detach())
        loss_n += 1
        if run.step % 50 == 0:
            log_line(run.out, {"event": "step", "step": run.step, "epoch": run.epoch,
                               "loss": round(loss_sum / loss_n, 4), "lr": round(run.optimizer.param_groups[0]["lr"], 5),
                               "elapsed_s": round(time.time() - started, 1)}, info)
        if tc.max_steps and run.step >= tc.max_steps:
            return True
        if time.time() - run.last_save > tc.checkpoint_minutes * 60:
            save_recognizer_checkpoint(run)
            run.last_save = time.time()
    return False


def validate(run: RecognizerRun) -> None:
    """The EMA net on the valid split: logged, and exported to OUT/best.safetensors when it is the best yet."""
    p8, p7 = predict_probs(run.ema, run.data.valid.images, run.dev)
    report = evaluate_predictions(run.data.valid, p8.numpy(), None if p7 is None else p7.numpy())
    score = report["ferplus"]["accuracy"]
    record = {"event": "valid", "step": run.step, "epoch": run.epoch, "ferplus_acc": round(score, 4),
              "ferplus_macro_f1": round(report["ferplus"]["macro_f1"], 4),
              "fer2013_acc": round(report.get("fer2013", {}).get("accuracy", float("nan")), 4)}
    if score > run.best["score"]:
        run.best = {"score": score, "epoch": run.epoch, "step": run.step, **record}
        export_recognizer(run.out / "best.safetensors", run.ema, {"valid": record})
        record["best"] = True
    log_line(run.out, record, run.info)


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
    run = setup_recognizer(data_dir, out_dir, model_config, train_config, resume, device, init)
    tc, info = run.tc, run.info
    started = run.last_save = time.time()
    amp = train_autocast(run.dev)  # decided once, entered every step
    log_line(run.out, {"event": "start", "step": run.step, "epoch": run.epoch, "world": info.world,
                       "train": len(run.data.train), "steps_per_epoch": run.steps_per_epoch,
                       "params": sum(p.numel() for p in run.net.parameters()),
                       "config": {"model": run.mc.to_dict(), "train": asdict(tc)}}, info)
    done = False
    while run.epoch < tc.epochs and not done:
        done = run_epoch(run, amp, started)
        if not done:
            run.epoch += 1
        if info.is_main and (done or run.epoch % tc.eval_every_epochs == 0 or run.epoch == tc.epochs):
            validate(run)
        save_recognizer_checkpoint(run)
        run.last_save = time.time()
    if info.world > 1:
        dist.barrier()
    return run.best
