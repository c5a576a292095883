"""Training step: tokens/s and achieved FLOP/s vs this device's measured matmul peak, plus a profile.

The step is the SFT step (encoder frozen and run without gradients, everything else trained) on a batch
of 5 s audio items with ~190 text tokens each (8 items on a CPU, 64 on a GPU under bf16 autocast).
FLOPs are counted exactly by torch's FlopCounterMode on one step; the time comes from separate, uncounted
steps. The peak is a large square matmul measured on the same device in the
step's compute dtype (fp32 on CPU, bf16 on CUDA); the fp32 peak is reported beside it.
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from audioflamingo.model.cache import AudioTokens
from audioflamingo.model.loading import build_model
from audioflamingo.text import encode, pad_batch, single_text
from benchmarks.common import (autocast, compute_dtype, matmul_peak, peak_memory_mb, reset_peak_memory, resolve_device, sync,
                               table)
from benchmarks.generation import _configs

ANSWER = "a dog barks twice while a car passes by slowly on a wet road, then rain starts "


def _batch(model, device, batch_size=8, seconds=5.0):
    a = model.config.audio
    texts = [single_text("Describe the sound in detail, mentioning what happens first and what follows.",
                         ANSWER, task="caption")] * batch_size
    ids = [encode(model.tokenizer, t) for t in texts]
    input_ids, mask = pad_batch([i for i, _ in ids], model.media.pad, "right")  # (B, T)
    labels, _ = pad_batch([l for _, l in ids], -100, "right")  # (B, T)
    clips = [[model.load_clip((torch.randn(int(seconds * a.sample_rate)).numpy() * 0.1, a.sample_rate))] for _ in range(batch_size)]
    windows = torch.stack([torch.from_numpy(c.samples[: a.window_samples]) for (c,) in clips])  # (B, S): one window each
    return input_ids.to(device), mask.to(device), labels.to(device), windows.to(device)


def sft_optimizer(model) -> torch.optim.Optimizer:
    """Freeze the encoder (SFT) -> AdamW over everything else."""
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.1)


def _step(model, opt, batch):
    input_ids, mask, labels, windows = batch
    with autocast(input_ids.device):
        with torch.no_grad():
            feats = model.encode_windows(windows)  # (B, N, E)
        x, pad = model.pack_windows(feats, [1] * len(windows))  # (B, N, E), (B, N)
        tokens = model.transform(x, pad)  # (B, N, E)
        audio = AudioTokens(tokens, torch.zeros(tokens.shape[:2], dtype=torch.long, device=tokens.device))
        _, loss = model(input_ids, mask, audio, labels=labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss


def _measure(name, model, opt, batch, device, steps, peak) -> dict:
    _step(model, opt, batch)  # warm-up
    with FlopCounterMode(display=False) as counter:
        _step(model, opt, batch)
    flops = counter.get_total_flops()
    reset_peak_memory(device)
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        _step(model, opt, batch)
    sync(device)
    dt = (time.perf_counter() - t) / steps
    tokens = int(batch[1].sum())
    return {"model": name, "batch": len(batch[0]), "tokens_per_step": tokens, "step_s": dt, "tokens_s": tokens / dt,
            "gflop_per_step": flops / 1e9, "achieved_gflop_s": flops / dt / 1e9, "peak_gflop_s": peak / 1e9,
            "fraction_of_peak": flops / dt / peak, "gpu_peak_mb": peak_memory_mb(device)}  # fmt: skip


def _profile(model, opt, batch, device) -> str:
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts) as prof:
        _step(model, opt, batch)
        sync(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=12)


def run(quick: bool = True, device=None) -> dict:
    device = resolve_device(device)
    gpu = device.type == "cuda"
    peak32 = matmul_peak(device, torch.float32)
    peak = matmul_peak(device, torch.bfloat16) if gpu else peak32  # the step's compute dtype
    print(f"  training: measured matmul peak {peak / 1e9:.1f} GFLOP/s ({compute_dtype(device)}), fp32 {peak32 / 1e9:.1f}", flush=True)
    rows, profile = [], ""
    configs = list(_configs(large=gpu and not quick))[: 1 if quick else None]
    for i, (name, cfg) in enumerate(configs):
        model = build_model(cfg).train().to(device)
        opt = sft_optimizer(model)
        batch = _batch(model, device, 64 if gpu else 8)
        try:
            rows.append(_measure(name, model, opt, batch, device, steps=10 if gpu else 2 if quick else 5, peak=peak))
        except torch.cuda.OutOfMemoryError as e:  # one size too big must not cost the others
            rows.append({"model": name, "batch": len(batch[0]), "error": f"out of GPU memory: {str(e).splitlines()[0]}"})
            print(f"  training: {name}: {rows[-1]['error']}", flush=True)
        else:
            print(f"  training: {name}: {rows[-1]['tokens_s']:.0f} tok/s, {rows[-1]['fraction_of_peak']:.1%} of peak", flush=True)
            if (i == len(configs) - 1) if gpu else not profile:  # CPU: af-mini's step; GPU: the largest model's
                profile = _profile(model, opt, batch, device)
        del model, opt, batch
        if gpu:
            torch.cuda.empty_cache()
    ok = [r for r in rows if "error" not in r]
    columns = ["model", "batch", "tokens_per_step", "step_s", "tokens_s", "gflop_per_step", "achieved_gflop_s", "peak_gflop_s",
               "fraction_of_peak"] + (["gpu_peak_mb"] if gpu else []) + (["error"] if len(ok) < len(rows) else [])  # fmt: skip
    return {"rows": rows, "fraction_of_peak": ok[0]["fraction_of_peak"],  # af-mini's step (the target)
            "fraction_of_peak_best": max(r["fraction_of_peak"] for r in ok), "matmul_peak_gflop_s": peak / 1e9,
            "matmul_peak_fp32_gflop_s": peak32 / 1e9, "step_s": ok[0]["step_s"], "dtype": compute_dtype(device),
            "table": table(rows, columns), "profile": profile}
