"""ClapCap's log-mel front end in torch, as torchlibrosa computes it for msclap's HTS-AT.

Power spectrum of a centred, reflect-padded STFT with a periodic Hann window; librosa's Slaney mel
filterbank (htk=False, Slaney area normalisation); 10·log10 with amin 1e-10, ref 1.0, no top_db.
`cfg` is an `audioflamingo.model.htsat.HTSATConfig` (n_fft, hop_length, n_mels, fmin, fmax,
filterbank_rate).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from audioflamingo.model.encoder import mel_filterbank


def slaney_filterbank(rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    """(K, M) librosa-style Slaney filters (the same maths as the Whisper-style front end), K = n_fft // 2 + 1."""
    return mel_filterbank(rate, n_fft, n_mels, fmin, fmax).T.contiguous()  # (K, M)


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
        self.register_buffer("window", torch.hann_window(cfg.n_fft, periodic=True, device="cpu"), persistent=False)  # (n_fft,)

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
