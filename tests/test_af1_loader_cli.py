"""AF1 mode end to end: files on disk -> `audioflamingo convert af1` -> ask / chat; AF1 audio and prompt details."""

import io

import numpy as np
import pytest
import soundfile as sf
import torch

from test_af1_loader import OVERRIDES, clapcap_state, lm_dir, official_state  # noqa: F401 (fixture)
from audioflamingo.audio import af1_normalize, load_audio
from audioflamingo.cli import main
from audioflamingo.compat.af1 import af1_chat, convert_af1, load_af1
from audioflamingo.compat.af1_prompts import af1_text, leading_specials
from audioflamingo.config import AudioConfig
from audioflamingo.model.loading import load_model


@pytest.fixture(scope="module")
def files(tmp_path_factory, lm_dir):  # noqa: F811
    d = tmp_path_factory.mktemp("af1files")
    state = official_state()
    torch.save({"epoch": 0, "model_state_dict": state, "optimizer_state_dict": {}, "lr_scheduler_state_dict": {}}, d / "foundation.pt")
    clap, _ = clapcap_state()
    torch.save({"model": clap}, d / "clapcap.pth")
    t = np.arange(8000) / 16000
    sf.write(d / "tone.wav", (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    return d


def test_convert_command_writes_a_folder_that_loads_to_the_same_model(files, lm_dir, tmp_path, monkeypatch):  # noqa: F811
    import audioflamingo.compat.af1 as af1

    real = af1.load_af1
    monkeypatch.setattr(af1, "load_af1", lambda *a, **k: real(*a, overrides=OVERRIDES, **k))  # tiny geometry
    rc = main(["convert", "af1", "--checkpoint", str(files / "foundation.pt"), "--clapcap", str(files / "clapcap.pth"),
               "--lm", str(lm_dir), "--out", str(tmp_path / "out"), "--dtype", "bf16"])
    assert rc == 0
    from safetensors.torch import load_file

    stored = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert stored["lm.model.decoder.layers.0.xattn.to_q.weight"].dtype == torch.bfloat16
    direct = real(files / "foundation.pt", clapcap=files / "clapcap.pth", lm=lm_dir, overrides=OVERRIDES, dtype="bf16")
    again = load_model(tmp_path / "out", dtype="bfloat16")
    a, b = direct.state_dict(), again.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_ask_and_chat_run_in_af1_mode(files, lm_dir):  # noqa: F811
    model = load_af1(files / "foundation.pt", clapcap=files / "clapcap.pth", lm=lm_dir, overrides=OVERRIDES)
    answer = model.answer(str(files / "tone.wav"), "Describe the sound.", task="caption", max_new_tokens=4)[0]
    assert answer.prompt == "</s>the task is audio captioning. <audio>describe the sound.\nanswer:<SEP>"
    reply = af1_chat(model, str(files / "tone.wav"), [{"user": "What is it?", "assistant": "A tone."}, {"user": "Loud?"}],
                     max_new_tokens=3, seed=0)
    assert isinstance(reply, str)
    with pytest.raises(ValueError, match="in-context"):
        model.ask(str(files / "tone.wav"), "q", examples=[(str(files / "tone.wav"), "a")])


def test_convert_refuses_a_missing_file_by_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        convert_af1(tmp_path / "nope.pt", tmp_path / "out", lm=tmp_path)


def test_af1_strings_double_the_bos_when_the_tokenizer_prepends_one():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 1, "</s>": 2, **{c: 3 + i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz .:?\n")}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.post_processor = processors.TemplateProcessing(single="</s> $A", special_tokens=[("</s>", 2)])  # as OPT
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="</s>", eos_token="</s>", pad_token="<pad>")
    hf.add_special_tokens({"additional_special_tokens": ["<audio>", "<|endofchunk|>", "<SEP>"]})
    assert leading_specials(hf) == "</s>"
    text = af1_text(hf, "Is it Loud?", task=None)
    assert text == "</s></s><audio>is it loud?\nanswer:<SEP>"
    ids = hf(text, add_special_tokens=False)["input_ids"]
    assert ids[:2] == [2, 2] and ids == hf(text[4:])["input_ids"]  # what AF1 fed: tokenizer adds the first </s>


def test_af1_normalisation_rescales_nonnegative_clips_and_keeps_silence():
    cfg = AudioConfig(peak_normalize=True, int16_roundtrip=False, rescale_nonnegative=True)
    x = np.array([0.0, 0.25, 0.5], np.float32)
    np.testing.assert_allclose(af1_normalize(x, cfg), [-1.0, 0.0, 1.0])  # 2x/max - 1
    np.testing.assert_allclose(af1_normalize(np.array([-0.5, 0.25], np.float32), cfg), [-1.0, 0.5])  # peak
    silent = af1_normalize(np.zeros(4, np.float32), cfg)
    assert np.isfinite(silent).all() and not silent.any()  # AF1 gave NaN here
    q = af1_normalize(np.array([0.5, -0.30001], np.float32), AudioConfig(peak_normalize=True, int16_roundtrip=True))
    assert q[1] == np.float32(int(-0.30001 / 0.5 * 32767) / 32767)  # truncation toward zero, / 32767


def test_stereo_is_down_mixed_in_af1_mode_too():
    """A deliberate difference: AF1 kept channel 0 (0.5 here -> 2·1 − 1 = 1); we average (−0.2 -> −1)."""
    buf = io.BytesIO()
    sf.write(buf, np.stack([np.full(100, 0.5), np.full(100, -0.9)], 1).astype(np.float32), 16000, format="WAV")
    with pytest.warns(UserWarning, match="down-mixed"):
        clip = load_audio(buf.getvalue(), 16000, AudioConfig(peak_normalize=True, rescale_nonnegative=True))
    np.testing.assert_allclose(clip.samples, -1.0, atol=1e-6)
