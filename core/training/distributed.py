"""Data parallelism on CPU (gloo) or GPU (nccl) under torchrun."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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
