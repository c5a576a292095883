"""Audio front end: any common file -> mono float32 at the model rate -> sliding windows.

Everything that changes the user's audio (down-mix, resample, cut) is recorded in `Clip.warnings`
and also emitted with `warnings.warn`, so nothing is changed silently.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from audioflamingo.config import AudioConfig


class AudioError(ValueError):
    """Bad audio input: missing, unreadable, not audio, empty, or holding NaN/inf samples."""

    def __init__(self, source: str, problem: str):
        self.source, self.problem = source, problem
        super().__init__(f"{source}: {problem}")


class AudioWarning(UserWarning):
    """The input was changed on the way in (down-mixed, resampled, cut)."""


@dataclass
class Clip:
    samples: np.ndarray  # (S,) float32 mono at `sample_rate`
    sample_rate: int
    path: str = "<array>"
    warnings: list[str] = field(default_factory=list)
    original_seconds: float = 0.0

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


def _note(clip_warnings: list[str], message: str) -> None:
    clip_warnings.append(message)
    warnings.warn(message, AudioWarning, stacklevel=3)


def _read(source) -> tuple[np.ndarray, int, str]:
    """Read a path, bytes or file object with soundfile -> ((S, C) float32, rate, name)."""
    if isinstance(source, (bytes, bytearray)):
        name, handle = "<bytes>", io.BytesIO(source)
    elif hasattr(source, "read"):
        name, handle = getattr(source, "name", "<stream>"), source
    else:
        path = Path(source)
        name = str(path)
        if not path.exists():
            raise AudioError(name, "file does not exist")
        if path.is_dir():
            raise AudioError(name, "is a folder, not an audio file")
        if path.stat().st_size == 0:
            raise AudioError(name, "file is empty (0 bytes)")
        handle = path
    try:
        data, rate = sf.read(handle, dtype="float32", always_2d=True)  # (S, C)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioError(name, f"cannot decode audio ({e}); supported: wav, flac, ogg, mp3 and what libsndfile reads") from e
    return data, int(rate), name


def to_mono_rate(
    data: np.ndarray, rate: int, target_rate: int, name: str = "<array>", clip_warnings: list | None = None
) -> np.ndarray:
    """(S,) or (S, C) float audio at `rate` -> (S',) float32 mono at `target_rate`, with warnings."""
    notes = clip_warnings if clip_warnings is not None else []
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 1:
        data = data[:, None]  # (S, 1)
    if data.ndim != 2:
        raise AudioError(name, f"expected (samples,) or (samples, channels) audio, got shape {data.shape}")
    if data.shape[0] == 0:
        raise AudioError(name, "audio has zero length")
    if rate <= 0:
        raise AudioError(name, f"invalid sample rate {rate}")
    if not np.isfinite(data).all():
        raise AudioError(name, "audio holds NaN or infinite samples")
    if data.shape[1] > 1:
        _note(notes, f"{name}: down-mixed {data.shape[1]} channels to mono (average of all channels)")
        data = data.mean(axis=1, keepdims=True)  # (S, 1)
    mono = data[:, 0]  # (S,)
    if rate != target_rate:
        _note(notes, f"{name}: resampled from {rate} Hz to {target_rate} Hz")
        mono = soxr.resample(mono, rate, target_rate, quality="HQ").astype(np.float32)  # (S',)
    return np.ascontiguousarray(mono, dtype=np.float32)


def load_audio(source, sample_rate: int = 16000, cfg: AudioConfig | None = None) -> Clip:
    """Load a path / bytes / file object / (samples, rate) pair to a mono float32 Clip at `sample_rate`."""
    notes: list[str] = []
    if isinstance(source, Clip):
        if source.sample_rate == sample_rate:
            return source
        source = (source.samples, source.sample_rate)
    if isinstance(source, tuple) and len(source) == 2:
        data, rate, name = np.asarray(source[0]), int(source[1]), "<array>"
        if data.ndim == 2 and data.shape[0] < data.shape[1] and data.shape[0] <= 8:
            data = data.T  # (C, S) -> (S, C): channels-first arrays are common (torch style)
    else:
        data, rate, name = _read(source)
    mono = to_mono_rate(data, rate, sample_rate, name, notes)
    clip = Clip(mono, sample_rate, name, notes, original_seconds=len(mono) / sample_rate)
    if cfg is not None and (cfg.peak_normalize or cfg.int16_roundtrip or cfg.rescale_nonnegative):
        clip.samples = af1_normalize(clip.samples, cfg)
    return clip


def af1_normalize(x: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """AF1's preprocessing: peak-normalise (silence stays silence, never NaN), int16 round trip.

    With `rescale_nonnegative` (AF1), a clip without a single negative sample is mapped affinely to
    2·x/max − 1 instead (AF1 turned an all-zero clip into NaN there: ours stays all-zero).
    """
    peak = float(np.abs(x).max()) if x.size else 0.0
    if cfg.rescale_nonnegative and peak > 0 and float(x.min()) >= 0:
        x = 2.0 * x / peak - 1.0
    elif cfg.peak_normalize and peak > 0:
        x = x / peak
    if cfg.int16_roundtrip:
        x = (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16).astype(np.float32) / 32767.0
    return x.astype(np.float32)


def num_windows(num_samples: int, cfg: AudioConfig) -> int:
    """AF1 rule: 1 if T <= W, else min(max_windows, 1 + ceil((T - W) / H))."""
    w, h = cfg.window_samples, cfg.hop_samples
    if num_samples <= w:
        return 1
    return min(cfg.max_windows, 1 + math.ceil((num_samples - w) / h))


def window_lengths(clip: Clip, cfg: AudioConfig) -> torch.Tensor:
    """Clip -> (W,) samples of audio in each of its make_windows windows (the rest is zero padding): a clip's own
    trailing silence counts as audio, unlike a search for the last nonzero sample."""
    w, h = cfg.window_samples, cfg.hop_samples
    n = num_windows(len(clip.samples), cfg)
    starts = torch.arange(n, device="cpu") * h  # (W,)
    return (min(len(clip.samples), w + (n - 1) * h) - starts).clamp(0, w)  # (W,)


def make_windows(clip: Clip, cfg: AudioConfig) -> torch.Tensor:
    """Clip -> (W, S) windows; the tail is zero-padded; audio past the last window is cut with a warning."""
    x = torch.from_numpy(clip.samples)  # (T,)
    w, h = cfg.window_samples, cfg.hop_samples
    n = num_windows(len(x), cfg)
    covered = w + (n - 1) * h
    if len(x) > covered:
        _note(
            clip.warnings,
            f"{clip.path}: audio is {len(x) / cfg.sample_rate:.2f} s; only the first {covered / cfg.sample_rate:.2f} s "
            f"({n} windows of {cfg.window_seconds} s, hop {cfg.hop_seconds} s) are used",
        )
        x = x[:covered]
    x = torch.nn.functional.pad(x, (0, covered - len(x)))  # (covered,)
    return x.unfold(0, w, h).contiguous()  # (W, S)
