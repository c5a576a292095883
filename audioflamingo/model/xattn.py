"""Representation transformation layers and gated cross-attention dense blocks.

    x <- x + tanh(alpha) * CrossAttn(LN(x), audio)      alpha = 0 at init
    x <- x + tanh(beta)  * FFN(LN(x))                   beta  = 0 at init

so at initialisation the LM is exactly unchanged. Which audio a text token may attend to is given by a
boolean mask (True = may attend); a token allowed no audio at all gets a zero cross-attention output.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from audioflamingo.config import TransformConfig, XAttnConfig
from audioflamingo.model.encoder import clip_dim, sinusoids, summary_dim


class RepresentationTransform(nn.Module):
    """Self-attention over the window tokens of each audio (post-LN, as AF1), padding masked.

    forward: x (A, L, E) window tokens of A audios, pad (A, L) bool True = padding -> (A, L, E).
    Attention stays inside one audio, so an audio's representation never depends on another audio
    (text that may see audio 0 only is never influenced by audio 1 through this layer).
    """

    def __init__(self, width: int, cfg: TransformConfig):
        super().__init__()
        self.width, self.cfg = width, cfg
        layer = nn.TransformerEncoderLayer(width, cfg.heads, cfg.ffn, dropout=cfg.dropout, batch_first=True,
                                           layer_norm_eps=cfg.layer_norm_eps)
        self.layers = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False) if cfg.layers else None
        if cfg.positions not in ("sinusoids", "interleaved"):
            raise ValueError(f"transform.positions {cfg.positions!r} unknown; use 'sinusoids' or 'interleaved'")
        self.input_norm = nn.LayerNorm(width, eps=cfg.layer_norm_eps) if cfg.input_norm and cfg.layers else None
        dim = summary_dim(cfg)
        if dim:  # (W, dim) window summaries (pitch, rhythm, level) -> (W, E), added to that window's tokens by the model
            self.summary_in = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, width))
            nn.init.zeros_(self.summary_in[1].weight)  # zero: adds nothing until trained
            nn.init.zeros_(self.summary_in[1].bias)
        if clip_dim(cfg):  # (A, C) clip-level summary (transform.level.clip) -> (A, E), added to all its tokens by the model
            self.clip_in = nn.Sequential(nn.LayerNorm(clip_dim(cfg)), nn.Linear(clip_dim(cfg), width))
            nn.init.zeros_(self.clip_in[1].weight)  # zero: adds nothing until trained
            nn.init.zeros_(self.clip_in[1].bias)
        if cfg.embedding_input:  # (A, E) the audio's CLAP embedding -> (A, E), added to all its tokens by the model
            self.embedding_in = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width))
            nn.init.zeros_(self.embedding_in[1].weight)  # zero: adds nothing until trained
            nn.init.zeros_(self.embedding_in[1].bias)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        if self.layers is None:
            return x
        if self.cfg.scale_input:
            x = x * math.sqrt(self.width)
        table = interleaved_sinusoids if self.cfg.positions == "interleaved" else sinusoids
        x = x + table(x.shape[1], self.width).to(x)  # (A, L, E)
        if self.input_norm is not None:
            x = self.input_norm(x)  # (A, L, E)
        # The fast path of nn.TransformerEncoder drops padded rows into NaN-free zeros only in eval;
        # the explicit mask keeps train and eval identical. AF1 had no mask (mask_padding: false).
        return self.layers(x, src_key_padding_mask=pad if self.cfg.mask_padding else None)  # (A, L, E)


def interleaved_sinusoids(length: int, channels: int) -> torch.Tensor:
    """(length, channels) AF1's position table: angle pos / 10000^(2·(j // 2) / C), sin on even j, cos on odd j."""
    pos = torch.arange(length, dtype=torch.float64)[:, None]  # (L, 1)
    j = torch.arange(channels, dtype=torch.float64)[None, :]  # (1, C)
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / channels)  # (L, C)
    return torch.where(j.long() % 2 == 0, torch.sin(angle), torch.cos(angle)).float()  # (L, C)


class GatedCrossAttentionBlock(nn.Module):
    """forward: x (B, T, D), kv = (k, v) each (B, H, L, Dh), allow (B, T, L) bool -> (B, T, D)."""

    def __init__(self, dim: int, audio_dim: int, cfg: XAttnConfig):
        super().__init__()
        inner = cfg.heads * cfg.head_dim
        self.heads, self.head_dim = cfg.heads, cfg.head_dim
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=cfg.bias)
        self.to_kv = nn.Linear(audio_dim, 2 * inner, bias=cfg.bias)
        self.to_out = nn.Linear(inner, dim, bias=cfg.bias)
        self.attn_gate = nn.Parameter(torch.zeros(1))
        self.ff = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, cfg.ffn_mult * dim, bias=cfg.bias),
            nn.GELU(),
            nn.Linear(cfg.ffn_mult * dim, dim, bias=cfg.bias),
        )
        self.ff_gate = nn.Parameter(torch.zeros(1))

    def audio_kv(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, E) audio tokens -> keys, values (B, H, L, Dh); computed once per request in decoding."""
        B, L, _ = audio.shape
        kv = self.to_kv(audio.to(self.to_kv.weight.dtype))  # (B, L, 2*H*Dh)
        kv = kv.view(B, L, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (2, B, H, L, Dh)
        return kv[0], kv[1]

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], allow: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        k, v = kv
        q = self.to_q(self.norm(x)).view(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)
        any_audio = allow.any(dim=-1, keepdim=True)  # (B, T, 1)
        safe = allow | ~any_audio  # rows with no audio attend to everything, then are zeroed: no NaN
        out = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=safe[:, None])  # (B, H, T, Dh)
        out = out.transpose(1, 2).reshape(B, T, -1)  # (B, T, H*Dh)
        out = self.to_out(out) * any_audio.to(out.dtype)  # (B, T, D)
        x = x + torch.tanh(self.attn_gate) * out
        return x + torch.tanh(self.ff_gate) * self.ff(x)  # (B, T, D)
