"""Encoder: all windows of a batch in one call vs a per-window loop; waste avoided vs AF1 padding."""

from __future__ import annotations

import torch

from audioflamingo.audio import make_windows, num_windows
from audioflamingo.model.loading import build_model
from benchmarks.common import autocast, compute_dtype, resolve_device, table, timeit
from benchmarks.generation import _configs

DURATIONS = [3.0, 7.0, 12.0, 20.0, 33.0, 5.0, 9.0, 15.0]  # a batch of clips of mixed lengths (seconds)


def run(quick: bool = True, device=None) -> dict:
    device = resolve_device(device)
    gpu = device.type == "cuda"
    durations = DURATIONS * (8 if gpu else 1)  # a GPU needs a bigger batch before it is busy
    rows = []
    for name, cfg in list(_configs())[: 1 if quick else None]:  # "large" shares mid's encoder
        model = build_model(cfg).eval().to(device)
        a = cfg.audio
        clips = [model.load_clip((torch.randn(int(d * a.sample_rate)).numpy() * 0.1, a.sample_rate)) for d in durations]
        wins = torch.cat([make_windows(c, a) for c in clips]).to(device)  # (W_total, S)
        with torch.no_grad(), autocast(device):
            t_batch = timeit(lambda: model.encode_windows(wins), repeat=3, device=device)
            t_loop = timeit(lambda: [model.encode_windows(w[None]) for w in wins], repeat=1, device=device)
        real = sum(num_windows(len(c.samples), a) for c in clips)
        padded = a.max_windows * len(clips)  # AF1 encodes every audio padded to max_windows
        rows.append({
            "model": name, "clips": len(clips), "real_windows": real, "af1_padded_windows": padded,
            "batched_windows_s": real / t_batch, "loop_windows_s": real / t_loop, "batched_vs_loop": t_loop / t_batch,
            "waste_avoided": 1 - real / padded,
        })  # fmt: skip
        print(f"  encoder: {name}: batched {rows[-1]['batched_windows_s']:.1f} windows/s, loop {rows[-1]['loop_windows_s']:.1f}", flush=True)
        del model
    return {"rows": rows, "batched_vs_loop": rows[0]["batched_vs_loop"], "waste_avoided": rows[0]["waste_avoided"],
            "dtype": compute_dtype(device), "table": table(rows)}
