"""A tiny synthetic corpus (sines and noise written to tmp_path) and configs for the training tests."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import soundfile as sf

from audioflamingo.train.config import load_train_config

CLASSES = {"low tone": 220.0, "mid tone": 660.0, "high tone": 1760.0}


def write_corpus(root: Path, per_class: int = 4, seed: int = 0) -> Path:
    """root/{train,val}.jsonl with caption, classification and dialog rows over sine clips + a noise dataset."""
    rng = np.random.default_rng(seed)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows = {"train": [], "val": []}
    n = 0
    for name, freq in CLASSES.items():
        for i in range(per_class + 1):
            split = "val" if i == per_class else "train"
            secs = 0.5 + 0.7 * rng.random()
            t = np.arange(int(secs * 16000)) / 16000
            x = 0.4 * np.sin(2 * np.pi * freq * (1 + 0.02 * i) * t) + 0.02 * rng.standard_normal(t.shape)
            rel = f"audio/{name.replace(' ', '_')}_{i}.wav"
            sf.write(root / rel, x.astype(np.float32), 16000)
            base = {"audio": rel, "dataset": "tones", "split": split, "duration": round(secs, 3)}
            rows[split] += [
                {**base, "id": f"t{n}#0", "task": "caption", "prompt": "Generate an audio caption.", "answer": f"A {name}."},
                {**base, "id": f"t{n}#1", "task": "classification", "prompt": "Which tone? OPTIONS: low tone, mid tone, high tone.",
                 "answer": name, "label": name, "options": list(CLASSES)},
                {**base, "id": f"t{n}#2", "task": "dialog", "prompt": "What is it?", "answer": f"A {name}.",
                 "dialogue": [{"user": "What is it?", "assistant": f"A {name}."}, {"user": "Pitch?", "assistant": name.split()[0]}]},
            ]
            n += 1
    for i in range(4):
        rel = f"audio/noise_{i}.wav"
        sf.write(root / rel, (0.2 * rng.standard_normal(8000 + 1000 * i)).astype(np.float32), 16000)
        split = "val" if i == 3 else "train"
        rows[split].append({"id": f"n{i}", "audio": rel, "dataset": "noise", "task": "caption", "split": split,
                            "prompt": "Generate an audio caption.", "answer": "White noise."})
    for split, rs in rows.items():
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rs))
    return root


def tiny_config(root: Path, out: Path, stage: str = "sft", **overrides):
    data = {
        "stage": stage,
        "model": "tiny",
        "model_overrides": {"transform.dropout": 0.0},
        "out_dir": str(out),
        "data": {"train": [str(root / "train.jsonl")], "val": [str(root / "val.jsonl")]},
        "optim": {"lr": 3e-3, "warmup_steps": 1},
        "batch_size": 4,
        "micro_batch_size": 2,
        "max_steps": 3,
        "log_every": 1,
        "save_every": 0,
        "progress": False,
        "tensorboard": False,
        "export": False,
    }
    return load_train_config(data, overrides)


def free_port() -> int:
    """A free loopback port for a test's torch.distributed rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_process_group(rank: int, world: int, port: int) -> None:
    """The environment torchrun would give process `rank` of `world` (the training loop reads it), one thread."""
    import torch

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)


def leave_worker() -> None:
    """End a spawned worker whose work is done and saved, skipping interpreter finalisation: there, Gloo's worker
    threads may still hold finished async work whose tensors then die without the GIL, and the process aborts
    ("terminate called without an active exception", SIGABRT) although every result is whole — seen once in a CI
    run of the FSDP test, 7 Dec 2026; the teardown race pytorch/pytorch#179291 describes. An exception before this call still
    fails the test."""
    import gc
    import sys

    gc.collect()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def capture_model(monkeypatch) -> dict:
    """Patch the training loop's prepare_model so that the returned dict gets, once `train` runs, "model" (the
    model it trains) and "before" ({name: a copy of each parameter before the first step})."""
    import audioflamingo.train.loop as loop

    captured: dict = {}
    real = loop.prepare_model

    def spy(cfg, out, main):
        m = real(cfg, out, main)
        captured["model"], captured["before"] = m, {n: p.detach().clone() for n, p in m.named_parameters()}
        return m

    monkeypatch.setattr(loop, "prepare_model", spy)
    return captured
