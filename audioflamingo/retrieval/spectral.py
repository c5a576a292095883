"""A model-free embedder: log energies in log-spaced frequency bands of the whole clip.

Deterministic and instant, it follows the embedder interface of the model (`embed_audio`,
`embedding_fingerprint`), so an index can be built, searched and tested without trained weights:
clips with similar spectra (two sines of nearby pitch) are near each other. It is a baseline, not
a substitute for the model's CLAP audio tower.
"""

from __future__ import annotations

import hashlib

import numpy as np
import soundfile as sf
import soxr


class SpectralEmbedder:
    def __init__(self, bands: int = 32, sample_rate: int = 16000, fmin: float = 50.0, seconds: float = 10.0):
        self.bands, self.sample_rate, self.fmin, self.seconds = bands, sample_rate, fmin, seconds
        # band edges in Hz, log-spaced from fmin to Nyquist
        self.edges = np.geomspace(fmin, sample_rate / 2, bands + 1)
        self.blur = np.exp(-0.5 * (np.arange(-3, 4) / 1.5) ** 2)  # Gaussian across bands, sigma 1.5 bands

    def embedding_fingerprint(self) -> str:
        spec = f"spectral-v2:bands={self.bands}:rate={self.sample_rate}:fmin={self.fmin}:seconds={self.seconds}"
        return "spectral-" + hashlib.sha256(spec.encode()).hexdigest()[:16]

    def _load(self, audio) -> np.ndarray:
        if isinstance(audio, tuple):  # (samples, rate)
            x, rate = np.asarray(audio[0], np.float32), int(audio[1])
        else:
            x, rate = sf.read(str(audio), dtype="float32", always_2d=True)  # (S, C)
            x = x.mean(axis=1)  # (S,)
        if x.ndim == 2:
            x = x.mean(axis=1)  # (S,)
        if rate != self.sample_rate:
            x = soxr.resample(x, rate, self.sample_rate)
        return x[: int(self.seconds * self.sample_rate)]  # first `seconds`, as AF1's retrieval CLAP did

    def embed_one(self, audio) -> np.ndarray:
        x = self._load(audio)
        power = np.abs(np.fft.rfft(x)) ** 2  # (S/2 + 1,)
        freqs = np.fft.rfftfreq(len(x), 1.0 / self.sample_rate)
        band = np.digitize(freqs, self.edges) - 1  # band index per frequency bin; -1 / bands = outside
        inside = (band >= 0) & (band < self.bands)
        energy = np.bincount(band[inside], weights=power[inside], minlength=self.bands)  # (bands,)
        v = np.log1p(energy / max(len(x), 1))
        v = np.convolve(np.pad(v, 3, mode="edge"), self.blur, mode="valid")  # (bands,): nearby pitches overlap
        v = v - v.mean()  # loudness-independent shape of the spectrum
        return (v / max(np.linalg.norm(v), 1e-12)).astype(np.float32)

    def embed_audio(self, audios) -> np.ndarray:
        """list of paths or (samples, rate) -> (n, bands) float32, L2-normalised."""
        return np.stack([self.embed_one(a) for a in audios]) if audios else np.zeros((0, self.bands), np.float32)
