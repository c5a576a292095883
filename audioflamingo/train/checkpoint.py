"""Resumable training checkpoints, written atomically.

    OUT/checkpoints/step-000120/    trainable.safetensors  trainable weights (and the CLAP head)
                                    state.pt               optimizer, scheduler, step, data position, RNG states
                                    config.yaml            the full training config
    OUT/checkpoints/latest          the name of the newest complete checkpoint

A checkpoint is written into a temporary folder and renamed into place, then `latest` is replaced (also
by rename), so a kill at any moment leaves the previous checkpoint whole and `latest` pointing at it.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import yaml

from audioflamingo.config import to_dict


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(root: Path, step: int, weights: dict, state: dict, cfg, keep: int = 2) -> Path:
    """Write checkpoint `step` atomically under root/checkpoints; keep the newest `keep`."""
    from safetensors.torch import save_file

    ckdir = Path(root) / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    tmp = ckdir / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(weights, str(tmp / "trainable.safetensors"))
    torch.save(state, tmp / "state.pt")
    (tmp / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    final = ckdir / name
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    _fsync_dir(ckdir)
    pointer = ckdir / f".latest-{os.getpid()}"
    pointer.write_text(name + "\n")
    pointer.replace(ckdir / "latest")
    _fsync_dir(ckdir)
    done = sorted(p for p in ckdir.glob("step-*") if p.is_dir())
    for old in done[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    ckdir = Path(root) / "checkpoints"
    pointer = ckdir / "latest"
    if not pointer.is_file():
        return None
    path = ckdir / pointer.read_text().strip()
    return path if (path / "state.pt").is_file() else None


def load_checkpoint(path: Path) -> tuple[dict, dict]:
    """-> (trainable weights, state)."""
    from safetensors.torch import load_file

    weights = load_file(str(path / "trainable.safetensors"))
    state = torch.load(path / "state.pt", weights_only=False)  # our own file: holds RNG tuples
    return weights, state
