"""Streamed WebDataset shards: training data read as it is needed, for corpora beyond one disk or memory.

    data: {train: ["shards/train-{000000..000099}.tar"], stream: true, shuffle_buffer: 1000, workers: 2}

Before training every process reads the shards' `.json` members once (tar headers and the small JSON only;
audio members are skipped by seeking) to count the kept rows per shard. An epoch is then the concatenation
of the shards' items in a seeded shard order, each kept row repeated by its blend weight (`Blend`: floor(w)
copies, plus one for a seeded round(frac * n) of the shard's rows of that dataset). The first
steps_per_epoch * batch_size items are cut into one contiguous range per process and, inside it, one per
DataLoader worker: each reads only the shards its range covers (a range may start or end inside a shard,
which two readers then share, each taking its own items). A seeded shuffle buffer mixes items within a
reader's range. Audio bytes are read from the tar (seek + read) when an item leaves the buffer, decoded,
used for one step and dropped: nothing is extracted to disk and nothing accumulates in memory.

Determinism and resume: the items of process r, in order, are a pure function of (shards, seed, epoch,
processes, workers), and the i-th of them has epoch position r * M + i (M = items per process per epoch),
which seeds its sample (`data.sample_rng`) like a manifest position. A resumed run replays its range from
the epoch's start and skips (without reading or decoding audio) the items it had consumed, so resuming
mid-epoch is exact. It needs the same shards, number of processes and `data.workers` as the checkpoint
(checked; otherwise a ConfigError; a checkpoint at an epoch boundary resumes with any). Different process
counts see the same items per epoch, grouped into steps differently.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import tarfile
from dataclasses import dataclass

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from audioflamingo.config import ConfigError
from audioflamingo.train.blend import Blend
from audioflamingo.train.data import DataError, check_row, is_shard_spec, shard_paths


@dataclass(frozen=True)
class Member:
    """Where one audio member's bytes lie in its tar file."""

    shard: str
    offset: int
    size: int

    def read(self) -> bytes:
        with open(self.shard, "rb") as f:
            f.seek(self.offset)
            return f.read(self.size)


def _samples(tar: tarfile.TarFile, path: str):
    """(key, {ext: TarInfo}) per WebDataset sample: the members `KEY.ext` of a sample are adjacent."""
    key, parts, seen = None, {}, set()
    for m in tar:
        if not m.isfile():
            continue
        k, _, ext = m.name.partition(".")
        if k != key:
            if key is not None:
                yield key, parts
            if k in seen:
                raise DataError(f"{path}: the members of sample {k!r} are not adjacent (WebDataset shards keep them together)")
            seen.add(k)
            key, parts = k, {}
        parts[ext] = m
    if key is not None:
        yield key, parts


def shard_rows(path: str, keep):
    """(row, Member of its audio) for every kept row of one shard, in order. Reads tar headers and the
    `.json` members only; rows' `audio` becomes 'shard#KEY.ext' as with shards read whole."""
    with tarfile.open(path) as tar:
        for key, parts in _samples(tar, path):
            if "json" not in parts:
                raise DataError(f"{path}#{key}: sample has no .json member")
            meta = json.loads(tar.extractfile(parts["json"]).read())
            for row in meta.get("items", [meta]):
                row = check_row(dict(row), f"{path}#{key}")
                if not keep(row):
                    continue
                if row.get("extra_audios"):
                    raise DataError(f"{path}#{key}: row {row['id']} has extra_audios: multi-audio rows cannot be streamed")
                info = parts.get(row["audio"].partition(".")[2]) if row["audio"].startswith(key + ".") else None
                if info is None:
                    raise DataError(f"{path}#{key}: row {row['id']} names audio {row['audio']!r} not in the sample")
                row["audio"], row["extra_audios"] = f"{path}#{row['audio']}", []
                yield row, Member(path, info.offset_data, info.size)


@dataclass
class ShardIndex:
    """The count pass: per shard (sorted path order), the blend-name code of each kept row, in stream order."""

    paths: list[str]
    codes: list[np.ndarray]
    names: list[str]

    @classmethod
    def build(cls, paths: list[str], keep, blend: Blend) -> ShardIndex:
        table: dict[str, int] = {}
        codes = [np.asarray([table.setdefault(blend.name(row), len(table)) for row, _ in shard_rows(p, keep)], dtype=np.int64)
                 for p in paths]
        return cls(paths, codes, list(table))

    def fingerprint(self) -> str:
        h = hashlib.sha1()
        for p, c in zip(self.paths, self.codes):
            h.update(f"{p}\0{len(c)}\0".encode())
        return h.hexdigest()[:16]

    def repeats(self, blend: Blend, seed: int, epoch: int) -> list[np.ndarray]:
        """Per shard, how many times each kept row appears in `epoch` (its blend weight, see the module doc)."""
        w = np.asarray([blend.weight(n) for n in self.names], dtype=np.float64)
        out = []
        for s, codes in enumerate(self.codes):
            rng = np.random.default_rng([seed, epoch, s, 7])
            reps = np.floor(w[codes]).astype(np.int64) if len(codes) else np.zeros(0, np.int64)
            for c in np.unique(codes):
                rows_c = np.flatnonzero(codes == c)
                n_extra = int(round((w[c] - math.floor(w[c])) * len(rows_c)))
                if n_extra:
                    reps[rng.choice(rows_c, size=n_extra, replace=False)] += 1
            out.append(reps)
        return out


@dataclass(frozen=True)
class Span:
    """Items lo..hi-1 of one shard's item sequence in an epoch (its kept rows, each repeated reps[i] times)."""

    path: str
    reps: np.ndarray
    lo: int
    hi: int


def cut(spans: list[Span], a: int, b: int) -> list[Span]:
    """Items a..b-1 of the concatenation of `spans`."""
    out, offset = [], 0
    for s in spans:
        n = s.hi - s.lo
        lo, hi = max(a - offset, 0), min(b - offset, n)
        if lo < hi:
            out.append(Span(s.path, s.reps, s.lo + lo, s.lo + hi))
        offset += n
    return out


def shuffled(items, size: int, rng: np.random.Generator):
    """A shuffle buffer of `size` items (size <= 1: the items in order)."""
    if size <= 1:
        yield from items
        return
    buf = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        k = int(rng.integers(size))
        yield buf[k]
        buf[k] = item
    for k in rng.permutation(len(buf)):
        yield buf[k]


class ClipDecoder:
    """bytes -> Clip at the model's rate (picklable, so DataLoader workers decode)."""

    def __init__(self, sample_rate: int, audio_cfg):
        self.rate, self.cfg = sample_rate, audio_cfg

    def __call__(self, data: bytes):
        from audioflamingo.audio import load_audio

        return load_audio(io.BytesIO(data), self.rate, self.cfg)


def _identity(x):
    return x


class ShardStream(IterableDataset):
    """One process's items of one epoch -> {"position", "row", "audio": {key: Clip (or bytes)}}.

    Under a DataLoader with W workers, worker w takes the w-th contiguous part of the range (sizes differ by at
    most one, larger first), so the DataLoader's round-robin returns worker w's j-th item as the process's
    (j * W + w)-th: the order, and so `position`, does not depend on timing. `skip` drops the first items of
    that order without reading their audio (resume)."""

    def __init__(self, spans: list[Span], keep, first_position: int, seed_key: tuple, buffer: int, skip: int = 0,
                 decode=None):
        self.spans, self.keep, self.first, self.seed_key = spans, keep, first_position, tuple(seed_key)
        self.buffer, self.skip, self.decode = buffer, skip, decode

    def _items(self, spans: list[Span]):
        for span in spans:
            i = 0  # item offset in the shard's sequence
            for k, (row, member) in enumerate(shard_rows(span.path, self.keep)):
                if k >= len(span.reps):
                    raise DataError(f"{span.path}: holds more rows than when it was indexed (changed during training?)")
                for _ in range(int(span.reps[k])):
                    if span.lo <= i < span.hi:
                        yield row, member
                    i += 1
                if i >= span.hi:
                    break
            if i < span.hi:
                raise DataError(f"{span.path}: holds fewer rows than when it was indexed (changed during training?)")

    def __iter__(self):
        info = get_worker_info()
        w, W = (info.id, info.num_workers) if info is not None else (0, 1)
        total = sum(s.hi - s.lo for s in self.spans)
        sizes = [total // W + (i < total % W) for i in range(W)]
        start = sum(sizes[:w])
        mine = cut(self.spans, start, start + sizes[w])
        skip = min(sizes[w], max(0, -((w - self.skip) // W)))  # my outputs j with j * W + w < self.skip
        rng = np.random.default_rng([*self.seed_key, w, 11])
        for j, (row, member) in enumerate(shuffled(self._items(mine), self.buffer, rng)):
            if j < skip:
                continue
            data = member.read()
            yield {"position": self.first + j * W + w, "row": row,
                   "audio": {row["audio"]: self.decode(data) if self.decode is not None else data}}


class StreamSource:
    """Streamed shards -> each process's share of an optimizer step, for the loop (like blend.MixSource).

    Step `pos` of an epoch gives process r its items r * M + pos * b .. + b - 1 (b = batch_size / processes,
    M = steps_per_epoch * b). `take` puts the step's decoded clips into the ClipStore and drops the previous
    step's."""

    def __init__(self, data_cfg, keep, blend: Blend, seed: int, batch_size: int, rank: int, world: int, clips,
                 decode=None):
        bad = [s for s in data_cfg.train if not is_shard_spec(s)]
        if bad:
            raise ConfigError(f"data.stream: every data.train entry must be shards (.tar, a pattern or a folder); not {bad}")
        paths = list(dict.fromkeys(p for spec in data_cfg.train for p in shard_paths(spec)))
        self.index = ShardIndex.build(paths, keep, blend)
        self.blend, self.seed, self.keep, self.clips, self.decode = blend, seed, keep, clips, decode
        self.batch_size, self.rank, self.world = batch_size, rank, world
        self.shuffle, self.buffer, self.workers = data_cfg.shuffle, data_cfg.shuffle_buffer, data_cfg.workers
        self.sizes = {n: int(sum((c == i).sum() for c in self.index.codes)) for i, n in enumerate(self.index.names)}
        self.size = int(sum(r.sum() for r in self.index.repeats(blend, seed, 0)))  # fixed across epochs
        self.steps_per_epoch = self.size // batch_size
        self.per_rank = batch_size // world
        self._it, self._next, self._held = None, None, []

    def signature(self) -> dict:
        """What a checkpoint records so that a resume can check it replays the same streams."""
        return {"processes": self.world, "workers": self.workers, "shards": self.index.fingerprint()}

    def check_resume(self, saved: dict | None, where, step: int) -> None:
        """Mid-epoch, a resume must replay the same streams; at an epoch boundary any layout starts afresh."""
        if step % self.steps_per_epoch == 0:
            return
        if saved is None:
            raise ConfigError(f"{where}: the checkpoint was not written by a streamed run (data.stream); resume it with data.stream: false")
        if saved != self.signature():
            raise ConfigError(f"{where}: the checkpoint's stream {saved} differs from this run's {self.signature()}: exact resume "
                              "mid-epoch needs the same shards, number of processes and data.workers")

    def _epoch_spans(self, epoch: int) -> list[Span]:
        reps = self.index.repeats(self.blend, self.seed, epoch)
        n = len(self.index.paths)
        order = np.random.default_rng([self.seed, epoch, 9]).permutation(n) if self.shuffle else np.arange(n)
        spans = [Span(self.index.paths[s], reps[s], 0, int(reps[s].sum())) for s in order]
        per_epoch = self.steps_per_epoch * self.per_rank
        return cut(spans, self.rank * per_epoch, (self.rank + 1) * per_epoch)

    def counts(self, epoch: int) -> dict[str, int]:
        reps = self.index.repeats(self.blend, self.seed, epoch)
        out = np.zeros(len(self.index.names), np.int64)
        for codes, r in zip(self.index.codes, reps):
            np.add.at(out, codes, r)
        return {n: int(out[i]) for i, n in sorted(enumerate(self.index.names), key=lambda x: x[1])}

    def stream(self, epoch: int, skip: int = 0) -> ShardStream:
        """This process's items of `epoch`, after the first `skip`."""
        return ShardStream(self._epoch_spans(epoch), self.keep, self.rank * self.steps_per_epoch * self.per_rank,
                           (self.seed, epoch, self.rank), self.buffer if self.shuffle else 0, skip, self.decode)

    def take(self, epoch: int, pos: int) -> list[tuple[int, dict]]:
        if self._next != (epoch, pos):
            ds = self.stream(epoch, skip=pos * self.per_rank)
            self._it = iter(ds) if self.workers == 0 else iter(
                DataLoader(ds, batch_size=None, num_workers=self.workers, collate_fn=_identity))
        first = self.rank * self.steps_per_epoch * self.per_rank + pos * self.per_rank
        self.clips.drop(self._held)
        out, self._held = [], []
        for i in range(self.per_rank):
            item = next(self._it)
            if item["position"] != first + i:
                raise RuntimeError(f"streamed item at position {item['position']}, expected {first + i} (reader order broke)")
            for key, clip in item["audio"].items():
                self.clips.put(key, clip)
                self._held.append(key)
            out.append((item["position"], item["row"]))
        self._next = (epoch, pos + 1) if pos + 1 < self.steps_per_epoch else None
        return out
