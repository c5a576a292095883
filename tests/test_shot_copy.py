"""Copying from in-context examples (model/shot_copy.py): a similarity-weighted mixture of the LM with the
examples' answers, exact at the sequence level and in its token-level factorisation for decoding."""

import math

import pytest
import torch

from audioflamingo.model.shot_copy import CopyMixture, answer_spans, mix_sequence, shot_weights
from conftest import tiny_model


def test_token_factorisation_sums_to_one_and_multiplies_to_the_sequence_mixture():
    torch.manual_seed(0)
    V, lam = 7, 0.3
    answers = [(1, 2, 6), (1, 3, 6), (4, 6)]  # token 6 plays <|endofchunk|>
    w = torch.tensor([0.5, 0.2, 0.3])
    lm_steps = torch.randn(3, V)  # LM logits at each of 3 steps (the LM's own context is irrelevant here)
    for target in [(1, 2, 6), (1, 3, 6), (4, 6), (1, 5, 6), (0, 6)]:
        mix = CopyMixture([answers], [w], lam)
        total_mixed, total_lm = 0.0, 0.0
        for t, tok in enumerate(target):
            logp = mix.mix(lm_steps[t][None])  # (1, V)
            assert math.isclose(float(logp.exp().sum()), 1.0, rel_tol=1e-5)
            total_mixed += float(logp[0, tok])
            total_lm += float(lm_steps[t].log_softmax(-1)[tok])
            mix.advance(torch.tensor([tok]))
        expected = mix_sequence(torch.tensor(total_lm), answers, target, w, lam)
        assert math.isclose(total_mixed, float(expected), rel_tol=1e-5, abs_tol=1e-5), target
        mass = float(w[[a == target for a in answers]].sum())
        assert math.isclose(math.exp(float(expected)), (1 - lam) * math.exp(total_lm) + lam * mass, rel_tol=1e-5)


def test_weight_zero_and_no_examples_are_the_plain_lm():
    logits = torch.randn(2, 9)
    mix = CopyMixture([[(1, 2)], []], [torch.tensor([1.0]), torch.zeros(0)], 0.0)
    assert not mix.active
    mix = CopyMixture([[(1, 2)], []], [torch.tensor([1.0]), torch.zeros(0)], 0.5)
    out = mix.mix(logits)
    torch.testing.assert_close(out[1], logits[1].log_softmax(-1))  # the row without examples
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        CopyMixture([[(1,)]], [torch.tensor([1.0])], 1.0)


def test_answer_spans_and_weights():
    assert answer_spans([0, 5, 9, 1, 2, 8, 5, 9, 3, 8, 5, 9], sep=9, eoc=8) == [(1, 2, 8), (3, 8)]
    emb = torch.nn.functional.normalize(torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]]]), dim=-1)  # 2 shots, 1 query
    w = shot_weights(emb, [2], [1], temperature=0.05)[0]
    assert math.isclose(float(w.sum()), 1.0, rel_tol=1e-6) and w[0] > 0.99  # the first shot sounds like the query


def _examples(make_wav):
    low = make_wav("low.wav", seconds=0.6, freq=300, seed=1)
    high = make_wav("high.wav", seconds=0.6, freq=3000, seed=2)
    return [(str(low), "zorblat"), (str(high), "quimwex")]


def test_model_with_copy_off_is_unchanged_and_embeddings_match_embed_audio(make_wav):
    model = tiny_model(gates=1.0)
    ex = _examples(make_wav)
    query = make_wav("q.wav", seconds=0.6, freq=310, seed=3)
    opts = ["zorblat", "quimwex", "bell"]
    base = model.score_options(str(query), "Name?", opts, examples=ex)[0]  # copying off (the default)
    model.config.shot_copy.weight = 0.25
    mixed = model.score_options(str(query), "Name?", opts, examples=ex)[0]
    assert math.isclose(mixed[2], base[2] + math.log(0.75), rel_tol=1e-5)  # no example answers "bell": the LM's share only
    assert mixed[0] > base[0] and mixed[1] > base[1]
    clips = [model.load_clip(p) for p, _ in ex] + [model.load_clip(str(query))]
    tokens = model.encode_audio([clips])
    torch.testing.assert_close(tokens.embedding[0], model.embed_audio([p for p, _ in ex] + [str(query)]))


def test_copy_ranks_and_generates_the_answer_of_the_example_that_sounds_like_the_query(make_wav):
    """An untrained model cannot know made-up names; with copying on it answers with the nearest example's."""
    model = tiny_model(gates=1.0)
    model.config.shot_copy.weight = 0.5
    model.config.shot_copy.temperature = 0.001  # a random encoder's embeddings of tones differ only slightly
    ex = _examples(make_wav)
    for freq, name in [(290, "zorblat"), (3100, "quimwex")]:
        query = str(make_wav(f"q{freq}.wav", seconds=0.6, freq=freq, seed=freq))
        scores = model.score_options(query, "Name?", ["zorblat", "quimwex", "bell"], examples=ex)[0]
        assert max(zip(scores, ["zorblat", "quimwex", "bell"]))[1] == name
        ans = model.answer(query, "Name?", examples=ex, max_new_tokens=12)[0]
        assert ans.text == name
        weights = {e["answer"]: e["copy_weight"] for e in ans.examples}
        assert weights[name] > 0.5 and math.isclose(sum(weights.values()), 1.0, rel_tol=1e-5)
        # beam search decodes the same mixture; the cached path equals full recomputation
        assert model.ask(query, "Name?", examples=ex, num_beams=3, max_new_tokens=12) == name
        assert model.ask(query, "Name?", examples=ex, use_cache=False, max_new_tokens=12) == name


def test_copy_scores_equal_the_sequence_mixture_of_the_lm_scores(make_wav):
    model = tiny_model(gates=1.0)
    ex = _examples(make_wav)
    query = str(make_wav("q.wav", seconds=0.6, freq=320, seed=4))
    opts = ["zorblat", "quimwex", "bell"]
    lm = model.score_options(query, "Name?", opts, examples=ex)[0]
    model.config.shot_copy.weight, model.config.shot_copy.temperature = 0.2, 0.1
    mixed = model.score_options(query, "Name?", opts, examples=ex)[0]
    emb = model.embed_audio([p for p, _ in ex] + [query])  # (3, E)
    w = ((emb[:2] @ emb[2]) / 0.1).softmax(-1)
    for o, l, m in zip(opts, lm, mixed):
        share = sum(float(wi) for (_, a), wi in zip(ex, w) if a == o)
        assert math.isclose(math.exp(m), 0.8 * math.exp(l) + 0.2 * share, rel_tol=1e-4)
    # per-token normalisation divides the mixed log-likelihood by the option's own token count
    norm = model.score_options(query, "Name?", opts, examples=ex, normalize=True)[0]
    assert all(n > m for n, m in zip(norm, mixed))
    # no examples: copying has nothing to copy, the LM alone answers
    model2 = tiny_model(gates=1.0)
    assert model.score_options(query, "Name?", opts) == model2.score_options(query, "Name?", opts)


def test_a_batch_mixes_each_item_with_its_own_examples(make_wav):
    model = tiny_model(gates=1.0)
    model.config.shot_copy.weight, model.config.shot_copy.temperature = 0.5, 0.001
    ex = _examples(make_wav)
    q1 = str(make_wav("a.wav", seconds=0.6, freq=300, seed=7))
    q2 = str(make_wav("b.wav", seconds=0.6, freq=3050, seed=8))
    batch = model.ask([q1, q2], ["Name?", "Name?"], examples=ex, max_new_tokens=12)
    assert batch == [model.ask(q1, "Name?", examples=ex, max_new_tokens=12), model.ask(q2, "Name?", examples=ex, max_new_tokens=12)]
    assert batch == ["zorblat", "quimwex"]


def test_cli_ask_shot_copy_overrides_the_saved_setting(make_wav, tmp_path, capsys):
    import json

    from audioflamingo.cli import main
    from audioflamingo.model.loading import save_pretrained

    model = tiny_model(gates=1.0)
    model.config.shot_copy.temperature = 0.001
    save_pretrained(model, tmp_path / "ckpt")  # saved with copying off (weight 0)
    (low, _), (high, _) = _examples(make_wav)
    query = make_wav("q.wav", seconds=0.6, freq=3100, seed=9)
    args = ["ask", str(query), "-p", "Name?", "--model", str(tmp_path / "ckpt"), "--example", f"{low}=zorblat",
            "--example", f"{high}=quimwex", "--json", "--max-new-tokens", "12"]
    assert main(args + ["--shot-copy", "0.5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer"] == "quimwex" and [e["answer"] for e in out["examples"]] == ["zorblat", "quimwex"]
    assert out["examples"][1]["copy_weight"] > 0.5
    assert main(args) == 0  # the checkpoint's own setting: no copying, no copy weights reported
    assert "copy_weight" not in json.loads(capsys.readouterr().out)["examples"][0]


def test_af1_fixed_slot_encoding_copies_too(make_wav):
    """AF1's fixed-slot encoding returns no per-audio embedding; the weights then come from embed_audio."""
    model = tiny_model(gates=1.0, **{"audio.pad_to_max_windows": True})
    model.config.shot_copy.weight, model.config.shot_copy.temperature = 0.5, 0.001
    ex = _examples(make_wav)
    query = str(make_wav("q.wav", seconds=0.6, freq=3100, seed=11))
    ans = model.answer(query, "Name?", examples=ex, max_new_tokens=12)[0]
    assert ans.text == "quimwex" and ans.examples[1]["copy_weight"] > 0.5
    scores = model.score_options(query, "Name?", ["zorblat", "quimwex", "bell"], examples=ex)[0]
    assert scores.index(max(scores)) == 1
