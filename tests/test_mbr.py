"""Minimum-Bayes-risk decoding (model/mbr.py, GenerationConfig.mbr_samples)."""

import pytest
import torch

import audioflamingo.model.inference as inference
import audioflamingo.model.mbr as mbr
from audioflamingo.model.generate import GenerationConfig
from audioflamingo.model.mbr import mbr_select, word_f1
from conftest import sine, tiny_model, tone_index


def test_word_f1():
    assert word_f1("A dog barks.", "a DOG barks") == 1.0
    assert word_f1("a dog", "a cat") == 0.5
    assert word_f1("dog", "cat") == 0.0
    assert word_f1("", "") == 1.0 and word_f1("", "cat") == 0.0


def test_mbr_select_prefers_the_consensus_and_breaks_ties_towards_the_first():
    samples = ["a dog barking twice", "a dog barking", "a dog barking loudly", "thunder"]
    cands = ["thunder"] + samples  # the greedy answer first
    ev = [(s, 1 / len(samples)) for s in samples]
    assert cands[mbr_select(cands, ev)] == "a dog barking"  # shares most words with the rest
    assert mbr_select(["x", "y"], [("z", 1.0)]) == 0  # both score 0: the first
    assert mbr_select(["b", "a"], [("a", 0.5), ("b", 0.5)]) == 0  # a tie: the first
    assert mbr_select(["b", "a"], [("a", 0.6), ("b", 0.4)]) == 1  # weights count
    with pytest.raises(ValueError):
        mbr_select([], ev)


def test_mbr_preset():
    cfg = GenerationConfig.preset("mbr")
    assert cfg.mbr_samples == 16 and not cfg.do_sample and cfg.num_beams == 1


def test_mbr_answers_with_the_sample_the_others_agree_with(monkeypatch):
    """The decoding calls are replaced: greedy says 'thunder', the samples three variants of which 'a dog barking'
    shares most words with the other two (in either order)."""
    model = tiny_model(gates=1.0)
    tok = model.tokenizer
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    calls = []

    def fake_generate(m, input_ids, mask, audio, cfg, stops, on_tokens=None, copy=None, **kw):
        calls.append((input_ids.shape[0], cfg))
        if not cfg.do_sample:
            return [enc("thunder") for _ in range(input_ids.shape[0])]
        assert input_ids.shape[0] == 2 * 3 and audio.tokens.shape[0] == 6  # 2 rows x 3 samples, rows repeated in order
        torch.testing.assert_close(input_ids[0], input_ids[2])
        torch.testing.assert_close(audio.tokens[3], audio.tokens[5])
        per_row = [enc("a dog barking"), enc("a dog barking loudly"), enc("a big dog barking")]
        return per_row + per_row[::-1]

    monkeypatch.setattr(inference, "generate", fake_generate)
    monkeypatch.setattr(mbr, "generate", fake_generate)
    got = model.ask([sine(1.0, 300), sine(0.5, 900)], ["Describe.", "Describe it."], mbr_samples=3, mbr_temperature=0.7)
    assert got == ["a dog barking", "a dog barking"]
    (n0, c0), (n1, c1) = calls
    assert (n0, c0.do_sample) == (2, False) and (n1, c1.do_sample, c1.temperature, c1.seed, c1.mbr_samples) == (6, True, 0.7, 0, 0)


def test_mbr_with_cold_samples_is_greedy_and_is_repeatable():
    """Samples at a near-zero temperature all equal the greedy answer, so MBR answers it; a seeded MBR call repeats."""
    model = tiny_model(gates=1.5, seed=3)
    audio = [sine(1.0, 300), sine(0.7, 1200)]
    prompts = ["Describe.", "What is it?"]
    greedy = model.ask(audio, prompts, max_new_tokens=8)
    assert model.ask(audio, prompts, max_new_tokens=8, mbr_samples=4, mbr_temperature=1e-6) == greedy
    hot = model.ask(audio, prompts, max_new_tokens=8, mbr_samples=5, mbr_temperature=3.0, seed=7)
    assert model.ask(audio, prompts, max_new_tokens=8, mbr_samples=5, mbr_temperature=3.0, seed=7) == hot


def test_mbr_with_in_context_examples_and_copying(make_wav):
    """With examples and copying on, the samples decode from the same mixture (the copy state is built per sample)."""
    model = tiny_model(gates=1.0)
    model.config.shot_copy.weight = 0.999  # almost only the examples' answers
    low = make_wav("low.wav", seconds=0.6, freq=300, seed=1)
    ex = [(str(low), "zorblat"), (str(low), "zorblat")]
    got = model.ask([sine(0.6, 310)], ["Name?"], examples=ex, mbr_samples=4, max_new_tokens=12)
    assert got == ["zorblat"]


def test_mbr_cannot_stream():
    model = tiny_model()
    with pytest.raises(ValueError, match="stream"):
        model.answer(sine(0.5), "Describe.", mbr_samples=2, on_tokens=lambda t: None)


def test_mbr_choose_with_neighbours():
    from audioflamingo.model.mbr import mbr_choose

    samples = ["a fire burning", "a cart rolling", "thunder rumbling"]
    near = [("thunder", 0.9), ("thunder", 0.85), ("rain falling", 0.5)]
    assert mbr_choose("a fire burning", samples, near, 0.0) == 0  # weight 0: neighbours ignored, no consensus: greedy
    k = mbr_choose("a fire burning", samples, near, 0.3)
    assert (["a fire burning"] + samples + [a for a, _ in near])[k] == "thunder"  # the neighbours' vote + one sample
    assert mbr_choose("a fire burning", samples, near, 1.0, temperature=100.0) == 4  # flat vote: the first "thunder"
    with pytest.raises(ValueError):
        mbr_choose("x", ["y"], near, 1.5)


@pytest.fixture
def indexed(tmp_path, make_wav):
    """Five tones, each with a caption row and a classification row: high tones are 'a high whistle'."""
    model = tiny_model(gates=1.0)

    def rows_of(i, f):
        low = f < 1000
        return [{"id": f"c{i}#cap", "audio": f"c{i}.wav", "answer": "a low hum" if low else "a high whistle", "prompt": "Describe it.",
                 "task": "caption", "split": "train"},
                {"id": f"c{i}#cls", "audio": f"c{i}.wav", "answer": "low" if low else "high", "prompt": "Pitch?",
                 "task": "classification", "split": "train"}]

    tone_index(tmp_path, make_wav, model, rows_of)
    return model, tmp_path


def test_answer_with_mbr_rag_takes_the_neighbours_answers_of_the_same_task(indexed):
    model, d = indexed
    q = str(d / "c3.wav")  # its own rows are never used: the neighbours are c2, c4 (high) and the low ones
    near = model._mbr_neighbours(d / "index", [[q]], ["Describe it."], model.encode_audio([[model.load_clip(q)]]), [0],
                                 GenerationConfig(mbr_neighbours=3))[0]
    assert [a for a, _, _ in near] == ["a high whistle", "a high whistle", "a low hum"]
    assert near[0][1] >= near[1][1] >= near[2][1] and {i for _, _, i in near[:2]} == {"c2#cap", "c4#cap"}
    # the neighbours' evidence only (weight 1): the nearest caption, never the classification rows' "high"
    got = model.answer(q, "Describe it.", mbr_rag=d / "index", mbr_samples=2, mbr_neighbour_weight=1.0, max_new_tokens=6)[0]
    assert got.text == "a high whistle"
    assert [n["id"] for n in got.neighbours] == [i for _, _, i in near] + ["c0#cap"]  # all 4 other files (8 asked)
    assert got.examples == []  # nothing was put in the prompt
    assert model.ask(q, "Pitch?", mbr_rag=d / "index", mbr_samples=2, mbr_neighbour_weight=1.0, max_new_tokens=6) == "high"
    # a prompt nobody in the index was asked: a warning, and the model's samples alone
    with pytest.warns(UserWarning, match="no item was asked"):
        alone = model.ask(q, "Tell me.", mbr_rag=d / "index", mbr_samples=3, max_new_tokens=6)
    assert alone == model.ask(q, "Tell me.", mbr_samples=3, max_new_tokens=6)
    with pytest.raises(ValueError, match="mbr_samples"):
        model.ask(q, "Describe it.", mbr_rag=d / "index")


def test_cli_ask_mbr_rag(indexed, capsys):
    import json

    from audioflamingo.cli import main
    from audioflamingo.model.loading import save_pretrained

    model, d = indexed
    save_pretrained(model, d / "ckpt")
    rc = main(["ask", str(d / "c0.wav"), "-p", "Describe it.", "--model", str(d / "ckpt"), "--preset", "mbr", "--mbr", "3",
               "--mbr-rag", str(d / "index"), "--mbr-neighbours", "1", "--mbr-neighbour-weight", "1.0", "--json", "--max-new-tokens", "6"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["answer"] == "a low hum" and [n["id"] for n in out["mbr_neighbours"]] == ["c1#cap"]  # c1, its one nearest


def test_paths_that_decode_without_answer_refuse_mbr_rather_than_ignore_it():
    """Chat, the server and af1_chat call the decoding loop directly: an MBR setting must not pass silently."""
    from audioflamingo.chat import ChatSession

    model = tiny_model()
    session = ChatSession(model, [sine(0.5)], generation="mbr")
    with pytest.raises(ValueError, match="mbr_samples"):
        session.ask("What is it?")
