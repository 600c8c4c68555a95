"""A training run's folder: its log, its resumable checkpoint and its optimizer state.

Checkpoints are safetensors (model, EMA, optimizer) with JSON metadata, written atomically every
few minutes, so a killed run resumes where it stopped with `--resume`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from core.device import resolve_device
from core.training.distributed import DistInfo, init_distributed
from core.weights import read_safetensors


def log_line(out: Path | None, record: dict, info: DistInfo) -> None:
    if not info.is_main:
        return
    line = json.dumps(record)
    print(line, flush=True)
    if out is not None:
        with open(out / "log.jsonl", "a") as f:
            f.write(line + "\n")


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
