"""transform.pitch / transform.rhythm: parameter-free summaries of each window (pitch classes, onset periodicity),
added to the window's tokens after the transformation layers through a zero-initialised projection that the LM
loss trains."""

import math

import pytest
import torch

from audioflamingo.config import PitchConfig, RhythmConfig
from audioflamingo.model.encoder import PitchSummary, RhythmSummary
from audioflamingo.train.data import FeatureCache
from conftest import tiny_model
from train_fixtures import capture_model, tiny_config, write_corpus

SR = 16000


def _chord(midi_root: int, intervals, seconds: float = 2.0) -> torch.Tensor:
    """(S,) a chord of harmonic tones (4 partials each)."""
    t = torch.arange(int(seconds * SR)) / SR
    f0 = [440 * 2 ** ((midi_root + k - 69) / 12) for k in intervals]
    return sum(0.6**h * torch.sin(2 * math.pi * f * (h + 1) * t) for f in f0 for h in range(4)) / len(f0)


def _invariant(s: torch.Tensor) -> torch.Tensor:
    """(.., 146) -> the transposition-invariant parts (interval and triad profiles of both halves)."""
    return torch.cat([s[..., 12:73], s[..., 85:]], dim=-1)


def test_summary_ignores_padding_and_transposition_and_tells_major_from_minor():
    ps = PitchSummary(PitchConfig(enabled=True), SR)
    a, up, minor = _chord(57, (0, 4, 7)), _chord(58, (0, 4, 7)), _chord(57, (0, 3, 7))
    padded = torch.stack([torch.nn.functional.pad(x, (0, 7 * SR - len(x))) for x in (a, up, minor)])  # (3, 7 s)
    s = ps(padded)  # (3, 146)
    assert s.shape == (3, PitchSummary.dim)
    assert (ps(a[None])[0] - s[0]).abs().max() < 0.05  # 5 s of zero padding change almost nothing
    assert torch.equal(torch.cat([ps(x[None]) for x in padded]), s)  # a batch of windows = windows one by one
    assert (_invariant(s[0]) - _invariant(s[1])).abs().max() < 0.02  # A major vs B flat major: same profiles
    assert (_invariant(s[0]) - _invariant(s[2])).abs().max() > 0.05  # A major vs A minor: different ones
    assert s[0, :12].topk(3).indices.sort().values.tolist() == sorted((57 + k) % 12 for k in (0, 4, 7))
    assert ps(torch.zeros(2, SR)).abs().max() == 0  # silence: no pitch, no noise blown up by a normalisation


def _clicks(bpm: float, seconds: float = 2.5, offset: float = 0.1) -> torch.Tensor:
    """(S,) short noise bursts at `bpm`."""
    x = torch.zeros(int(seconds * SR))
    g = torch.Generator().manual_seed(0)
    t = offset
    while t < seconds - 0.03:
        i = int(t * SR)
        x[i : i + 300] = torch.randn(300, generator=g) * torch.linspace(1, 0, 300)
        t += 60 / bpm
    return x


def test_rhythm_summary_peaks_at_the_tempo_and_its_multiples():
    cfg = RhythmConfig(enabled=True)
    rs = RhythmSummary(cfg, SR)
    bpm = torch.exp(torch.linspace(math.log(cfg.bpm_low), math.log(cfg.bpm_high), cfg.bins))  # (bins,)
    for tempo in (75.0, 120.0, 160.0):
        s = rs(_clicks(tempo)[None])[0]  # (bins,)
        assert s.shape == (cfg.bins,) and s.abs().max() <= 1.0 + 1e-5
        peak = bpm[s.argmax()].item()
        assert min(abs(peak - tempo * k) for k in (0.5, 1.0, 2.0)) < 0.06 * tempo, (tempo, peak)  # on the beat or an octave
        near = s[(bpm / tempo - 1).abs() < 0.04].max()
        off = s[((bpm / tempo - 1.5).abs() < 0.08) | ((bpm / tempo - 0.75).abs() < 0.05)].max()
        assert near > off + 0.2, (tempo, near, off)  # the beat's lag correlates, one and a half beats' does not
    a = torch.stack([_clicks(120.0), _clicks(90.0, offset=0.3)])
    assert torch.allclose(torch.cat([rs(x[None]) for x in a]), rs(a), atol=1e-5)  # a batch = windows one by one
    assert rs(torch.zeros(1, SR)).abs().max() == 0  # silence: no periodicity


def _pair():
    """A tiny model and the same weights with transform.pitch on (its fresh projection at zero)."""
    plain = tiny_model()
    pitched = tiny_model(**{"transform.pitch.enabled": True, "transform.rhythm.enabled": True})
    missing, unexpected = pitched.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(m.startswith("transform.summary_in.") for m in missing)
    return plain, pitched


def _clips(model):
    t = torch.arange(int(2.5 * SR)) / SR
    return [model.load_clip((_chord(52, (0, 4, 7), 1.2).numpy(), SR)),
            model.load_clip(((0.3 * torch.sin(2 * math.pi * 330 * t)).numpy(), SR))]


@torch.no_grad()
def test_window_features_carry_the_summary_and_a_fresh_projection_changes_nothing():
    plain, pitched = _pair()
    N, E = pitched.config.encoder.tokens_per_window, pitched.config.encoder.out_dim
    D = PitchSummary.dim + RhythmConfig().bins
    assert pitched.window_summary.dim == D and pitched.summary_slots == -(-D // E)  # tiny: 146 + 48 values over 7 rows of 32
    wins = torch.randn(3, pitched.config.audio.window_samples) * 0.1
    f = pitched.encode_windows(wins)  # (3, N + slots, E)
    assert f.shape == (3, N + pitched.summary_slots, E)
    tokens, summary = pitched.split_windows(f)
    assert torch.equal(tokens, plain.encode_windows(wins)) and torch.allclose(summary, pitched.window_summary(wins))
    assert torch.allclose(torch.cat([pitched.encode_windows(w[None]) for w in wins]), f, atol=1e-5)  # batch = one by one
    assert torch.allclose(pitched.audio_embedding(f[:1]), plain.audio_embedding(plain.encode_windows(wins[:1])))
    with pytest.raises(ValueError, match="pitch"):
        pitched.split_windows(tokens)  # features of a model without the summary rows
    clips = _clips(pitched)
    a, b = pitched.encode_audio([clips, clips[1:]]), plain.encode_audio([clips, clips[1:]])
    assert torch.allclose(a.tokens, b.tokens, atol=1e-6) and torch.equal(a.audio_index, b.audio_index)
    assert torch.allclose(a.embedding, b.embedding)  # the CLAP embedding never includes the summary
    torch.nn.init.normal_(pitched.transform.summary_in[1].weight)
    c = pitched.encode_audio([clips, clips[1:]])
    assert not torch.allclose(c.tokens, b.tokens, atol=1e-3)  # trained, it speaks
    assert torch.allclose(c.embedding, b.embedding)
    cached = pitched.encode_audio([clips], [pitched.encode_windows(_windows(pitched, c_)) for c_ in clips])
    assert torch.allclose(cached.tokens, pitched.encode_audio([clips]).tokens, atol=1e-6)  # cached features = raw audio


def _windows(model, clip):
    from audioflamingo.audio import make_windows

    return make_windows(clip, model.config.audio)  # (W, S)


def test_old_checkpoint_loads_with_the_branch_switched_on_but_a_checkpoint_missing_it_does_not(tmp_path):
    from audioflamingo.model.loading import CheckpointError, load_model
    from audioflamingo.train.loop import export

    plain = tiny_model()
    path = export(plain, tmp_path / "plain")
    with pytest.warns(UserWarning, match="transform.summary_in"):
        pitched = load_model(path, overrides={"transform.pitch.enabled": True, "transform.rhythm.enabled": True})
    clips = _clips(pitched)
    with torch.no_grad():
        assert torch.allclose(pitched.encode_audio([clips]).tokens, plain.encode_audio([clips]).tokens, atol=1e-6)
    pitched_path = export(pitched, tmp_path / "pitched")
    assert load_model(pitched_path).config.transform.pitch.enabled
    from safetensors.torch import load_file, save_file

    state = {k: v for k, v in load_file(str(pitched_path / "model.safetensors")).items() if "summary_in" not in k}
    save_file(state, str(pitched_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing"):
        load_model(pitched_path)  # its own config says pitch: the weights must be there


def test_feature_cache_of_a_model_without_the_summary_is_not_reused(tmp_path, make_wav):
    from audioflamingo.train.data import ClipStore

    plain, pitched = _pair()
    wav = str(make_wav("a.wav", seconds=1.5))
    path = tmp_path / "cache.pt"
    c = FeatureCache(plain, ClipStore(SR, plain.config.audio), path)
    c.fill([wav])
    assert FeatureCache(plain, ClipStore(SR, plain.config.audio), path).feats  # same model: reused
    again = FeatureCache(pitched, ClipStore(SR, pitched.config.audio), path)
    assert not again.feats  # same encoder, other window features: encoded again
    again.fill([wav])
    assert again.feats[wav].shape[1] == pitched.config.encoder.tokens_per_window + pitched.summary_slots


@pytest.mark.parametrize("branches, trained", [
    ({"transform.pitch.enabled": True, "transform.rhythm.enabled": True}, {"transform.summary_in.1.weight", "transform.summary_in.1.bias"}),
    ({"transform.level.enabled": True, "transform.embedding_input": True}, {"transform.summary_in.1.weight", "transform.embedding_in.1.weight"}),
], ids=["pitch-rhythm", "level-embedding"])
def test_pretraining_trains_the_new_projections_and_leaves_the_encoder_alone(tmp_path, monkeypatch, branches, trained):
    from audioflamingo.train.loop import train

    captured = capture_model(monkeypatch)
    corpus = write_corpus(tmp_path / "corpus")
    cfg = tiny_config(corpus, tmp_path / "run", "pretrain", **{"max_steps": 3, "optim.weight_decay": 0.0,
                                                                 "model_overrides": {"transform.dropout": 0.0, **branches}})
    train(cfg)
    model, before = captured["model"], captured["before"]
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert trained <= changed
    assert not any(n.startswith("encoder.") for n in changed)
