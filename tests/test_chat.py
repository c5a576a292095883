"""Chat sessions: the template, audio encoded once, cached turns == from-scratch, add_audio, trimming, streaming."""

import warnings

import pytest
import torch

from audioflamingo.chat import AudioMark, ChatSession, ChatWarning, Round, StreamDecoder, dialogue_text
from audioflamingo.model.generate import GenerationConfig, generate
from audioflamingo.text import AUDIO, EOC, encode
from audioflamingo.text import chat_text
from conftest import sine, tiny_model

N = 10  # new tokens per answer


def scratch_answer(model, text, clips, n=N):
    """The answer to `text` computed from nothing: the audio encoded afresh, a new cache, one prefill."""
    ids = encode(model.tokenizer, text)[0][None]  # (1, T)
    audio = model.encode_audio([[model.load_clip(c) for c in clips]]) if clips else None
    stop = {model.media.eoc, model.media.eos}
    out = generate(model, ids, torch.ones_like(ids), audio, GenerationConfig(max_new_tokens=n), stop)[0]
    return model.tokenizer.decode(out, skip_special_tokens=True).strip()


def test_dialogue_text_is_the_chat_template():
    rounds = [("What is it?", "A dog."), ("Where?", "Outside.")]
    items = [AudioMark(0), AudioMark(1)] + [Round(u, a) for u, a in rounds]
    assert dialogue_text(items) + "</s>\n" == chat_text(rounds, n_audios=2)
    items.append(Round("Loud?"))
    assert dialogue_text(items) == chat_text(rounds + [("Loud?", None)], n_audios=2)
    # an audio added after the first round goes in front of the next question
    text = dialogue_text([AudioMark(0), Round("a", "b"), AudioMark(1), Round("c")])
    assert text == f"</s>The task is dialog. {AUDIO}user: a \nassistant: <SEP>b{EOC}{AUDIO}user: c \nassistant: <SEP>"


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox"])
def test_cached_turns_equal_from_scratch(family):
    model = tiny_model(family, gates=1.5, seed=4)
    clips = [sine(1.2, 300), sine(0.8, 700, seed=1)]
    chat = ChatSession(model, clips, max_new_tokens=N)
    rounds = []
    for q in ["What do you hear?", "And then?", "Is it loud or quiet?"]:
        expected = scratch_answer(model, chat_text(rounds + [(q, None)], n_audios=2), clips)
        answer = chat.ask(q)
        assert answer == expected
        rounds.append((q, answer))
        # the cache holds exactly the dialogue's tokens, answer and <|endofchunk|> included
        assert torch.equal(chat.ids, encode(model.tokenizer, chat.text)[0])
        assert chat.cache.seq_len == len(chat.ids)
    assert any(a for _, a in rounds), "a random model that never answers makes this test weak"


def test_follow_up_never_encodes_audio_again(monkeypatch):
    model = tiny_model(gates=1.0)
    encoder_calls, kv_calls = [], []
    orig_enc = model.encode_windows
    monkeypatch.setattr(model, "encode_windows", lambda w, *a: (encoder_calls.append(w.shape[0]), orig_enc(w, *a))[1])
    for _, blk in ChatSession(model)._blocks():
        orig = blk.audio_kv
        monkeypatch.setattr(blk, "audio_kv", lambda a, orig=orig: (kv_calls.append(1), orig(a))[1])
    chat = ChatSession(model, [sine(1.0)], max_new_tokens=6)
    assert len(encoder_calls) == 1
    chat.ask("What?")
    n_kv = len(kv_calls)
    assert n_kv == len(model.xattn_blocks())
    chat.ask("And?")
    chat.ask("Why?")
    assert len(encoder_calls) == 1 and len(kv_calls) == n_kv


def test_add_audio_encodes_only_the_new_audio(monkeypatch):
    model = tiny_model("opt", gates=1.5, seed=2)
    a, b = sine(1.0, 300), sine(2.0, 900, seed=3)
    windows = []
    orig_enc = model.encode_windows
    monkeypatch.setattr(model, "encode_windows", lambda w, *a: (windows.append(w.shape[0]), orig_enc(w, *a))[1])
    chat = ChatSession(model, [a], max_new_tokens=N)
    first = chat.ask("What is this?")
    chat.add_audio(b)
    assert windows == [1, 3]  # 1 s -> 1 window; 2 s -> 3 windows (tiny: 1 s windows, 0.5 s hop); never `a` again
    second = chat.ask("Compare the two.")
    items = [AudioMark(0), Round("What is this?", first), AudioMark(1), Round("Compare the two.")]
    assert second == scratch_answer(model, dialogue_text(items), [a, b])
    # the extended keys/values equal those computed over both audios at once
    both = model.encode_audio([[model.load_clip(a), model.load_clip(b)]])
    for i, blk in chat._blocks():
        k, v = blk.audio_kv(both.tokens)
        torch.testing.assert_close(chat.cache.audio_kv[i][0], k)
        torch.testing.assert_close(chat.cache.audio_kv[i][1], v)


def test_long_history_is_trimmed_with_a_warning():
    model = tiny_model(gates=1.5, seed=5, **{"lm.max_length": 160})
    clip = sine(1.0)
    chat = ChatSession(model, [clip], max_new_tokens=N)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(6):
            answer = chat.ask(f"Question number {i}: tell me more about it?")
    assert any(issubclass(w.category, ChatWarning) for w in caught)
    assert any("dropped" in w for w in chat.warnings)
    assert len(chat.rounds) < 6 and chat.rounds[-1][0].startswith("Question number 5")
    assert len(encode(model.tokenizer, chat.text)[0]) <= 160
    # after trimming, the answer still equals a from-scratch computation of the (trimmed) dialogue
    items = chat.items[:-1] + [Round(chat.items[-1].user)]
    assert answer == scratch_answer(model, dialogue_text(items), [clip])


def test_question_too_long_for_the_context_is_an_error():
    model = tiny_model(**{"lm.max_length": 64})
    chat = ChatSession(model, [sine(1.0)], max_new_tokens=8)
    with pytest.raises(ValueError, match="context"):
        chat.ask("x" * 100)
    assert chat.rounds == []


def test_streamed_deltas_make_the_answer():
    model = tiny_model(gates=1.5, seed=4)
    chat = ChatSession(model, [sine(1.0)], max_new_tokens=16)
    deltas = []
    answer = chat.ask("Describe it.", stream=deltas.append)
    assert "".join(deltas) == answer


def test_stream_decoder_waits_for_whole_characters():
    model = tiny_model()
    text = "  héllo ✓ wörld  "
    ids = encode(model.tokenizer, text)[0].tolist()
    assert len(ids) > len(text)  # multi-byte characters: several tokens each
    dec = StreamDecoder(model.tokenizer)
    deltas = [dec.push(t) for t in ids] + [dec.finish()]
    assert "".join(deltas) == text.strip() == dec.text
    assert not any("\ufffd" in d for d in deltas)


def test_reset_forgets_rounds_but_keeps_audio(monkeypatch):
    model = tiny_model(gates=1.5, seed=4)
    chat = ChatSession(model, [sine(1.0, 500)], max_new_tokens=N)
    first = chat.ask("What?")
    chat.ask("More?")
    calls = []
    monkeypatch.setattr(model, "encode_windows", lambda w, *a: calls.append(1))
    chat.reset()
    assert chat.rounds == []
    assert chat.ask("What?") == first
    assert calls == []


def test_session_without_audio_and_beam_refused():
    model = tiny_model(gates=1.0)
    chat = ChatSession(model, max_new_tokens=4)
    assert isinstance(chat.ask("Hello"), str)
    with pytest.raises(ValueError, match="num_beams"):
        chat.ask("Hi", num_beams=2)
    assert len(ChatSession(model, sine(0.5)).clips) == 1  # one (samples, rate) pair is one audio, not two


def test_an_interrupted_answer_leaves_the_session_usable():
    model = tiny_model(gates=1.5, seed=4)
    chat = ChatSession(model, [sine(1.0)], max_new_tokens=N)
    first = chat.ask("What?")

    def stop(delta):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        chat.ask("Tell me more, at length, please?", stream=stop)
    assert chat.rounds == [("What?", first)]
    second = chat.ask("And?")
    assert second == scratch_answer(model, chat_text([("What?", first), ("And?", None)]), [sine(1.0)])


def test_dialogue_loss_covers_exactly_the_answers():
    """Template and loss as DESIGN.md 1e: labels on each answer and its <|endofchunk|>, nothing else."""
    from audioflamingo.text import IGNORE

    model = tiny_model()
    items = [AudioMark(0), Round("What?", "A dog."), AudioMark(1), Round("And?", "A cat barks.")]
    ids, labels = encode(model.tokenizer, dialogue_text(items))
    kept = ids[labels != IGNORE]
    assert model.tokenizer.decode(kept) == f"A dog.{EOC}A cat barks.{EOC}"


def test_af1_style_models_are_sent_to_their_own_chat():
    model = tiny_model()
    model.config.prompt_style = "af1"
    with pytest.raises(ValueError, match="af1-chat"):
        ChatSession(model, [sine(0.5)])
    from audioflamingo.serve import create_app

    with pytest.raises(ValueError, match="af1-chat"):
        create_app(model)
