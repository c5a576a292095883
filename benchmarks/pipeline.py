"""Input pipeline: clips/s to decode + resample + window with 0, 1, 2 DataLoader workers (and 4, 8 where the
machine has the cores). Always on the CPU: `device` is accepted for the suite's uniform call and ignored."""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset

from audioflamingo.audio import load_audio, make_windows
from audioflamingo.config import AudioConfig
from benchmarks.common import table


class _Clips(Dataset):
    def __init__(self, paths, cfg):
        self.paths, self.cfg = paths, cfg

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # resampling/down-mix notes are expected here
            return make_windows(load_audio(self.paths[i], self.cfg.sample_rate), self.cfg)


def _write_clips(folder: Path, n: int) -> list[Path]:
    """n stereo 44.1 kHz FLAC/WAV clips of 3-12 s: decode, down-mix and resample all do real work."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        sec = rng.uniform(3, 12)
        x = (rng.standard_normal((int(sec * 44100), 2)) * 0.1).astype(np.float32)
        p = folder / f"clip{i}.{'flac' if i % 2 else 'wav'}"
        sf.write(p, x, 44100)
        paths.append(p)
    return paths


def run(quick: bool = True, device=None, step_seconds: float | None = None) -> dict:
    cfg = AudioConfig()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = _write_clips(Path(tmp), 24 if quick else 96)
        for workers in [0, 1, 2] + [w for w in (4, 8) if w <= (os.cpu_count() or 1) // 2]:
            loader = DataLoader(_Clips(paths, cfg), batch_size=4, num_workers=workers, collate_fn=lambda b: b)
            t = time.perf_counter()
            n = sum(len(b) for b in loader)
            dt = time.perf_counter() - t
            rows.append({"workers": workers, "clips": n, "clips_s": n / dt})
            print(f"  pipeline: {workers} workers: {n / dt:.1f} clips/s", flush=True)
    out = {"rows": rows, "table": table(rows), "best_clips_s": max(r["clips_s"] for r in rows)}
    if step_seconds:
        out["clips_per_training_step_s"] = 8 / step_seconds  # the training step's appetite at batch 8 (CPU)
    return out
