"""transform.level (each window's unpadded length, RMS level and onset counts) and transform.embedding_input (the
audio's CLAP embedding added to its tokens): parameter-free inputs behind zero-initialised projections. That
pretraining trains them: tests/test_pitch_tokens.py."""

import math

import pytest
import torch

from audioflamingo.config import LevelConfig
from audioflamingo.model.encoder import LevelSummary, soft_one_hot
from audioflamingo.train.data import ClipStore, FeatureCache
from conftest import tiny_model

SR = 16000


def _notes(count: int, gap: float = 0.5, seconds: float = 7.0, amp: float = 0.3) -> torch.Tensor:
    """(S,) `count` decaying tones `gap` seconds apart, then zero padding up to `seconds`."""
    x = torch.zeros(int(seconds * SR))
    t = torch.arange(int(0.4 * SR)) / SR
    env = torch.exp(-6 * t) * torch.cos(0.5 * math.pi * t / 0.4) ** 2  # (0.4 s,) decays to 0: no click at its end
    for k in range(count):
        f = 220 * 2 ** ((k % 5) / 12)
        i = int((0.05 + k * gap) * SR)
        x[i : i + len(t)] += amp * torch.sin(2 * math.pi * f * t) * env
    return x


def _decode(cfg: LevelConfig, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """(W, dim) -> seconds (W,), dB (W,), onset counts per fraction: the bins' weighted centres and argmaxes."""
    n_sec, n_db, _ = cfg.bins()
    sec = s[:, :n_sec] @ (torch.arange(n_sec) * cfg.seconds_step)  # (W,)
    db = cfg.db_low + s[:, n_sec : n_sec + n_db] @ (torch.arange(n_db) * cfg.db_step)  # (W,)
    rest = s[:, n_sec + n_db :]
    counts = [rest[:, k * (cfg.max_onsets + 1) : (k + 1) * (cfg.max_onsets + 1)].argmax(1) for k in range(len(cfg.peak_fractions))]
    return sec, db, counts


def test_soft_one_hot_reads_back_values_between_bins():
    v = torch.tensor([0.0, 0.3, 1.1, 9.0])
    h = soft_one_hot(v, 0.0, 0.25, 29)  # (4, 29)
    assert torch.allclose(h.sum(1), torch.ones(4))
    assert torch.allclose(h @ (torch.arange(29) * 0.25), torch.tensor([0.0, 0.3, 1.1, 7.0]))  # 9 s lands on the last bin


def test_level_summary_reads_length_level_and_note_count():
    cfg = LevelConfig(enabled=True)
    ls = LevelSummary(cfg, SR)
    t = torch.arange(int(2.6 * SR)) / SR
    tone = torch.nn.functional.pad(0.1 * torch.sin(2 * math.pi * 440 * t), (0, int(4.4 * SR)))  # 2.6 s, then padding
    wins = torch.stack([tone, _notes(3), _notes(6), torch.zeros(7 * SR)])  # (4, 7 s)
    s = ls(wins)  # (4, dim)
    assert s.shape == (4, sum(cfg.bins()))
    sec, db, counts = _decode(cfg, s)
    assert abs(sec[0] - 2.6) < 0.01 and abs(db[0] - 20 * math.log10(0.1 / math.sqrt(2))) < 0.1  # -23 dBFS sine
    assert all(c[1:3].tolist() == [3, 6] for c in counts)  # every threshold counts the notes
    assert counts[0][0] == 1  # a steady tone: one onset
    assert sec[3] == 0 and db[3] == cfg.db_low and all(c[3] == 0 for c in counts)  # silence
    assert torch.allclose(torch.cat([ls(w[None]) for w in wins]), s, atol=1e-6)  # a batch = windows one by one
    # louder is louder, and a level outside the bins stays on the end bin
    assert _decode(cfg, ls(4 * wins[:1]))[1][0] > db[0] + 11


def _pair():
    """A tiny model and the same weights with transform.level and embedding_input on (their projections at zero)."""
    plain = tiny_model()
    more = tiny_model(**{"transform.level.enabled": True, "transform.embedding_input": True})
    missing, unexpected = more.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and {m.split(".")[1] for m in missing} == {"summary_in", "embedding_in"}
    return plain, more


@torch.no_grad()
def test_fresh_level_and_embedding_inputs_change_nothing_until_trained():
    plain, more = _pair()
    clips = [more.load_clip((_notes(4, seconds=2.5).numpy(), SR)), more.load_clip((_notes(2, seconds=1.5).numpy(), SR))]
    a, b = more.encode_audio([clips, clips[1:]]), plain.encode_audio([clips, clips[1:]])
    assert torch.allclose(a.tokens, b.tokens, atol=1e-6) and torch.equal(a.audio_index, b.audio_index)
    torch.nn.init.normal_(more.transform.embedding_in[1].weight)
    c = more.encode_audio([clips, clips[1:]])
    assert not torch.allclose(c.tokens, b.tokens, atol=1e-3)  # trained, it speaks
    assert torch.equal(c.tokens[a.audio_index < 0], torch.zeros_like(c.tokens[a.audio_index < 0]))  # never on padding
    assert torch.allclose(c.embedding, b.embedding)  # the CLAP embedding itself is unchanged
    # the second sample holds clip 1 alone: its tokens there equal its tokens in the first sample
    n0 = int((a.audio_index[0] == 0).sum())
    n1 = int((a.audio_index[1] == 0).sum())
    assert torch.allclose(c.tokens[0, n0 : n0 + n1], c.tokens[1, :n1], atol=1e-5)


def test_old_checkpoint_loads_with_embedding_input_switched_on(tmp_path):
    from audioflamingo.model.loading import load_model
    from audioflamingo.train.loop import export

    plain = tiny_model()
    path = export(plain, tmp_path / "plain")
    with pytest.warns(UserWarning, match="transform.embedding_in"):
        model = load_model(path, overrides={"transform.embedding_input": True})
    clip = model.load_clip((_notes(3, seconds=2.0).numpy(), SR))
    with torch.no_grad():
        assert torch.allclose(model.encode_audio([[clip]]).tokens, plain.encode_audio([[clip]]).tokens, atol=1e-6)


def test_feature_cache_of_other_summary_settings_is_not_reused(tmp_path, make_wav):
    wav = str(make_wav("a.wav", seconds=1.5))
    path = tmp_path / "cache.pt"
    a = tiny_model(**{"transform.level.enabled": True})
    b = tiny_model(**{"transform.level.enabled": True, "transform.level.min_gap": 0.2})  # same rows, other values
    assert a.summary_slots == b.summary_slots
    FeatureCache(a, ClipStore(SR, a.config.audio), path).fill([wav])
    assert FeatureCache(a, ClipStore(SR, a.config.audio), path).feats  # same settings: reused
    assert not FeatureCache(b, ClipStore(SR, b.config.audio), path).feats  # other settings: encoded again


def test_cached_encoder_tokens_gain_new_summary_rows_without_running_the_encoder(tmp_path, make_wav, monkeypatch):
    """As after the clap stage: its cache file holds the encoder's tokens only; a stage with window summaries keeps
    them and computes just the summary rows, equal to encoding from scratch (several clips in one batch)."""
    wavs = [str(make_wav(f"{i}.wav", seconds=s)) for i, s in enumerate((1.5, 4.0, 0.7))]
    path = tmp_path / "cache.pt"
    plain = tiny_model()
    level = tiny_model(**{"transform.level.enabled": True, "transform.level.clip": True})
    level.load_state_dict(plain.state_dict(), strict=False)  # the same encoder
    assert level.embedding_fingerprint() == plain.embedding_fingerprint()
    FeatureCache(plain, ClipStore(SR, plain.config.audio), path).fill(wavs)
    fresh = FeatureCache(level, ClipStore(SR, level.config.audio), None)
    fresh.fill(wavs)
    reused = FeatureCache(level, ClipStore(SR, level.config.audio), path)
    assert not reused.feats and sorted(reused.tokens) == sorted(wavs)

    def no_encoder(*a, **k):
        raise AssertionError("the encoder ran although its tokens were cached")

    monkeypatch.setattr(level.encoder, "forward", no_encoder)
    reused.fill(wavs)
    assert not reused.tokens
    for w in wavs:
        assert reused.feats[w].shape == fresh.feats[w].shape  # (W, N + slots, E)
        torch.testing.assert_close(reused.feats[w], fresh.feats[w], rtol=0, atol=1e-6)
    again = FeatureCache(level, ClipStore(SR, level.config.audio), path)  # the file now holds the rows too
    assert sorted(again.feats) == sorted(wavs) and not again.tokens
    other = tiny_model(seed=1, **{"transform.level.enabled": True})  # another encoder: nothing is reused
    assert not FeatureCache(other, ClipStore(SR, other.config.audio), path).tokens


def test_an_untrained_summary_projection_of_another_shape_is_replaced_a_trained_one_is_not(tmp_path):
    from audioflamingo.model.loading import CheckpointError, load_model
    from audioflamingo.train.loop import export

    pitched = tiny_model(**{"transform.pitch.enabled": True})  # summary_in at its zero init, as after the clap stage
    path = export(pitched, tmp_path / "clap")
    with pytest.warns(UserWarning, match="never trained"):
        model = load_model(path, overrides={"transform.level.enabled": True})
    assert model.window_summary.dim == pitched.window_summary.dim + sum(LevelConfig().bins())
    with torch.no_grad():
        torch.nn.init.normal_(pitched.transform.summary_in[1].weight)
    path = export(pitched, tmp_path / "trained")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_model(path, overrides={"transform.level.enabled": True})  # its trained projection would be lost



AF1_WINDOWS = {"audio.window_seconds": 7.0, "audio.hop_seconds": 1.75, "audio.max_windows": 16}


def _clip_summary(model, clips, dtype=None):
    """Clips -> (A, clip_dim) clip-level values as encode_audio makes them, and their decoded
    (seconds as captions write them, onset counts per fraction)."""
    from audioflamingo.audio import make_windows, window_lengths
    from audioflamingo.model.flamingo import clip_values

    cfg = model.config.transform.level
    wins = [make_windows(c, model.config.audio) for c in clips]
    feats = model.encode_windows(torch.cat(wins), torch.cat([window_lengths(c, model.config.audio) for c in clips]))
    if dtype is not None:  # as a half-precision encoder (or cache) would hand them over
        feats = feats.to(dtype)
    summary = model.split_windows(feats)[1]  # (W_total, D)
    v = clip_values(summary[:, -cfg.raw_dim():], [w.shape[0] for w in wins], model.config.audio.hop_seconds, cfg)  # (A, C)
    S, M = cfg.clip_max_seconds + 1, cfg.max_onsets + 1
    seconds = [f"{int(r[:S].argmax())}.{int(r[S:S + 10].argmax())}" for r in v]
    onsets = [[int(r[S + 10 + k * M : S + 10 + (k + 1) * M].argmax()) for k in range(len(cfg.peak_fractions))] for r in v]
    return v, seconds, onsets


@torch.no_grad()
def test_clip_level_duration_and_onsets_count_each_onset_once_across_overlapping_windows():
    model = tiny_model(**{"transform.level.enabled": True, "transform.level.clip": True, **AF1_WINDOWS})
    # (notes, gap, seconds): one window; three; five; notes right at window starts (1.75 s apart); a clip cut at 33.25 s
    # 6.745 s: in bfloat16 one value of seconds would read 6.75, i.e. "6.8"
    cases = [(6, 0.6, 4.0), (9, 1.0, 9.2), (14, 0.85, 12.3), (6, 1.75, 11.0), (15, 2.0, 40.0), (3, 1.5, 6.745)]
    with pytest.warns(UserWarning, match="only the first 33.25 s"):
        clips = [model.load_clip((_notes(n, gap=g, seconds=s).numpy(), SR)) for n, g, s in cases]
        v, seconds, onsets = _clip_summary(model, clips)
    # the notes end in exact zeros: the clip's length counts, not its last nonzero sample
    assert seconds == ["4.0", "9.2", "12.3", "11.0", "33.2", "6.7"]
    assert onsets == [[6, 6, 6], [9, 9, 9], [14, 14, 14], [6, 6, 6], [15, 15, 15], [3, 3, 3]]  # the last: 17 notes in 33.25 s, capped at 15
    assert torch.equal(torch.cat([_clip_summary(model, [c])[0] for c in clips]), v)  # a batch = clips one by one
    assert torch.equal(_clip_summary(model, clips, dtype=torch.bfloat16)[0], v)  # half-precision features keep the tenths
    # a window that starts inside a sound sees a rise at its start: not counted as an onset
    t = torch.arange(10 * SR, dtype=torch.float64) / SR  # float64: float32 phase at 10 s wobbles the spectrum
    fade = torch.clamp(torch.minimum(t, 10 - t) / 0.05, max=1)  # (S,) no click at either end
    drone = model.load_clip(((0.2 * torch.sin(2 * math.pi * 330 * t) * fade).float().numpy(), SR))
    assert _clip_summary(model, [drone])[2] == [[1, 1, 1]]


@torch.no_grad()
def test_fresh_clip_projection_changes_nothing_until_trained_and_old_checkpoints_load(tmp_path):
    from audioflamingo.model.loading import load_model
    from audioflamingo.train.loop import export

    level = tiny_model(**{"transform.level.enabled": True, **AF1_WINDOWS})
    torch.nn.init.normal_(level.transform.summary_in[1].weight)  # a trained window-summary projection
    path = export(level, tmp_path / "level")
    with pytest.warns(UserWarning, match="transform.clip_in"):
        model = load_model(path, overrides={"transform.level.clip": True})  # the trained summary_in is kept
    clips = [model.load_clip((_notes(3, seconds=2.0).numpy(), SR)), model.load_clip((_notes(9, gap=1.0, seconds=9.5).numpy(), SR))]
    a, b = model.encode_audio([clips, clips[1:]]), level.encode_audio([clips, clips[1:]])
    assert torch.allclose(a.tokens, b.tokens, atol=1e-6)
    torch.nn.init.normal_(model.transform.clip_in[1].weight)
    c = model.encode_audio([clips, clips[1:]])
    assert not torch.allclose(c.tokens, b.tokens, atol=1e-3)  # trained, it speaks
    assert torch.equal(c.tokens[a.audio_index < 0], torch.zeros_like(c.tokens[a.audio_index < 0]))  # never on padding
    n0, n1 = int((a.audio_index[0] == 0).sum()), int((a.audio_index[1] == 0).sum())
    assert torch.allclose(c.tokens[0, n0 : n0 + n1], c.tokens[1, :n1], atol=1e-5)  # per audio, wherever it sits
