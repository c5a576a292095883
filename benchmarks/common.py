"""Small helpers shared by the benchmark sections: timing, machine description, tables."""

from __future__ import annotations

import os
import platform
import statistics
import time

import torch


def timeit(fn, repeat: int = 3, warmup: int = 1) -> float:
    """Median wall seconds of fn() over `repeat` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_peak(n: int = 2048, repeat: int = 5) -> float:
    """Measured fp32 matmul FLOP/s of this machine (the reference for 'fraction of peak')."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / timeit(lambda: a @ b, repeat=repeat, warmup=2)


def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def table(rows: list[dict], columns: list[str] | None = None) -> str:
    """rows -> a markdown table (numbers rounded to 4 significant digits)."""
    if not rows:
        return ""
    columns = columns or list(rows[0])
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
