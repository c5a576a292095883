"""Invariants of the Audio Flamingo model on tiny configs of several LM families."""

import pytest
import torch

from audioflamingo.config import list_presets, load_model_config
from audioflamingo.model.loading import build_model
from audioflamingo.text import AUDIO, encode, pad_batch, single_text
from conftest import sine, tiny_model

FAMILY_NAMES = ["gpt2", "opt", "llama", "qwen2", "gpt_neox"]


def _inputs(model, prompts_and_clips, side="left"):
    ids = [encode(model.tokenizer, single_text(p, "an answer", n_audios=len(c)))[0] for p, c in prompts_and_clips]
    input_ids, mask = pad_batch(ids, model.media.pad, side=side)
    audio = model.encode_audio([[model.load_clip(x) for x in c] for _, c in prompts_and_clips])
    return input_ids, mask, audio


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_zero_gates_leave_the_lm_unchanged(family):
    model = tiny_model(family)
    input_ids, mask, audio = _inputs(model, [("What is it?", [sine(1.3)])])
    with torch.no_grad():
        logits, _ = model(input_ids, mask, audio)
        bare = model.lm(input_ids=input_ids, attention_mask=mask).logits  # no audio context: plain layers
    assert torch.equal(logits, bare)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_text_never_sees_a_later_audio(family):
    """d(logits at t)/d(audio k) is zero unless the k-th <audio> marker is at or before t."""
    model = tiny_model(family, gates=0.7)
    clips = [model.load_clip(sine(1.2, f)) for f in (300, 600, 900)]
    prompt = f"intro {AUDIO} first {AUDIO} second {AUDIO} third"
    ids, _ = encode(model.tokenizer, single_text(prompt, "ok", n_audios=3))
    ids = ids[None]
    audio = model.encode_audio([clips])
    tokens = audio.tokens.detach().requires_grad_(True)
    from audioflamingo.model.cache import AudioTokens

    logits, _ = model(ids, None, AudioTokens(tokens, audio.audio_index))
    marker_pos = (ids[0] == model.media.audio).nonzero()[:, 0].tolist()
    assert len(marker_pos) == 3
    for t in range(ids.shape[1]):
        (g,) = torch.autograd.grad(logits[0, t].sum(), tokens, retain_graph=True)
        per_audio = [g[0, audio.audio_index[0] == k].abs().sum().item() for k in range(3)]
        seen = sum(p <= t for p in marker_pos)
        for k in range(3):
            if k < seen:
                assert per_audio[k] > 0, (t, k)
            else:
                assert per_audio[k] == 0, f"token {t} depends on audio {k} before its marker"


def test_window_batch_equals_windows_one_by_one():
    model = tiny_model()
    clips = [model.load_clip(sine(s, f)) for s, f in ((0.4, 200), (2.2, 500), (1.7, 800))]
    from audioflamingo.audio import make_windows

    wins = torch.cat([make_windows(c, model.config.audio) for c in clips])
    with torch.no_grad():
        together = model.encode_windows(wins)
        alone = torch.cat([model.encode_windows(w[None]) for w in wins])
    assert together.shape == (wins.shape[0], model.config.encoder.tokens_per_window, model.config.encoder.out_dim)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    # and the transformation layers: an audio in a batch of audios equals that audio alone
    with torch.no_grad():
        batch = model.encode_audio([[c] for c in clips])
        for i, c in enumerate(clips):
            one = model.encode_audio([[c]])
            n = (one.audio_index[0] >= 0).sum()
            torch.testing.assert_close(batch.tokens[i, :n], one.tokens[0, :n], rtol=1e-5, atol=1e-5)
            assert (batch.audio_index[i] >= 0).sum() == n


def test_only_real_windows_are_encoded(monkeypatch):
    model = tiny_model()
    seen = []
    orig = model.encoder.forward
    monkeypatch.setattr(model.encoder, "forward", lambda w: (seen.append(w.shape[0]), orig(w))[1])
    clips = [[model.load_clip(sine(0.5))], [model.load_clip(sine(2.5)), model.load_clip(sine(1.0))]]
    model.encode_audio(clips)
    # 0.5 s -> 1 window; 2.5 s -> 4 windows (1 s / 0.5 s hop, max 4); 1.0 s -> 1 window; ONE call
    assert seen == [6]


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_padded_batch_example_equals_example_alone(family):
    model = tiny_model(family, gates=0.5)
    items = [("Describe the sound in detail please.", [sine(2.0, 300)]), ("What?", [sine(0.6, 700), sine(1.1, 900)])]
    input_ids, mask, audio = _inputs(model, items, side="left")
    with torch.no_grad():
        batch_logits, _ = model(input_ids, mask, audio)
        for b, item in enumerate(items):
            ids1, mask1, audio1 = _inputs(model, [item])
            alone, _ = model(ids1, mask1, audio1)
            n = ids1.shape[1]
            torch.testing.assert_close(batch_logits[b, -n:], alone[0], rtol=1e-4, atol=1e-4)


def test_loss_is_on_answer_tokens_only():
    model = tiny_model()
    ids, labels = encode(model.tokenizer, single_text("Q?", "yes", task="aqa"))
    kept = model.tokenizer.decode(labels[labels >= 0])
    assert kept == "yes<|endofchunk|></s>"
    cut_ids, cut_labels = encode(model.tokenizer, single_text("Q?", "a long answer", task="aqa"), max_length=len(ids) - 6)
    assert (cut_labels >= 0).sum() == 0  # an answer cut by truncation gets no loss


def test_tiny_model_overfits_one_batch():
    model = tiny_model(gates=0.0).train()
    items = [("What is it?", [sine(1.0, 300)]), ("What is it?", [sine(1.0, 1500)])]
    answers = ["low", "high"]
    ids = [encode(model.tokenizer, single_text(p, a))[0] for (p, _), a in zip(items, answers)]
    labs = [encode(model.tokenizer, single_text(p, a))[1] for (p, _), a in zip(items, answers)]
    input_ids, mask = pad_batch(ids, model.media.pad, "right")
    labels, _ = pad_batch(labs, -100, "right")
    clips = [[model.load_clip(c) for c in cs] for _, cs in items]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        audio = model.encode_audio(clips)
        _, loss = model(input_ids, mask, audio, labels=labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert loss.item() < 0.05
    assert model.ask([sine(1.0, 300), sine(1.0, 1500)], ["What is it?", "What is it?"], max_new_tokens=6) == answers


def test_every_preset_builds():
    for name in list_presets():
        cfg = load_model_config(name)
        if cfg.encoder.kind == "htsat":
            pytest.importorskip("audioflamingo.model.htsat")
        model = build_model(cfg, meta=True, seed=None)
        assert model.count_parameters()["total"] > 0


def test_af1_geometry_counts():
    cfg = load_model_config("af1", ["encoder.kind=conv-transformer"])  # encoder not counted in AF1's total
    counts = build_model(cfg, meta=True, seed=None).count_parameters()
    for key, want in (("total", 2.22e9), ("lm", 1.316e9), ("xattn", 0.881e9), ("transform", 25.2e6)):
        assert abs(counts[key] - want) / want < 0.01, (key, counts[key])
