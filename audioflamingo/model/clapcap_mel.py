"""ClapCap's log-mel front end in torch, as torchlibrosa computes it for msclap's HTS-AT.

Power spectrum of a centred, reflect-padded STFT with a periodic Hann window; librosa's Slaney mel
filterbank (htk=False, Slaney area normalisation); 10·log10 with amin 1e-10, ref 1.0, no top_db.
`cfg` is an `audioflamingo.model.htsat.HTSATConfig` (n_fft, hop_length, n_mels, fmin, fmax,
filterbank_rate).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


def hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    """Slaney mel scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above."""
    lin = f / (200.0 / 3)
    log = 15.0 + torch.log(f.clamp(min=1e-10) / 1000.0) / (math.log(6.4) / 27.0)
    return torch.where(f >= 1000.0, log, lin)


def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    lin = m * (200.0 / 3)
    log = 1000.0 * torch.exp((math.log(6.4) / 27.0) * (m - 15.0))
    return torch.where(m >= 15.0, log, lin)


def slaney_filterbank(rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    """(K, M) triangular mel filters with Slaney area normalisation, K = n_fft // 2 + 1 (float64 maths)."""
    freqs = torch.linspace(0, rate / 2, n_fft // 2 + 1, dtype=torch.float64)  # (K,)
    lo, hi = hz_to_mel(torch.tensor(float(fmin), dtype=torch.float64)), hz_to_mel(torch.tensor(float(fmax), dtype=torch.float64))
    edges = mel_to_hz(torch.linspace(lo.item(), hi.item(), n_mels + 2, dtype=torch.float64))  # (M+2,)
    widths = edges[1:] - edges[:-1]  # (M+1,)
    ramps = edges[:, None] - freqs[None, :]  # (M+2, K)
    rising = -ramps[:-2] / widths[:-1, None]  # (M, K)
    falling = ramps[2:] / widths[1:, None]  # (M, K)
    fb = torch.clamp(torch.minimum(rising, falling), min=0.0)  # (M, K)
    fb = fb * (2.0 / (edges[2:] - edges[:-2]))[:, None]  # (M, K) equal area per band
    return fb.T.float().contiguous()  # (K, M)


class LogMel(nn.Module):
    """(B, S) waveforms -> (B, F, M) log-mel in dB (ref 1.0, amin 1e-10, no top_db), F = 1 + S // hop.

    `filterbank` is a persistent buffer so a checkpoint's own filterbank (ClapCap stores one) is used
    verbatim; it is initialised to the value the reference computes.
    """

    def __init__(self, cfg):
        super().__init__()
        self.n_fft, self.hop = cfg.n_fft, cfg.hop_length
        fb = slaney_filterbank(cfg.filterbank_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
        self.register_buffer("filterbank", fb)  # (K, M)
        self.register_buffer("window", torch.hann_window(cfg.n_fft, periodic=True), persistent=False)  # (n_fft,)

    def _apply(self, fn, recurse=True):
        """Follow device moves but stay float32 under model.half() / .to(bfloat16): the front end is exact."""
        kept = {name: self._buffers[name] for name in ("filterbank", "window")}
        super()._apply(fn, recurse)
        for name, value in kept.items():
            self._buffers[name] = value.to(device=self._buffers[name].device, dtype=torch.float32)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(x.float(), self.n_fft, self.hop, window=self.window, center=True,
                          pad_mode="reflect", return_complex=True)  # (B, K, F)
        power = spec.real**2 + spec.imag**2  # (B, K, F)
        mel = power.transpose(1, 2) @ self.filterbank  # (B, F, M)
        return 10.0 * torch.log10(mel.clamp(min=1e-10))  # (B, F, M)
