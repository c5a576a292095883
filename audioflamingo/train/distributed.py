"""torch.distributed for the training loop: the same command runs alone or under
`torchrun --nproc_per_node N` (env RANK / WORLD_SIZE / LOCAL_RANK), wrapping the step module in DDP,
or sharding it with FSDP (FSDP2, `torch.distributed.fsdp.fully_shard`) for models that do not fit one device.

Under FSDP every trainable parameter is a DTensor holding 1/N of its rows; whatever needs whole tensors
(checkpoints, the exported model, validation of the CLAP encoder) gathers them here, and gathering is a
collective: every process must make the same calls in the same order.
"""

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


def wrap(module: torch.nn.Module, d: Dist, strategy: str, units=()) -> torch.nn.Module:
    """DDP, or FSDP2 in place: each of `units` (e.g. the LM's decoder layers) is its own FSDP unit, gathered
    only while it runs; the root unit holds everything else. The module keeps its class and parameter names."""
    if not d.active:
        return module
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for unit in units:
            fully_shard(unit)
        fully_shard(module)
        return module
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


def fill_cache(cache, store: dict, keys: list[str], d: Dist, progress: bool = False) -> None:
    """Fill a per-clip cache (`cache.fill(keys)` adds missing keys to the dict `store`) with every process's help:
    each process encodes every world-th missing key, then all processes exchange what they encoded, so no
    clip is encoded twice and every process ends with every key (alone: a plain `cache.fill`). A cache that
    keeps a file (`save()`) is not written here: the caller saves once everything is in."""
    todo = [k for k in dict.fromkeys(keys) if k not in store]
    no_save = {"save": False} if hasattr(cache, "save") else {}
    if not d.active:
        cache.fill(todo, progress=progress, **no_save)
        return
    if not todo:  # the same on every process (each read the same file, or none)
        return
    mine = todo[d.rank :: d.world]
    before = set(store)
    cache.fill(mine, progress=progress, **no_save)
    new = {k: store[k] for k in mine if k not in before}
    parts: list = [None] * d.world
    dist.all_gather_object(parts, new)
    for part in parts:
        store.update(part)


def is_fsdp(module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A DTensor (FSDP shard) -> the whole tensor on every process (a collective); other tensors unchanged."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def clip_grad_norm(params, max_norm: float) -> float:
    """Clip the global gradient norm (over all processes' shards under FSDP) -> the norm before clipping."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    return float(full_tensor(norm))


def mask_grad_rows(param: torch.Tensor, rows: torch.Tensor) -> None:
    """Zero the gradient of every row of `param` where `rows` (bool (V,)) is False. Under FSDP the gradient is a
    DTensor sharded by rows and a tensor hook on the original parameter no longer runs, so the mask is cut the
    same way (locally, no communication) and applied to the shard."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if param.grad is None:
        return
    mask = rows.to(param.grad.device, param.grad.dtype)[:, None]  # (V, 1)
    if isinstance(param.grad, DTensor):
        mask = distribute_tensor(mask.expand(param.shape).contiguous(), param.grad.device_mesh, param.grad.placements,
                                 src_data_rank=None)
    param.grad.mul_(mask)


@contextlib.contextmanager
def unsharded(module):
    """Inside: the FSDP root's parameters are whole plain tensors on every process, so its submodules can be
    called directly (only what the root unit holds: do not call an inner FSDP unit in here). Outside FSDP: no-op."""
    if not is_fsdp(module):
        yield
        return
    module.unshard()
    try:
        yield
    finally:
        module.reshard()


def full_state(named, d: Dist) -> dict[str, torch.Tensor]:
    """(name, tensor) pairs -> whole CPU copies on rank 0 ({} elsewhere). Every process must call it. Tensors
    shared under several names (tied weights) are gathered once and stay shared."""
    out, done = {}, {}
    for name, t in named:
        if id(t) not in done:
            full = full_tensor(t.detach())
            done[id(t)] = full.cpu().contiguous().clone() if d.main else None
        if d.main:
            out[name] = done[id(t)]
    return out


def full_optimizer_state(optimizer: torch.optim.Optimizer, d: Dist) -> dict:
    """optimizer.state_dict() with every sharded state (FSDP's exp_avg, ...) gathered whole: the same file as a
    one-process run writes, so any number of processes (or one) can resume from it. Every process must call it."""
    sd = optimizer.state_dict()
    state = {i: {k: full_tensor(v).cpu().clone() if torch.is_tensor(v) else v for k, v in s.items()} for i, s in sd["state"].items()}
    return {"state": state, "param_groups": sd["param_groups"]} if d.main else {}


def load_optimizer_state(optimizer: torch.optim.Optimizer, sd: dict) -> None:
    """Load a whole-tensor optimizer state; under FSDP each state tensor is cut like its parameter first."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    params = [p for g in optimizer.param_groups for p in g["params"]]
    state = {}
    for i, s in sd["state"].items():
        p = params[int(i)]
        state[i] = {k: distribute_tensor(v.to(p.device), p.device_mesh, p.placements, src_data_rank=None)
                    if isinstance(p, DTensor) and torch.is_tensor(v) and v.shape == p.shape else v for k, v in s.items()}
    optimizer.load_state_dict({"state": state, "param_groups": sd["param_groups"]})
