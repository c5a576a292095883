"""Decoding rules side by side on the bundled af-mini (real weights, a real clip): greedy, beam search (3 beams)
and minimum-Bayes-risk decoding (model/mbr.py: greedy + N samples, N = 8 and 16), end to end through
`model.answer` (clip loading, encoding, decoding, the MBR choice), for one clip and for a batch of 8 clips.
The quality side of the same comparison is in the model card (MBR: +0.008 / +0.009 word F1 over greedy on the
test split's short / long captions); this section prints what it costs. Never asserts times.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import resolve_device, table, timeit

RULES = [("greedy", {}), ("beam 3", {"num_beams": 3}), ("mbr 8", {"mbr_samples": 8}), ("mbr 16", {"mbr_samples": 16})]


def run(quick: bool = True, device=None) -> dict:
    from audioflamingo import load_model

    device = resolve_device(device)
    t0 = time.perf_counter()
    model = load_model(device=str(device)).eval()
    clip = Path(__file__).resolve().parents[1] / "audioflamingo" / "assets" / "clips" / "example.wav"
    rate = model.config.audio.sample_rate
    rng = np.random.default_rng(0)
    # a batch: the bundled clip and 7 seeded tones of 0.5-4 s (different lengths: padding and early stops count)
    batch = [str(clip)] + [((0.3 * np.sin(2 * np.pi * f * np.arange(int(s * rate)) / rate)).astype(np.float32), rate)
                           for f, s in zip(rng.uniform(200, 2000, 7), rng.uniform(0.5, 4.0, 7))]
    prompt = "Describe the sound in detail."
    rows = []
    repeat = 3 if quick else 5
    for name, gen in RULES:
        one = timeit(lambda: model.answer(str(clip), prompt, **gen), repeat=repeat, warmup=1, device=device)
        many = timeit(lambda: model.answer(batch, [prompt] * len(batch), **gen), repeat=repeat, warmup=1, device=device)
        rows.append({"rule": name, "one_clip_s": one, "batch8_s": many, "batch8_clips_per_s": len(batch) / many})
        print(f"  decoding: {name}: one clip {one:.3f} s, batch of 8 {many:.3f} s", flush=True)
    for r in rows:
        r["one_clip_vs_greedy"] = r["one_clip_s"] / rows[0]["one_clip_s"]
        r["batch8_vs_greedy"] = r["batch8_s"] / rows[0]["batch8_s"]
    cols = ["rule", "one_clip_s", "one_clip_vs_greedy", "batch8_s", "batch8_vs_greedy", "batch8_clips_per_s"]
    return {"rows": rows, "table": table(rows, cols), "threads": torch.get_num_threads(),
            "mbr16_vs_greedy_one_clip": rows[-1]["one_clip_vs_greedy"], "mbr16_vs_greedy_batch8": rows[-1]["batch8_vs_greedy"],
            "seconds": time.perf_counter() - t0}
