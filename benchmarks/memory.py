"""Peak memory of inference and of one training step per preset, each in a fresh process.

CPU: peak resident set (VmHWM). CUDA: also the peak of tensor memory on the GPU
(torch.cuda.max_memory_allocated), with bf16 autocast as in the other sections. The af1 preset is left
out: its random build has no tokenizer to ask with, and its size is known from its parameters
(2.2 B x 4 bytes = 8.8 GB of fp32 weights before any activation).
"""

from __future__ import annotations

import json
import subprocess
import sys

from audioflamingo.config import list_presets
from benchmarks.common import compute_dtype, resolve_device, table

_CHILD = r"""
import contextlib, json, sys, warnings
import numpy as np, torch
warnings.simplefilter("ignore")
from audioflamingo.model.loading import load_model
preset, mode, device = sys.argv[1], sys.argv[2], torch.device(sys.argv[3])
gpu = device.type == "cuda"
cast = torch.autocast("cuda", dtype=torch.bfloat16) if gpu else contextlib.nullcontext()
model = load_model(preset, device=device)
a = model.config.audio
x = (np.random.default_rng(0).standard_normal(int(5 * a.sample_rate)) * 0.1).astype(np.float32)
if gpu:
    torch.cuda.reset_peak_memory_stats(device)
if mode == "inference":
    with cast:
        model.ask((x, a.sample_rate), "Describe the sound.", max_new_tokens=16)
else:
    from audioflamingo.text import encode, single_text
    model.train()
    ids, labels = encode(model.tokenizer, single_text("Describe the sound.", "a sound", task="caption"))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    with cast:
        audio = model.encode_audio([[model.load_clip((x, a.sample_rate))] for _ in range(4)])
        _, loss = model(ids[None].repeat(4, 1).to(device), None, audio, labels=labels[None].repeat(4, 1).to(device))
    loss.backward(); opt.step()
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across execve, so it would report the parent's peak
peak_kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
out = {"peak_rss_mb": peak_kb / 1024, "params": sum(p.numel() for p in model.parameters())}
if gpu:
    out["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
print(json.dumps(out))
"""


def run(quick: bool = True, device=None) -> dict:
    device = resolve_device(device)
    gpu = device.type == "cuda"
    presets = [p for p in list_presets() if p != "af1"]
    rows = []
    for preset in presets:
        for mode in ("inference", "train_step"):
            r = subprocess.run([sys.executable, "-c", _CHILD, preset, mode, str(device)], capture_output=True, text=True)
            if r.returncode != 0:
                err = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
                rows.append({"preset": preset, "mode": mode, "peak_rss_mb": float("nan"), "error": err})
                print(f"  memory: {preset} {mode}: FAILED: {err}", flush=True)
                continue
            rows.append({"preset": preset, "mode": mode, **json.loads(r.stdout.strip().splitlines()[-1])})
            gpu_note = f", GPU {rows[-1]['gpu_peak_mb']:.0f} MB" if gpu else ""
            print(f"  memory: {preset} {mode}: RSS {rows[-1]['peak_rss_mb']:.0f} MB{gpu_note}", flush=True)
    columns = ["preset", "mode", "params", "peak_rss_mb"] + (["gpu_peak_mb"] if gpu else []) + (["error"] if any("error" in r for r in rows) else [])
    return {"rows": rows, "dtype": compute_dtype(device), "table": table(rows, columns)}
