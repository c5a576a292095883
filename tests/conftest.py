import os

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def make_wav(tmp_path):
    """Write a synthetic clip (sine + a little noise) and return its path."""

    def _make(name="clip.wav", seconds=2.0, rate=16000, channels=1, freq=440.0, seed=0, subtype=None):
        rng = np.random.default_rng(seed)
        t = np.arange(int(round(seconds * rate))) / rate
        x = 0.5 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.shape)
        x = np.stack([x * (1 - 0.2 * c) for c in range(channels)], axis=1) if channels > 1 else x
        path = tmp_path / name
        sf.write(path, x.astype(np.float32), rate, subtype=subtype)
        return path

    return _make
