"""Device and multi-process setup, decided once: after `setup()` the training loop has no branches.

Under `torchrun` (RANK/WORLD_SIZE in the environment) each process joins a process group
(nccl when CUDA is present, gloo on CPU), takes its own GPU by LOCAL_RANK, and the model is
wrapped in DistributedDataParallel. Without torchrun the same code runs as one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as td
from torch import nn


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def ddp(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only rank 0 prints and writes files."""
        return self.rank == 0


def setup(device: str = "auto", threads: int = 0) -> Dist:
    """Pick the device ("auto" = CUDA when present) and join the torchrun group if launched so."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        from exfil.cli import UserError

        raise UserError("--device cuda but no CUDA device is available")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if threads > 0:
        torch.set_num_threads(threads)
    elif world_size > 1 and device == "cpu":
        # torchrun sets OMP_NUM_THREADS=1; keep that unless the user asked otherwise
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    dev = torch.device(device)
    if device == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if world_size > 1:
        td.init_process_group("nccl" if device == "cuda" else "gloo")
    return Dist(rank, world_size, local_rank, dev)


def wrap(model: nn.Module, dist: Dist) -> nn.Module:
    """Move to the device; under torchrun wrap in DDP (gradients all-reduced every step)."""
    model = model.to(dist.device)
    if dist.ddp:
        ids = [dist.device.index] if dist.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def agree(flag: bool, dist: Dist) -> bool:
    """Rank 0's decision (e.g. early stop) for every rank, so no process waits for the others."""
    if not dist.ddp:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=dist.device)
    td.broadcast(value, src=0)
    return bool(value.item())


def teardown(dist: Dist) -> None:
    if dist.ddp and td.is_initialized():
        td.destroy_process_group()


def print0(dist: Dist, *args, **kwargs) -> None:
    if dist.is_main:
        print(*args, **kwargs, flush=True)
