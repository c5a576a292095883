"""Decoding: cached == full recomputation, batching, beams, sampling, stop strings."""

import pytest
import torch

from audioflamingo.model.cache import FlamingoCache
from audioflamingo.model.generate import GenerationConfig, filter_logits, generate
from audioflamingo.text import AUDIO, encode, pad_batch, single_text
from conftest import sine, tiny_model


def _prompt_batch(model, items):
    ids = [encode(model.tokenizer, single_text(p, None, n_audios=len(c)))[0] for p, c in items]
    input_ids, mask = pad_batch(ids, model.media.pad, "left")
    audio = model.encode_audio([[model.load_clip(x) for x in c] for _, c in items])
    return input_ids, mask, audio


ITEMS = [
    ("Describe this.", [sine(1.5, 300)]),
    (f"Compare {AUDIO} with {AUDIO} and then {AUDIO}", [sine(0.7, 500), sine(2.0, 900), sine(1.0, 1200)]),
    ("Hi", [sine(0.5, 200)]),
]


@pytest.mark.parametrize("family", ["gpt2", "opt", "llama", "gpt_neox"])
@pytest.mark.parametrize("beams", [1, 3])
def test_cached_decode_equals_full_recompute(family, beams):
    model = tiny_model(family, gates=1.5, seed=3)
    stop = set()  # a random model may stop at once: run every sequence the full length
    input_ids, mask, audio = _prompt_batch(model, ITEMS)
    cfg = GenerationConfig(max_new_tokens=12, num_beams=beams)
    cached = generate(model, input_ids, mask, audio, cfg, stop)
    full = generate(model, input_ids, mask, audio, GenerationConfig(max_new_tokens=12, num_beams=beams, use_cache=False), stop)
    assert cached == full
    assert all(len(c) == 12 for c in cached)


def test_cached_logits_match_full_logits_with_several_audios():
    """Step by step: new tokens after the 3rd <audio> see all three audios, exactly as in a full pass."""
    model = tiny_model("llama", gates=1.0, seed=1)
    prompt, clips = ITEMS[1]
    ids, _ = encode(model.tokenizer, single_text(prompt, "a b c d", n_audios=3))
    ids = ids[None]
    audio = model.encode_audio([[model.load_clip(c) for c in clips]])
    with torch.no_grad():
        full, _ = model(ids, None, audio)
        cache = FlamingoCache()
        split = 5  # prefill stops before the markers: the rest arrives token by token
        step_logits = [model(ids[:, :split], None, audio, cache=cache)[0]]
        for t in range(split, ids.shape[1]):
            step_logits.append(model(ids[:, t : t + 1], None, audio, cache=cache)[0])
    torch.testing.assert_close(torch.cat(step_logits, 1), full, rtol=1e-4, atol=1e-4)
    assert int(cache.media_count[0]) == 3
    assert len(cache.audio_kv) == len(model.xattn_blocks())


def test_audio_keys_values_computed_once_per_request(monkeypatch):
    model = tiny_model(gates=1.0)
    calls = []
    blk = model.xattn_blocks()[0]
    orig = blk.audio_kv
    monkeypatch.setattr(blk, "audio_kv", lambda a: (calls.append(1), orig(a))[1])
    model.ask(sine(1.0), "What?", max_new_tokens=10)
    assert len(calls) == 1


def test_batch_answers_equal_single_answers():
    model = tiny_model("opt", gates=1.0, seed=2)
    audios = [c for _, c in ITEMS]
    prompts = [p for p, _ in ITEMS]
    batch = model.ask(audios, prompts, max_new_tokens=8)
    singles = [model.ask(a, p, max_new_tokens=8) for a, p in zip(audios, prompts)]
    assert batch == singles


def test_sampling_is_seeded_and_filters():
    model = tiny_model(gates=1.0)
    a = model.ask(sine(1.0), "What?", do_sample=True, top_k=20, top_p=0.9, temperature=1.3, seed=7, max_new_tokens=10)
    b = model.ask(sine(1.0), "What?", do_sample=True, top_k=20, top_p=0.9, temperature=1.3, seed=7, max_new_tokens=10)
    assert a == b
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    assert torch.isinf(filter_logits(logits, 2, 1.0)).tolist() == [[True, False, False, True]]
    # probs ~ [.09, .67, .24, .03]: top-p 0.7 keeps the two most likely
    assert torch.isinf(filter_logits(logits, 0, 0.7)).tolist() == [[True, False, False, True]]


def test_max_new_tokens_and_stop_strings():
    model = tiny_model(gates=1.0)
    stop = {model.media.eoc, model.media.eos}
    input_ids, mask, audio = _prompt_batch(model, ITEMS[:1])
    out = generate(model, input_ids, mask, audio, GenerationConfig(max_new_tokens=5), stop)
    assert len(out[0]) <= 5
    text = model.tokenizer.decode(generate(model, input_ids, mask, audio, GenerationConfig(max_new_tokens=20), stop)[0])
    if len(text) >= 3:
        cut = model.ask(ITEMS[0][1], ITEMS[0][0], max_new_tokens=20, stop=[text[2]])
        assert text[2] not in cut



@pytest.mark.parametrize("force", ["never_stop", "stop_at_once"])
def test_an_answer_cut_by_the_token_limit_says_so(force):
    """A full max_new_tokens budget without an end token is reported (finish_reason "length" + a warning);
    an answer the model ended itself is not."""
    model = tiny_model("gpt2", gates=1.5, seed=3)
    stops = [model.media.eoc, model.media.eos]

    def steer(module, args, logits):  # (B, T, V) -> the same, with the stop tokens banned or forced
        logits = logits.clone()
        if force == "never_stop":
            logits[..., stops] = float("-inf")
        else:
            logits[..., model.media.eoc] = 1e4
        return logits

    handle = model.lm.get_output_embeddings().register_forward_hook(steer)
    try:
        ans = model.answer(sine(1.0, 300), "Describe.", max_new_tokens=3)[0]
    finally:
        handle.remove()
    if force == "never_stop":
        assert ans.finish_reason == "length"
        assert any("max_new_tokens=3" in w for w in ans.warnings), ans.warnings
    else:
        assert ans.finish_reason == "stop" and ans.text == ""
        assert not any("max_new_tokens" in w for w in ans.warnings)
