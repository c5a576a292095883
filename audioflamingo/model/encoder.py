"""CLAP-style audio tower: waveform windows -> log-mel (in torch) -> conv stem -> Transformer -> pooled tokens.

The geometry follows Whisper's encoder (two 1-D convs, the second with stride 2, sinusoidal positions,
pre-LN blocks, a final LayerNorm) so pretrained Whisper encoder weights can be converted into it; a
learned-query attention pool then gives `tokens_per_window` vectors per window, projected to `out_dim`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from audioflamingo.config import EncoderConfig, MelConfig


def hz_to_mel(f):
    """Slaney mel scale (linear below 1 kHz, log above), as librosa's default."""
    f = torch.as_tensor(f, dtype=torch.float64, device="cpu")
    lin = f / (200.0 / 3)
    log = 15.0 + torch.log(f.clamp(min=1e-10) / 1000.0) / (math.log(6.4) / 27.0)
    return torch.where(f >= 1000.0, log, lin)


def mel_to_hz(m):
    m = torch.as_tensor(m, dtype=torch.float64, device="cpu")
    lin = m * (200.0 / 3)
    log = 1000.0 * torch.exp((math.log(6.4) / 27.0) * (m - 15.0))
    return torch.where(m >= 15.0, log, lin)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) Slaney-normalised triangular filters, computed in torch (no librosa)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64, device="cpu")  # (K,)
    edges = mel_to_hz(torch.linspace(hz_to_mel(fmin).item(), hz_to_mel(fmax).item(), n_mels + 2, device="cpu"))  # (M+2,)
    widths = edges[1:] - edges[:-1]  # (M+1,)
    ramps = edges[:, None] - freqs[None, :]  # (M+2, K)
    lower = -ramps[:-2] / widths[:-1, None]  # (M, K)
    upper = ramps[2:] / widths[1:, None]  # (M, K)
    fb = torch.clamp(torch.minimum(lower, upper), min=0.0)  # (M, K)
    fb *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # Slaney area normalisation
    return fb.float()


class LogMel(nn.Module):
    """(B, S) waveforms -> (B, M, F) Whisper-style log-mel: log10, clamped to 8 below each window's max."""

    def __init__(self, cfg: MelConfig, sample_rate: int):
        super().__init__()
        self.n_fft, self.hop = cfg.n_fft, cfg.hop_length
        fb = mel_filterbank(cfg.filterbank_rate or sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
        self.register_buffer("filters", fb, persistent=False)  # (M, K)
        self.register_buffer("window", torch.hann_window(cfg.n_fft, device="cpu"), persistent=False)  # (n_fft,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(x.float(), self.n_fft, self.hop, window=self.window, return_complex=True)  # (B, K, F+1)
        power = spec[..., :-1].abs() ** 2  # (B, K, F)
        mel = self.filters @ power  # (B, M, F)
        logmel = torch.log10(mel.clamp(min=1e-10))  # (B, M, F)
        logmel = torch.maximum(logmel, logmel.amax(dim=(1, 2), keepdim=True) - 8.0)
        return (logmel + 4.0) / 4.0  # (B, M, F)


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """(length, channels) sinusoidal position table (sin half, cos half)."""
    inc = math.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-inc * torch.arange(channels // 2, dtype=torch.float32, device="cpu"))  # (C/2,)
    t = torch.arange(length, dtype=torch.float32, device="cpu")[:, None] * inv[None, :]  # (L, C/2)
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)  # (L, C)


class AttentionPool(nn.Module):
    """N learned queries attend over the frames: (B, F, E) -> (B, N, E)."""

    def __init__(self, width: int, heads: int, n_tokens: int):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(n_tokens, width) * width**-0.5)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.queries.unsqueeze(0).expand(x.shape[0], -1, -1)  # (B, N, E)
        out, _ = self.attn(q, x, x, need_weights=False)  # (B, N, E)
        return self.ln(out + x.mean(dim=1, keepdim=True))  # (B, N, E)


class AudioEncoder(nn.Module):
    """Per-window audio tower. forward: (B, S) float waveforms at the model rate -> (B, N, out_dim)."""

    def __init__(self, cfg: EncoderConfig, sample_rate: int, window_samples: int):
        super().__init__()
        self.cfg = cfg
        E = cfg.width
        self.mel = LogMel(cfg.mel, sample_rate)
        self.conv1 = nn.Conv1d(cfg.mel.n_mels, E, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(E, E, kernel_size=3, stride=2, padding=1)
        n_frames = window_samples // cfg.mel.hop_length
        self.register_buffer("positions", sinusoids((n_frames + 1) // 2 + 1, E), persistent=False)  # (F', E)
        layer = nn.TransformerEncoderLayer(E, cfg.heads, 4 * E, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.ln_post = nn.LayerNorm(E)
        self.pool = AttentionPool(E, cfg.heads, cfg.tokens_per_window)
        self.proj = nn.Linear(E, cfg.out_dim)

    def frames(self, windows: torch.Tensor) -> torch.Tensor:
        """(B, S) -> (B, F', E) frame features before pooling."""
        x = self.mel(windows)  # (B, M, F)
        x = F.gelu(self.conv1(x.to(self.conv1.weight.dtype)))  # (B, E, F)
        x = F.gelu(self.conv2(x))  # (B, E, F')
        x = x.transpose(1, 2)  # (B, F', E)
        x = x + self.positions[: x.shape[1]].to(x.dtype)
        return self.ln_post(self.blocks(x))  # (B, F', E)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pool(self.frames(windows)))  # (B, N, out_dim)


def build_encoder(cfg: EncoderConfig, sample_rate: int, window_samples: int) -> nn.Module:
    if cfg.kind == "conv-transformer":
        return AudioEncoder(cfg, sample_rate, window_samples)
    if cfg.kind == "htsat":
        from audioflamingo.model.htsat import build_htsat_encoder  # AF1's ClapCap tower

        return build_htsat_encoder(cfg)
    raise ValueError(f"encoder.kind {cfg.kind!r} unknown; use 'conv-transformer' or 'htsat'")
