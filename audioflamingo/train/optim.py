"""What trains in a stage, AdamW parameter groups, and the learning-rate schedule.

Freezing is by `requires_grad`: frozen parameters are never given to the optimizer, so nothing (not even
weight decay) can move them. "embeddings:new" trains only the rows of the added tokens: a gradient hook
zeroes every other row, and embeddings get weight decay 0, so AdamW leaves those rows bit-for-bit unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from audioflamingo.config import ConfigError
from audioflamingo.text import MediaIds

GROUPS = ("encoder", "encoder_head", "transform", "xattn", "embeddings", "embeddings:new", "lm", "clap_head")
HEAD_PREFIXES = ("encoder.pool.", "encoder.proj.", "encoder.pitch_norm.", "encoder.pitch_proj.")  # "encoder_head": what sits on the trunk


def set_trainable(model, groups: list[str], clap_head: nn.Module | None = None) -> dict[str, list[str]]:
    """Freeze everything, then unfreeze `groups`; returns {group: [parameter names]} that train."""
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ConfigError(f"trainable: unknown group(s) {unknown}; known: {', '.join(GROUPS)}")
    for p in model.parameters():
        p.requires_grad_(False)
    chosen: dict[str, list[str]] = {}
    parts = model.param_groups()
    for g in groups:
        if g == "clap_head":
            if clap_head is not None:
                for p in clap_head.parameters():
                    p.requires_grad_(True)
                chosen[g] = [f"clap_head.{n}" for n, _ in clap_head.named_parameters()]
            continue
        if g == "encoder_head":
            named = [(n, p) for n, p in parts["encoder"] if n.startswith(HEAD_PREFIXES)]
        else:
            named = parts["embeddings" if g.startswith("embeddings") else g]
        for _, p in named:
            p.requires_grad_(True)
        chosen[g] = [n for n, _ in named]
    if "embeddings:new" in groups and "embeddings" not in groups:
        rows = new_token_rows(model)
        for _, p in parts["embeddings"]:
            mask = rows.to(p.device, p.dtype)[:, None]  # (V, 1)
            p.register_hook(lambda g, m=mask: g * m.to(g.dtype))
    return chosen


def new_token_rows(model) -> torch.Tensor:
    """bool (V,): True on the embedding rows of the added tokens <audio>, <|endofchunk|>, <SEP>."""
    media = model.media
    rows = torch.zeros(model.param_groups()["embeddings"][0][1].shape[0], dtype=torch.bool)
    rows[[media.audio, media.eoc, media.sep]] = True
    return rows


def build_optimizer(model, cfg, clap_head: nn.Module | None = None) -> torch.optim.AdamW:
    """AdamW with decay on matrices only (not on embeddings, biases, norms, gates)."""
    emb = {id(p) for _, p in model.param_groups()["embeddings"]}
    named = list(model.named_parameters()) + (list(clap_head.named_parameters()) if clap_head is not None else [])
    decay, no_decay, seen = [], [], set()
    for _, p in named:
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.ndim >= 2 and id(p) not in emb else no_decay).append(p)
    if not decay and not no_decay:
        raise ConfigError("nothing to train: every parameter is frozen for this stage")
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


def lr_lambda(cfg, total_steps: int):
    """Linear warmup from 0, then constant / cosine / linear decay to min_lr_ratio."""

    def f(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        span = max(1, total_steps - cfg.warmup_steps)
        t = min(1.0, (step - cfg.warmup_steps) / span)
        shape = 0.5 * (1 + math.cos(math.pi * t)) if cfg.schedule == "cosine" else 1 - t
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape

    return f


def build_scheduler(optimizer, cfg, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps))


def media_rows(model) -> list[int]:
    m: MediaIds = model.media
    return [m.audio, m.eoc, m.sep]
