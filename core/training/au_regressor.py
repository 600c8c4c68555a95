"""The AU regressor: a CNN that reads mesh-measured AUs from pixels (a frozen critic for G)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.checkpoint import export_recognizer, load_recognizer
from core.device import resolve_device, train_autocast
from core.labels import AUS
from core.models.recognizer import RecognizerConfig, RecognizerNet, normalize_crops
from core.training.data import load_au_targets, load_split


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
    net, _ = load_recognizer(path=path, kind="au_regressor")  # the recognizer's network with AU outputs
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
    export_recognizer(out_path, net, {"aus": list(AUS), "valid_spearman": rho,
                                      "train_config": asdict(train_config or AURegressorTrainConfig())},
                      kind="au_regressor")
    return {"valid_spearman": rho}


def fit_au_regressor(train_images: np.ndarray, train_aus: np.ndarray, valid_images: np.ndarray, valid_aus: np.ndarray,
                     model_config: RecognizerConfig | None = None, train_config: AURegressorTrainConfig | None = None,
                     device: str = "auto", log=None) -> tuple[RecognizerNet, dict[str, float]]:
    """uint8 crops [N, H, W] and AU intensities [N, len(AUS)] -> (net, valid Spearman rho per AU).

    log(record) is called every 100 steps with the step, the batch loss and the elapsed seconds.
    """
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
        x = au_regressor_batch(x_train[index], gen, tc.augment)
        loss = au_regressor_step(net, opt, x, y_train[index], amp, dev)
        if log is not None and ((step + 1) % 100 == 0 or step + 1 == tc.steps):
            log({"step": step + 1, "loss": round(float(loss.detach()), 5),
                 "elapsed_s": round(time.time() - started, 1)})
    net.eval()
    return net, valid_spearman(net, valid_images, valid_aus, dev)


def au_regressor_batch(crops: torch.Tensor, gen: torch.Generator, augment: float) -> torch.Tensor:
    """uint8 crops [N, H, W] -> augmented float [N, 1, H, W] in [0, 1]."""
    x = crops.float().div(255).unsqueeze(1)
    # Only photometric changes and mirroring: geometry is what the AUs measure.
    flip = torch.rand(len(x), generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    gain = 1 + augment * 0.3 * (torch.rand(len(x), 1, 1, 1, generator=gen) - 0.5)
    return ((x - 0.5) * gain + 0.5 + augment * 0.1 * (torch.rand(len(x), 1, 1, 1, generator=gen) - 0.5)).clamp(0, 1)


def au_regressor_step(net: RecognizerNet, opt: torch.optim.Optimizer, x: torch.Tensor, aus: torch.Tensor, amp, dev
                      ) -> torch.Tensor:
    """One SGD step: MSE between the AUs read from x (in [0, 1]) and the measured ones; returns the loss."""
    mc = net.config
    with amp:
        logits, _ = net(((x - mc.mean) / mc.std).to(dev).contiguous(memory_format=torch.channels_last))
    loss = F.mse_loss(torch.sigmoid(logits.float()), aus.to(dev))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


@torch.no_grad()
def valid_spearman(net: RecognizerNet, images: np.ndarray, aus: np.ndarray, dev) -> dict[str, float | None]:
    """Spearman rho per AU between the AUs the net reads from uint8 crops and the measured ones."""
    from scipy.stats import spearmanr

    x_valid = torch.from_numpy(images)
    read = torch.cat([torch.sigmoid(net(normalize_crops(x_valid[i : i + 512], net.config).to(dev))[0]).cpu()
                      for i in range(0, len(x_valid), 512)]).numpy()
    rho = {name: round(float(spearmanr(read[:, k], aus[:, k]).statistic), 3) for k, name in enumerate(AUS)}
    return {name: value if math.isfinite(value) else None for name, value in rho.items()}  # constant AU: no rho
