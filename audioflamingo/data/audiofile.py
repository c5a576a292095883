"""Decode any source file once, to the model's rate, mono, 16-bit WAV; measure and fingerprint clips.

soundfile reads WAV/FLAC/Ogg directly; everything else (G.722 telephony prompts, WavPack, MP3) goes
through the ffmpeg command line. Resampling is soxr's, the same resampler the model front end uses.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SILENCE_DBFS = -60.0  # a clip whose RMS is below this is "silent" (dropped by the builder, flagged by check)


class DecodeError(RuntimeError):
    """A source file could not be decoded; the message names the file."""


def decode(path: str | Path, rate: int, ffmpeg_format: str | None = None) -> np.ndarray:
    """Float32 mono samples of `path` at `rate` Hz. `ffmpeg_format` forces ffmpeg with `-f FORMAT`."""
    path = Path(path)
    if ffmpeg_format is None:
        try:
            x, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (S, C)
            x = x.mean(axis=1)  # (S,)
            if sr != rate and len(x):
                x = soxr.resample(x, sr, rate).astype(np.float32)  # (S',)
            return np.ascontiguousarray(x, dtype=np.float32)
        except (sf.LibsndfileError, RuntimeError, TypeError):
            pass  # not a format libsndfile knows: fall through to ffmpeg
    cmd = ["ffmpeg", "-nostdin", "-v", "error"]
    if ffmpeg_format:
        cmd += ["-f", ffmpeg_format]
    cmd += ["-i", str(path), "-ac", "1", "-ar", str(rate), "-f", "f32le", "-"]
    try:
        out = subprocess.run(cmd, capture_output=True, check=True, timeout=120).stdout
    except FileNotFoundError as e:
        raise DecodeError(f"{path}: needs ffmpeg to decode (apt-get install ffmpeg)") from e
    except subprocess.CalledProcessError as e:
        raise DecodeError(f"{path}: ffmpeg failed: {e.stderr.decode(errors='replace').strip()[:200]}") from e
    return np.frombuffer(out, dtype="<f4").copy()


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> None:
    """Write 16-bit PCM WAV atomically (temp file then rename), so an interrupted build never leaves
    a half-written clip that a resumed build would take for finished."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.wav")
    peak = float(np.max(np.abs(samples))) if len(samples) else 0.0
    if peak > 1.0:  # never clip: scale down instead (synthesis and mixing can overshoot)
        samples = samples / peak * 0.99
    sf.write(str(tmp), samples.astype(np.float32), rate, subtype="PCM_16")
    tmp.replace(path)


def rms_dbfs(samples: np.ndarray) -> float:
    """Root-mean-square level in dB relative to full scale (-inf for an empty or all-zero clip)."""
    if len(samples) == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return float(20.0 * np.log10(rms)) if rms > 0 else float("-inf")


def trim_silence(samples: np.ndarray, rate: int, threshold_db: float = -50.0) -> np.ndarray:
    """Cut leading and trailing stretches quieter than `threshold_db` relative to the clip's peak."""
    if len(samples) == 0:
        return samples
    peak = float(np.max(np.abs(samples)))
    if peak == 0:
        return samples[:0]
    loud = np.nonzero(np.abs(samples) > peak * 10 ** (threshold_db / 20))[0]
    pad = int(0.02 * rate)
    return samples[max(0, loud[0] - pad) : loud[-1] + pad]


def pcm_hash(samples: np.ndarray) -> str:
    """Exact-duplicate key: SHA-1 of the 16-bit PCM as it is stored."""
    pcm = np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2")
    return hashlib.sha1(pcm.tobytes()).hexdigest()


def fingerprint(samples: np.ndarray, rate: int) -> str:
    """Near-duplicate key from decoded audio: re-encoded, resampled or re-levelled copies of one sound
    map to the same string. It is the coarse spectral shape (16 log bands, quantised) of four
    equal-length quarters of the clip, peak-normalised, plus the duration in tenths of a second."""
    x = trim_silence(samples, rate)
    if len(x) < rate // 50:
        return "short:" + pcm_hash(x)
    x = x / (np.max(np.abs(x)) + 1e-9)
    n_fft = 1024
    codes = []
    for part in np.array_split(x, 4):
        if len(part) < n_fft:
            part = np.pad(part, (0, n_fft - len(part)))
        frames = part[: len(part) // n_fft * n_fft].reshape(-1, n_fft)  # (F, n_fft)
        spec = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)).mean(axis=0)  # (n_fft/2+1,)
        edges = np.unique(np.geomspace(2, len(spec) - 1, 17).astype(int))
        bands = np.array([spec[a:b].mean() for a, b in zip(edges[:-1], edges[1:])])
        db = 20 * np.log10(bands / (bands.max() + 1e-12) + 1e-6)
        codes.append(np.clip(np.round(db / 6.0), -10, 0).astype(int))  # 6 dB steps
    dur = int(round(len(x) / rate * 10))
    return f"{dur}:" + hashlib.sha1(np.concatenate(codes).tobytes()).hexdigest()[:16]
