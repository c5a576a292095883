"""Small helpers shared by the benchmark sections: device, timing, matmul peak, machine description, tables."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time

import torch


def resolve_device(name: str | None = None) -> torch.device:
    """'cuda' / 'cpu' / 'cuda:1'; None -> cuda if available, else cpu. Fails early on a missing GPU."""
    dev = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: torch {torch.__version__} sees no CUDA device")
    return dev


def sync(device) -> None:
    """Wait for queued GPU work, so that wall-clock times cover it (no-op on CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device):
    """bf16 autocast on CUDA (weights stay fp32); nothing on CPU, where fp32 is the fast path."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def decode_attention(device):
    """On CUDA: scaled-dot-product attention without the cuDNN backend, which builds a new execution plan
    for every new sequence length (~0.1 s each on an H100), so token-by-token loops whose length grows
    each step would time plan building instead of arithmetic. Flash / memory-efficient / math stay."""
    if torch.device(device).type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def compute_dtype(device) -> str:
    """What `autocast(device)` computes matmuls in, for the tables."""
    return "bf16 autocast" if torch.device(device).type == "cuda" else "fp32"


def timeit(fn, repeat: int = 3, warmup: int = 1, device=None) -> float:
    """Median wall seconds of fn() over `repeat` runs after `warmup` runs (GPU work included)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_peak(device=None, dtype: torch.dtype = torch.float32, n: int | None = None, repeat: int = 5) -> float:
    """Measured (n x n) @ (n x n) FLOP/s on `device` in `dtype`: the reference for 'fraction of peak'."""
    device = resolve_device(device)
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    reps = 20 if device.type == "cuda" else 1  # many kernels per timing on a GPU: launch and timer noise vanish
    seconds = timeit(lambda: [a @ b for _ in range(reps)], repeat=repeat, warmup=2, device=device)
    return 2 * n**3 * reps / seconds


def reset_peak_memory(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device) -> float | None:
    """Peak tensor memory allocated on the GPU since the last reset (None on CPU)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None


def machine(device=None) -> dict:
    device = resolve_device(device)
    out = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(device),
        "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out.update({"gpu_memory_gb": round(props.total_memory / 2**30, 1), "cuda_runtime": torch.version.cuda})
    return out


def table(rows: list[dict], columns: list[str] | None = None) -> str:
    """rows -> a markdown table (numbers rounded to 4 significant digits)."""
    if not rows:
        return ""
    columns = columns or list(rows[0])
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
