"""Training the tracking mesh (core/models/mesh_net.py) on FER+ train faces and their cached MediaPipe meshes.

Each example is a train face cut out as live tracking would: aligned by its own mesh, then displaced by a
random inter-frame motion (shift, scale, roll); the targets are its mesh moved the same way. A share of
examples are displaced far beyond any tracked motion and labelled "no face here", which teaches the net to
say when tracking has lost a face. Resumable: OUT/last.safetensors every few minutes (`--resume`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from core.checkpoint import model_tensors, strip_prefix
from core.face.alignment import alignment_matrix, warp_grey
from core.models.mesh_net import MeshNet, MeshNetConfig
from core.training.run_folder import flatten_optimizer, log_line, start_run, unflatten_optimizer
from core.training.schedule import cosine_lr


@dataclass
class MeshTrainConfig:
    steps: int = 8000
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    # Inter-frame motion at the webcam's 10 frames/s: a face 200 px wide moving 300 px/s shifts by 30 px, 15% of
    # the crop's side; the largest shift, change of size and in-plane rotation an example is displaced by.
    shift: float = 0.15
    scale: float = 0.10
    roll: float = 10.0
    lost_share: float = 0.2  # examples displaced far enough that no face is centred any more
    seed: int = 0
    checkpoint_minutes: float = 3.0


def displacement(rng: np.random.Generator, size: int, tc: MeshTrainConfig, lost: bool) -> np.ndarray:
    """A random similarity about the crop's centre (3x3): a tracked face's motion, or one that loses it."""
    if lost:
        angle = rng.uniform(0, 2 * np.pi)
        shift = rng.uniform(0.35, 0.7) * size * np.array([np.cos(angle), np.sin(angle)])
        scale = rng.choice([rng.uniform(0.3, 0.5), rng.uniform(2.0, 3.0)]) if rng.random() < 0.5 else 1.0
    else:
        shift = rng.uniform(-tc.shift, tc.shift, 2) * size
        scale = 1 + rng.uniform(-tc.scale, tc.scale)
    r = np.deg2rad(rng.uniform(-tc.roll, tc.roll))
    a = scale * np.array([[np.cos(r), -np.sin(r)], [np.sin(r), np.cos(r)]])
    centre = np.array([size / 2, size / 2])
    m = np.eye(3)
    m[:2, :2] = a
    m[:2, 2] = centre - a @ centre + shift
    return m


def make_batch(images: np.ndarray, meshes: np.ndarray, index: np.ndarray, rng: np.random.Generator,
               tc: MeshTrainConfig, size: int, aligns: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 crops [B, S, S], target meshes [B, 478, 3] in crop pixels, presence [B].

    aligns: each face's alignment (3x3, aligned_by) when computed once for the whole set."""
    crops = np.empty((len(index), size, size), np.uint8)
    targets = np.empty((len(index), meshes.shape[1], 3), np.float32)
    present = rng.random(len(index)) >= tc.lost_share
    for k, i in enumerate(index):
        align = aligns[i] if aligns is not None else aligned_by(meshes[i : i + 1], size)[0]
        m = (displacement(rng, size, tc, not present[k]) @ align)[:2]
        crop = warp_grey(images[i], m, size).astype(np.float32)
        gain, bias = rng.uniform(0.7, 1.3), rng.uniform(-25, 25)  # webcam exposure and contrast
        crops[k] = np.clip((crop - 128) * gain + 128 + bias, 0, 255)
        targets[k, :, :2] = meshes[i, :, :2] @ m[:, :2].T + m[:, 2]
        targets[k, :, 2] = meshes[i, :, 2] * math.sqrt(abs(np.linalg.det(m[:, :2])))
    return crops, targets, present.astype(np.float32)


def aligned_by(meshes: np.ndarray, size: int) -> np.ndarray:
    """[N, 3, 3] similarity of each mesh onto the FER template (as alignment_matrix, in homogeneous form)."""
    out = np.zeros((len(meshes), 3, 3))
    out[:, 2, 2] = 1
    for k, mesh in enumerate(meshes):
        out[k, :2] = alignment_matrix(mesh, size)
    return out


def mean_mesh(meshes: np.ndarray, aligns: np.ndarray) -> np.ndarray:
    """The mean mesh of aligned, undisplaced crops (aligns: aligned_by(meshes)): where the net's outputs start."""
    pick = slice(None, None, max(1, len(meshes) // 2000))
    meshes, aligns = meshes[pick], aligns[pick]
    xy = np.einsum("nij,nkj->nki", aligns[:, :2, :2], meshes[:, :, :2]) + aligns[:, None, :2, 2]
    z = meshes[:, :, 2] * np.sqrt(np.abs(np.linalg.det(aligns[:, :2, :2])))[:, None]
    return np.concatenate([xy, z[:, :, None]], axis=2).mean(axis=0)


def train_mesh_net(data: str, au_cache: str, out_dir: str, model_config: MeshNetConfig | None = None,
                   train_config: MeshTrainConfig | None = None, resume: bool = False, device: str = "auto",
                   command: str = "") -> dict:
    """Train on FER+ train, log valid error every 500 steps; export OUT/mesh_net.safetensors at the end."""
    from core.face.au_calibration import cached_landmarks
    from core.face.aus import measure_aus_landmarks
    from core.training.data import load_split

    dev, info, out, mc, tc, state, meta = start_run(out_dir, device, model_config or MeshNetConfig(),
                                                    train_config or MeshTrainConfig(), resume, keep="steps")
    splits = {}
    for split in ("train", "valid"):
        images, meshes = load_split(data, split).images, cached_landmarks(au_cache, split)
        aus = measure_aus_landmarks(meshes)
        found = np.isfinite(meshes).all(axis=(1, 2)) & np.isfinite(aus).all(axis=1)
        splits[split] = (images[found], meshes[found], aus[found].astype(np.float32))
    images, meshes, aus = splits["train"]
    aligns = aligned_by(meshes, mc.input_size)
    valid = (*splits["valid"], aligned_by(splits["valid"][1], mc.input_size))
    torch.manual_seed(tc.seed)  # the starting weights too
    net = MeshNet(mc).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    step = 0
    if state:
        net.load_state_dict(strip_prefix(state, "net"))
        unflatten_optimizer(opt, state, meta["optimizer"])
        step = int(meta["step"])
    else:
        net.mean_shape.copy_(torch.from_numpy(mean_mesh(meshes, aligns)).float())
    rng = np.random.default_rng([tc.seed, step])
    torch.manual_seed(tc.seed + step)
    saved = started = time.time()
    report = {}
    while step < tc.steps:
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, tc.steps, tc.lr, 0)
        index = rng.integers(0, len(images), tc.batch_size)
        batch = [torch.from_numpy(a).to(dev) for a in (*make_batch(images, meshes, index, rng, tc, mc.input_size, aligns),
                                                        aus[index])]
        net.train()
        losses = net.loss(*batch)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        step += 1
        if step % 500 == 0 or step == tc.steps:
            report = valid_report(net, *valid, tc, dev)
            log_line(out, {"step": step, "points": round(float(losses["points"]), 4), "aus": round(float(losses["aus"]), 4),
                           "presence": round(float(losses["presence"]), 4), **report,
                           "elapsed_s": round(time.time() - started, 1)}, info)
        if time.time() - saved > tc.checkpoint_minutes * 60 or step == tc.steps:
            save_run(out, net, opt, mc, tc, step)
            saved = time.time()
    if info.is_main:
        from core.checkpoint import export_mesh_net

        report = report or valid_report(net, *valid, tc, dev)  # resumed after its last step
        export_mesh_net(out / "mesh_net.safetensors", net.eval(), {
            "valid": report, "train_config": asdict(tc), "steps": step, "command": command,
            "data": "FER2013 train faces, targets: MediaPipe's refined mesh of each (core.aus annotate)"})
    return {"out": str(out / "mesh_net.safetensors"), **report}


def save_run(out, net: MeshNet, opt, mc: MeshNetConfig, tc: MeshTrainConfig, step: int) -> None:
    from core.weights import save_safetensors

    tensors, opt_meta = flatten_optimizer(opt)
    tensors.update(model_tensors("net", net))
    save_safetensors(out / "last.safetensors", tensors, {"model_config": mc.to_dict(), "train_config": asdict(tc),
                                                          "optimizer": opt_meta, "step": step})


@torch.no_grad()
def valid_report(net: MeshNet, images: np.ndarray, meshes: np.ndarray, aus: np.ndarray, aligns: np.ndarray | None,
                 tc: MeshTrainConfig, dev, n: int = 1000) -> dict:
    """On displaced valid crops: mean point error over the outer-eye-corner distance, the AUs' mean absolute
    error (against those measured on MediaPipe's mesh), and the presence accuracy. aligns as in make_batch."""
    net.eval()
    rng = np.random.default_rng(12345)
    crops, targets, present = make_batch(images, meshes, np.arange(min(n, len(images))), rng, tc, net.config.input_size,
                                         aligns)
    mesh, logit, read = net(torch.from_numpy(crops).to(dev))
    mesh, keep = mesh.cpu().numpy(), present > 0.5
    err = np.linalg.norm(mesh[keep, :, :2] - targets[keep, :, :2], axis=2).mean(axis=1)
    ocular = np.linalg.norm(targets[keep, 33, :2] - targets[keep, 263, :2], axis=1)
    au_error = np.abs(read.cpu().numpy()[keep] - aus[: len(keep)][keep]).mean()
    return {"valid_nme": round(float((err / ocular).mean()), 4), "valid_au_mae": round(float(au_error), 4),
            "valid_presence_acc": round(float(((logit.cpu().numpy() > 0) == keep).mean()), 4)}
