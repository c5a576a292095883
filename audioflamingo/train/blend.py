"""Dataset blending as in AF1: each dataset's weight is its number of passes per epoch.

weight 2.0 -> every item twice; 0.5 -> a seeded half; 1.5 -> every item once plus a seeded half. The
epoch's order is a seeded shuffle of the whole mix, so (seed, epoch) fixes it completely.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np


def epoch_mix(datasets: list[str], weights: dict, default: float, seed: int, epoch: int) -> list[int]:
    """datasets[i] = the dataset name of row i -> the epoch's row indices, shuffled."""
    rng = np.random.default_rng([seed, epoch, 7])
    by_name: dict[str, list[int]] = {}
    for i, d in enumerate(datasets):
        by_name.setdefault(d, []).append(i)
    order: list[int] = []
    for name in sorted(by_name):
        idx = by_name[name]
        w = float(weights.get(name, default))
        if w < 0:
            raise ValueError(f"data.weights[{name!r}] = {w}: weights are passes per epoch and must be >= 0")
        full, frac = int(math.floor(w)), w - math.floor(w)
        order += idx * full
        n_extra = int(round(frac * len(idx)))
        if n_extra:
            order += [idx[j] for j in sorted(rng.choice(len(idx), size=n_extra, replace=False))]
    perm = rng.permutation(len(order))
    return [order[j] for j in perm]


def mix_counts(order: list[int], datasets: list[str]) -> dict[str, int]:
    """Samples per dataset in one epoch (what gets logged)."""
    return dict(sorted(Counter(datasets[i] for i in order).items()))


def describe_mix(counts: dict[str, int], sizes: dict[str, int]) -> str:
    total = sum(counts.values()) or 1
    lines = [f"epoch mix: {total} samples"]
    for name, n in counts.items():
        lines.append(f"  {name:28s} {n:7d}  ({100 * n / total:5.1f}%, {n / max(1, sizes.get(name, 1)):.2f} passes)")
    return "\n".join(lines)
