"""AF1's audio slot layout, for reproducing the released weights (`audio.pad_to_max_windows: true`).

AF1 pads every audio to `max_windows` windows (16 × 7 s) and every sample to `audio_slots` audios
(foundation inference 1, chat 4: 16 or 64 windows), runs the zero padding windows through ClapCap too,
and feeds all slots of a sample, unmasked, to the transformation layers (positions 0 … L−1 over the
slots). The cross-attention blocks still ignore padding windows (`audio_index` −1).

Our default (`AudioFlamingo.encode_audio` without this flag) encodes only real windows and masks the
rest. Every all-zero window gives the same encoder output, so the padding is encoded once per batch.
"""

from __future__ import annotations

import torch

from audioflamingo.audio import Clip, make_windows
from audioflamingo.model.cache import AudioTokens


def slot_windows(clips: list[Clip], cfg, slots: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One sample's clips -> ([(W_j, S) real windows per clip], (slots·max_windows,) long audio index, −1 = padding)."""
    if len(clips) > slots:
        raise ValueError(f"{len(clips)} audios in one sample but the AF1 layout has {slots} slots (audio.audio_slots)")
    wins = [make_windows(c, cfg) for c in clips]  # A x (W_j, S)
    index = torch.full((slots * cfg.max_windows,), -1, dtype=torch.long)  # (L,)
    for j, w in enumerate(wins):
        index[j * cfg.max_windows : j * cfg.max_windows + w.shape[0]] = j
    return wins, index


def encode_audio_slots(model, audios: list[list[Clip]]) -> AudioTokens:
    """B samples, each a list of clips -> AudioTokens (B, slots·max_windows·N, E), the AF1 layout."""
    cfg = model.config.audio
    slots = max([cfg.audio_slots] + [len(s) for s in audios])
    per_sample = [slot_windows(sample, cfg, slots) for sample in audios]
    real = [w for wins, _ in per_sample for w in wins]
    zero = torch.zeros(1, cfg.window_samples)  # (1, S) the padding window, encoded once
    feats = model.encode_windows(torch.cat(real + [zero]))  # (W_total + 1, N, E)
    N, E = feats.shape[1], feats.shape[2]
    L = slots * cfg.max_windows
    x = feats[-1:].reshape(1, 1, N, E).repeat(len(audios), L, 1, 1)  # (B, L, N, E) padding everywhere first
    at = 0
    for b, (wins, index) in enumerate(per_sample):
        for j, w in enumerate(wins):
            start = j * cfg.max_windows
            x[b, start : start + w.shape[0]] = feats[at : at + w.shape[0]]  # (W_j, N, E)
            at += w.shape[0]
    x = x.reshape(len(audios), L * N, E)  # (B, L·N, E)
    audio_index = torch.stack([index for _, index in per_sample]).to(x.device)  # (B, L)
    audio_index = audio_index.repeat_interleave(N, dim=1)  # (B, L·N)
    pad = audio_index < 0  # (B, L·N) True = padding (ignored by the transform when mask_padding is false)
    x = model.transform(x, pad)  # (B, L·N, E) attention over every slot of the sample
    return AudioTokens(x, audio_index)
