"""Dataset blending as in AF1: each dataset's weight is its number of passes per epoch.

weight 2.0 -> every item twice; 0.5 -> a seeded half; 1.5 -> every item once plus a seeded half. The
epoch's order is a seeded shuffle of the whole mix, so (seed, epoch) fixes it completely.

`MixSource` serves the loop rows held in memory (manifests, or shards read whole); streamed shards have their
own source (`audioflamingo.train.stream`), which blends with the same `Blend` per shard.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Blend:
    """What a row counts as for blending and that name's weight in passes per epoch. The name is the row's
    dataset; `dataset/task` when task or label-set weights are given; `dataset/task/label_set` for a row of a
    closed label set (classification and AQA rows carry `label_set`) when label-set weights are given."""

    weights: dict = field(default_factory=dict)  # dataset -> passes per epoch
    default: float = 1.0
    task_weights: dict = field(default_factory=dict)  # task -> factor on its dataset's weight
    label_set_weights: dict = field(default_factory=dict)  # label set -> factor on its dataset's (and task's) weight

    def name(self, row: dict) -> str:
        if not (self.task_weights or self.label_set_weights):
            return row["dataset"]
        if self.label_set_weights and row.get("label_set"):
            return f"{row['dataset']}/{row['task']}/{row['label_set']}"
        return f"{row['dataset']}/{row['task']}"

    def weight(self, name: str) -> float:
        dataset, task, label_set = (name.split("/") + ["", ""])[:3]
        w = float(self.weights.get(dataset, self.default)) * float(self.task_weights.get(task, 1.0) if task else 1.0)
        w *= float(self.label_set_weights.get(label_set, 1.0) if label_set else 1.0)
        if w < 0:
            raise ValueError(f"data.weights[{name!r}] = {w}: weights are passes per epoch and must be >= 0")
        return w


def epoch_mix(datasets: list[str], weights: dict, default: float, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """datasets[i] = the dataset name of row i -> the epoch's row indices, shuffled (or, with shuffle=False,
    in row order, repeats of a row next to it)."""
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
    if not shuffle:
        return sorted(order)
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


class MixSource:
    """Rows in memory -> each process's share of an optimizer step: step `pos` of an epoch is positions
    pos*B .. (pos+1)*B - 1 of the epoch's mix, and process r takes its r-th contiguous slice of them."""

    def __init__(self, rows: list[dict], blend: Blend, seed: int, batch_size: int, rank: int = 0, world: int = 1,
                 shuffle: bool = True):
        self.rows, self.blend, self.seed, self.shuffle = rows, blend, seed, shuffle
        self.batch_size, self.rank, self.world = batch_size, rank, world
        self.names = [blend.name(r) for r in rows]
        self.weights = {n: blend.weight(n) for n in set(self.names)}
        self.sizes = dict(Counter(self.names))
        self._order, self._epoch = [], -1
        self.size = len(self.order(0))  # samples per epoch (fixed: fractional weights take round(frac * n) rows)
        self.steps_per_epoch = self.size // batch_size

    def order(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            self._order = epoch_mix(self.names, self.weights, self.blend.default, self.seed, epoch, self.shuffle)
            self._epoch = epoch
        return self._order

    def counts(self, epoch: int) -> dict[str, int]:
        return mix_counts(self.order(epoch), self.names)

    def take(self, epoch: int, pos: int) -> list[tuple[int, dict]]:
        """-> [(epoch position, row)] of this process for step `pos` of `epoch`."""
        order, per_rank = self.order(epoch), self.batch_size // self.world
        first = pos * self.batch_size + self.rank * per_rank
        return [(p, self.rows[order[p]]) for p in range(first, first + per_rank)]
