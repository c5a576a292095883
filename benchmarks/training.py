"""Training step: tokens/s and achieved FLOP/s vs this machine's measured matmul peak, plus a profile.

The step is the SFT step (encoder frozen and run without gradients, everything else trained) on a
batch of 8 items of 5 s audio and ~100 text tokens. FLOPs are counted exactly by torch's
FlopCounterMode on one step; the time comes from separate, uncounted steps.
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from audioflamingo.model.loading import build_model
from audioflamingo.text import encode, pad_batch, single_text
from benchmarks.common import matmul_peak, table
from benchmarks.generation import _configs


def _batch(model, batch_size=8, seconds=5.0):
    a = model.config.audio
    texts = [single_text("Describe the sound in detail, mentioning what happens first and what follows.",
                         "a dog barks twice while a car passes by slowly on a wet road, then rain starts " * 1, task="caption")] * batch_size
    ids = [encode(model.tokenizer, t) for t in texts]
    input_ids, mask = pad_batch([i for i, _ in ids], model.media.pad, "right")
    labels, _ = pad_batch([l for _, l in ids], -100, "right")
    clips = [[model.load_clip((torch.randn(int(seconds * a.sample_rate)).numpy() * 0.1, a.sample_rate))] for _ in range(batch_size)]
    return input_ids, mask, labels, clips


def _step(model, opt, batch):
    input_ids, mask, labels, clips = batch
    with torch.no_grad():
        feats = model.encode_windows(torch.cat([torch.stack([torch.from_numpy(c.samples[: model.config.audio.window_samples])]) for (c,) in clips]))
    x, pad = model.pack_windows(feats, [1] * len(clips))
    from audioflamingo.model.cache import AudioTokens

    tokens = model.transform(x, pad)  # (B, N, E)
    audio = AudioTokens(tokens, torch.zeros(tokens.shape[:2], dtype=torch.long))
    _, loss = model(input_ids, mask, audio, labels=labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss


def run(quick: bool = True) -> dict:
    peak = matmul_peak()
    print(f"  training: measured fp32 matmul peak {peak / 1e9:.1f} GFLOP/s", flush=True)
    rows, profile = [], ""
    for name, cfg in list(_configs())[: 1 if quick else 2]:
        model = build_model(cfg).train()
        for p in model.encoder.parameters():
            p.requires_grad_(False)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.1)
        batch = _batch(model)
        _step(model, opt, batch)  # warm-up
        with FlopCounterMode(display=False) as counter:
            _step(model, opt, batch)
        flops = counter.get_total_flops()
        steps = 2 if quick else 5
        t = time.perf_counter()
        for _ in range(steps):
            _step(model, opt, batch)
        dt = (time.perf_counter() - t) / steps
        tokens = int(batch[1].sum())
        rows.append({"model": name, "step_s": dt, "tokens_s": tokens / dt, "gflop_per_step": flops / 1e9,
                     "achieved_gflop_s": flops / dt / 1e9, "peak_gflop_s": peak / 1e9, "fraction_of_peak": flops / dt / peak})
        print(f"  training: {name}: {rows[-1]['tokens_s']:.0f} tok/s, {rows[-1]['fraction_of_peak']:.1%} of peak", flush=True)
        if not profile:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                _step(model, opt, batch)
            profile = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
    return {"rows": rows, "fraction_of_peak": rows[0]["fraction_of_peak"], "matmul_peak_gflop_s": peak / 1e9,
            "step_s": rows[0]["step_s"], "table": table(rows), "profile": profile}
