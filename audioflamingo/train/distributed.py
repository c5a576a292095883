"""torch.distributed for the training loop: the same command runs alone or under
`torchrun --nproc_per_node N` (env RANK / WORLD_SIZE / LOCAL_RANK), wrapping the step module in DDP,
or in FSDP for models that do not fit one device."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # we called init_process_group (and so must destroy it)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup(device: str | None, backend: str | None) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        dev = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    else:
        dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if dev.type == "cuda" else "gloo"))
        owns = True
    return Dist(rank, world, local, dev, owns)


def teardown(d: Dist) -> None:
    if d.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def wrap(module: torch.nn.Module, d: Dist, strategy: str) -> torch.nn.Module:
    if not d.active:
        return module
    if strategy == "fsdp":
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        return FSDP(module, use_orig_params=True, device_id=d.device if d.device.type == "cuda" else None)
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(module, device_ids=[d.device] if d.device.type == "cuda" else None)


def no_sync(module, skip: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of an optimizer step."""
    if skip and hasattr(module, "no_sync"):
        return module.no_sync()
    return contextlib.nullcontext()


def all_sum(x: float, d: Dist) -> float:
    if not d.active:
        return float(x)
    t = torch.tensor([float(x)], dtype=torch.float64, device=d.device if d.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return float(t.item())


def barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()


def clip_grad_norm(module, params, max_norm: float) -> torch.Tensor:
    if hasattr(module, "clip_grad_norm_"):  # FSDP computes the norm over all shards
        return module.clip_grad_norm_(max_norm)
    return torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
