import math
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from audioflamingo.audio import AudioError, AudioWarning, af1_normalize, load_audio, make_windows, num_windows
from audioflamingo.config import AudioConfig

AF1 = AudioConfig(sample_rate=44100, window_seconds=7.0, hop_seconds=1.75, max_windows=16)


@pytest.mark.parametrize(
    "seconds,expected", [(0.5, 1), (7.0, 1), (7.01, 2), (8.75, 2), (8.76, 3), (10.0, 3), (30.0, 15), (33.25, 16), (60.0, 16)]
)
def test_window_count_rule_af1(seconds, expected):
    assert num_windows(int(round(seconds * AF1.sample_rate)), AF1) == expected


def test_window_count_matches_formula():
    cfg = AudioConfig(sample_rate=100, window_seconds=1.0, hop_seconds=0.25, max_windows=16)
    for T in range(1, 600):
        want = 1 if T <= 100 else min(16, 1 + math.ceil((T - 100) / 25))
        assert num_windows(T, cfg) == want


def test_windows_layout_and_tail_padding():
    cfg = AudioConfig(sample_rate=10, window_seconds=1.0, hop_seconds=0.5, max_windows=4)
    from audioflamingo.audio import Clip

    x = np.arange(1, 17, dtype=np.float32)  # 16 samples -> windows at 0, 5, 10 (the last one padded)
    w = make_windows(Clip(x, 10), cfg)
    assert w.shape == (3, 10)
    assert torch.equal(w[1], torch.arange(6, 16, dtype=torch.float32))
    assert torch.equal(w[2, :6], torch.arange(11, 17, dtype=torch.float32)) and w[2, 6:].abs().sum() == 0


def test_cut_is_warned_with_amount_used():
    cfg = AudioConfig(sample_rate=10, window_seconds=1.0, hop_seconds=0.5, max_windows=2)
    from audioflamingo.audio import Clip

    clip = Clip(np.ones(100, np.float32), 10, "long.wav")
    with pytest.warns(AudioWarning, match="only the first 1.50 s"):
        w = make_windows(clip, cfg)
    assert w.shape == (2, 10) and any("long.wav" in m for m in clip.warnings)


@pytest.mark.parametrize("fmt,subtype", [("wav", "PCM_16"), ("flac", "PCM_16"), ("ogg", "VORBIS"), ("mp3", "MPEG_LAYER_III")])
def test_formats_rate_and_downmix(tmp_path, fmt, subtype):
    rate = 22050
    t = np.arange(rate) / rate
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 440 * t)], 1).astype(np.float32) * 0.5
    path = tmp_path / f"a.{fmt}"
    sf.write(path, stereo, rate, format=fmt.upper() if fmt != "ogg" else "OGG", subtype=subtype)
    with pytest.warns(AudioWarning) as rec:
        clip = load_audio(path, 16000)
    msgs = " ".join(str(r.message) for r in rec)
    assert "down-mixed 2 channels" in msgs and "resampled from 22050 Hz to 16000 Hz" in msgs
    assert clip.samples.dtype == np.float32 and clip.sample_rate == 16000
    assert abs(len(clip.samples) - 16000) < 1200  # mp3 adds encoder delay/padding
    assert len(clip.warnings) == 2
    # down-mix averages channels (never channel 0 only): peak ~ 0.75 * 0.5
    assert 0.3 < np.abs(clip.samples).max() < 0.45


def test_silence_is_fine_and_af1_normalise_no_nan():
    clip = load_audio((np.zeros(16000, np.float32), 16000), 16000)
    y = af1_normalize(clip.samples, AudioConfig(peak_normalize=True, int16_roundtrip=True))
    assert np.isfinite(y).all() and np.abs(y).max() == 0


def test_no_warning_when_nothing_changes(make_wav):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clip = load_audio(make_wav(rate=16000), 16000)
    assert clip.warnings == []


@pytest.mark.parametrize(
    "case,match",
    [
        ("missing", "does not exist"),
        ("empty", "empty"),
        ("text", "cannot decode"),
        ("header", "cannot decode"),
        ("nan", "NaN"),
        ("zero", "zero length"),
        ("dir", "folder"),
    ],
)
def test_bad_input_raises_audio_error_naming_the_file(tmp_path, case, match):
    path = tmp_path / f"{case}.wav"
    src = path
    if case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("this is not audio at all\n" * 10)
    elif case == "header":
        sf.write(path, np.zeros(1000, np.float32), 16000)
        raw = bytearray(path.read_bytes())
        raw[8:16] = b"XXXXXXXX"  # break the RIFF/WAVE header
        path.write_bytes(bytes(raw))
    elif case == "nan":
        src = (np.array([0.0, np.nan, 0.1], np.float32), 16000)
    elif case == "zero":
        src = (np.zeros(0, np.float32), 16000)
    elif case == "dir":
        path.mkdir()
    with pytest.raises(AudioError, match=match) as e:
        load_audio(src, 16000)
    if isinstance(src, type(path)):
        assert str(path) in str(e.value)
