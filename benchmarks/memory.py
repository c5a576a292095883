"""Peak resident memory of inference and of one training step per preset, each in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys

from audioflamingo.config import list_presets
from benchmarks.common import table

_CHILD = r"""
import json, sys, warnings
import numpy as np, torch
warnings.simplefilter("ignore")
from audioflamingo.model.loading import load_model
preset, mode = sys.argv[1], sys.argv[2]
model = load_model(preset)
a = model.config.audio
x = (np.random.default_rng(0).standard_normal(int(5 * a.sample_rate)) * 0.1).astype(np.float32)
if mode == "inference":
    model.ask((x, a.sample_rate), "Describe the sound.", max_new_tokens=16)
else:
    from audioflamingo.text import encode, single_text
    model.train()
    ids, labels = encode(model.tokenizer, single_text("Describe the sound.", "a sound", task="caption"))
    audio = model.encode_audio([[model.load_clip((x, a.sample_rate))] for _ in range(4)])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    _, loss = model(ids[None].repeat(4, 1), None, audio, labels=labels[None].repeat(4, 1))
    loss.backward(); opt.step()
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across execve, so it would report the parent's peak
peak_kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"peak_rss_mb": peak_kb / 1024, "params": sum(p.numel() for p in model.parameters())}))
"""


def run(quick: bool = True) -> dict:
    presets = [p for p in list_presets() if p != "af1"] + ([] if quick else ["af1"])
    rows = []
    for preset in presets:
        for mode in ("inference", "train_step"):
            if preset == "af1" and mode == "train_step":
                continue  # 2.2 B parameters with AdamW states need ~36 GB: more than this machine has
            r = subprocess.run([sys.executable, "-c", _CHILD, preset, mode], capture_output=True, text=True)
            if r.returncode != 0:
                rows.append({"preset": preset, "mode": mode, "peak_rss_mb": float("nan"), "error": r.stderr.strip().splitlines()[-1]})
                continue
            rows.append({"preset": preset, "mode": mode, **json.loads(r.stdout.strip().splitlines()[-1])})
            print(f"  memory: {preset} {mode}: {rows[-1]['peak_rss_mb']:.0f} MB", flush=True)
    return {"rows": rows, "table": table(rows, ["preset", "mode", "params", "peak_rss_mb"])}
