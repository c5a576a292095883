"""The encoder's pitch-class branch (encoder.pitch): what it computes, and that it changes nothing until it trains."""

import math

import pytest
import torch

from audioflamingo.config import PitchConfig, load_model_config
from audioflamingo.model.encoder import AudioEncoder, PitchClassFeatures, build_encoder
from audioflamingo.train.loop import train
from train_fixtures import capture_model, tiny_config, write_corpus

SR = 16000


def _branch():
    return PitchClassFeatures(PitchConfig(enabled=True), SR, hop=320)


def _template(*pcs):
    c = torch.zeros(12)
    c[list(pcs)] = 1.0
    return c / c.norm()  # (12,)


def _chord(midi_root: int, intervals, seconds: float = 2.0) -> torch.Tensor:
    """(S,) a chord of harmonic tones (4 partials, decaying)."""
    t = torch.arange(int(seconds * SR)) / SR
    f0 = [440 * 2 ** ((midi_root + k - 69) / 12) for k in intervals]
    return sum(0.6**h * torch.sin(2 * math.pi * f * (h + 1) * t) for f in f0 for h in range(4)) / len(f0)


def test_interval_and_triad_profiles_ignore_transposition_and_tell_major_from_minor():
    b = _branch()
    g = torch.Generator().manual_seed(0)
    c = torch.rand(12, generator=g)
    c = c / c.norm()
    for k in range(12):  # transposing rolls the chroma and leaves both profiles exactly as they were
        p, q = b.profiles(c), b.profiles(torch.roll(c, k))
        assert torch.allclose(p[12:], q[12:], atol=1e-6) and torch.equal(q[:12], torch.roll(c, k))
    major, minor = b.profiles(_template(0, 4, 7)), b.profiles(_template(0, 3, 7))
    assert torch.allclose(major[12:18], minor[12:18])  # same intervals (3, 4, 5)...
    assert (major[18:] - minor[18:]).abs().max() > 0.1  # ...different triads
    assert b.profiles(c).shape == (PitchClassFeatures.dim,) == (73,)


def test_chroma_of_a_synthesised_chord_peaks_on_its_notes():
    b = _branch()
    for root, iv in ((48, (0, 4, 7)), (57, (0, 3, 7)), (62, (0, 3, 6))):
        c = b.chroma(_chord(root, iv)[None], 50)[0, 10:40].mean(0)  # (12,) away from the edges
        top = set(c.topk(3).indices.tolist())
        assert top == {(root + k) % 12 for k in iv}, (root, iv, c)
    silent = b(torch.zeros(1, 2 * SR), 50)
    assert silent.abs().max() < 1e-3  # silence gives no pitch, not noise blown up by the normalisation


def _encoders():
    base = load_model_config("tiny").encoder
    with_pitch = load_model_config("tiny", {"encoder.pitch.enabled": True}).encoder
    torch.manual_seed(0)
    plain = build_encoder(base, SR, SR)
    torch.manual_seed(0)
    pitched = build_encoder(with_pitch, SR, SR)
    missing, unexpected = pitched.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(m.startswith("pitch_") for m in missing)
    return plain.eval(), pitched.eval()


def test_fresh_pitch_branch_leaves_the_encoder_output_unchanged_and_rides_along_in_the_frames():
    plain, pitched = _encoders()
    x = torch.randn(3, SR) * 0.1  # (B, S): three 1 s windows
    with torch.no_grad():
        f = pitched.frames(x)  # (B, F', E + 73)
        assert f.shape[:2] == plain.frames(x).shape[:2] and f.shape[2] == plain.cfg.width + PitchClassFeatures.dim
        assert torch.allclose(f[..., : plain.cfg.width], plain.frames(x))
        assert torch.allclose(pitched(x), plain(x), atol=1e-6)  # zero projection: nothing changes
        assert torch.allclose(pitched.head(f), pitched(x))  # cached frames -> head = the whole encoder
        torch.nn.init.normal_(pitched.pitch_proj.weight)
        assert not torch.allclose(pitched(x), plain(x), atol=1e-3)  # once it trains, it speaks


def test_pitch_branch_is_for_the_conv_transformer_only():
    cfg = load_model_config("tiny", {"encoder.pitch.enabled": True, "encoder.kind": "htsat"}).encoder
    with pytest.raises(ValueError, match="pitch"):
        build_encoder(cfg, SR, SR)


def test_clap_with_a_frozen_trunk_trains_the_pitch_branch_and_the_head_only(tmp_path, monkeypatch):
    """The af-mini setup: trunk frozen and cached (FrameCache), the head (pool, proj, pitch_norm, pitch_proj) trains."""
    captured = capture_model(monkeypatch)
    import audioflamingo.train.clap as clap_mod

    filled = []
    real_fill = clap_mod.FrameCache.fill
    monkeypatch.setattr(clap_mod.FrameCache, "fill", lambda self, keys, *a, **k: filled.append(len(keys)) or real_fill(self, keys, *a, **k))
    corpus = write_corpus(tmp_path / "corpus")
    cfg = tiny_config(corpus, tmp_path / "run", "clap", **{"optim.weight_decay": 0.0, "max_steps": 3,
                                                             "trainable": ["encoder_head", "clap_head"],
                                                             "model_overrides": {"transform.dropout": 0.0, "encoder.pitch.enabled": True}})
    train(cfg)
    model, before = captured["model"], captured["before"]
    head = ("encoder.pool.", "encoder.proj.", "encoder.pitch_norm.", "encoder.pitch_proj.")
    for name, p in model.named_parameters():
        changed = not torch.equal(before[name], p.detach())
        if name.startswith(head):
            assert changed, f"{name} should train"
        else:
            assert not changed, f"{name} is frozen but changed"
    assert not torch.equal(before["encoder.pitch_proj.weight"], model.encoder.pitch_proj.weight)
    assert isinstance(model.encoder, AudioEncoder)
    assert filled, "the trainable pitch head must not switch the trunk's frame cache off"
