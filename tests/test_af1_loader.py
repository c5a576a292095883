"""AF1 loader: official layout (tiny, random) -> our model; parity with the reference functions; round trip."""

import numpy as np
import pytest
import torch

from _af1_reference import af1_transform, af1_xattn_block
from audioflamingo.audio import Clip
from audioflamingo.compat.af1 import AF1CheckpointError, load_af1, official_sources
from audioflamingo.compat.af1_keys import AF1Geometry, random_official_state, split_official_state_dict
from audioflamingo.compat.clapcap import to_clapcap_layout
from audioflamingo.config import load_model_config
from audioflamingo.model.cache import AudioTokens
from audioflamingo.model.encoder import build_encoder
from audioflamingo.model.loading import load_model, save_pretrained
from audioflamingo.model.xattn import interleaved_sinusoids
from audioflamingo.text import build_byte_tokenizer

VOCAB = 261  # the byte tokenizer with </s>, <pad>, <audio>, <|endofchunk|>, <SEP>
GEOMETRY = AF1Geometry(layers=2, d_model=16, ffn=32, vocab=VOCAB, max_positions=128, audio_dim=8, xattn_heads=2,
                       xattn_dim_head=4, transform_layers=2, transform_ffn=12, transform_positions=16)
OVERRIDES = {  # the af1 preset at a tiny width: 0.25 s windows at 16 kHz, a 2-stage HTS-AT
    "audio.sample_rate": 16000, "audio.window_seconds": 0.25, "audio.hop_seconds": 0.125, "audio.max_windows": 4,
    "encoder.out_dim": 8, "encoder.mel": {"n_fft": 256, "hop_length": 64, "n_mels": 16, "fmin": 0, "fmax": 7000},
    "encoder.htsat": {"spec_size": 32, "patch_size": 2, "embed_dim": 8, "depths": [2, 2], "num_heads": [1, 2], "window_size": 4},
    "transform.layers": 2, "transform.heads": 2, "transform.ffn": 12, "xattn.heads": 2, "xattn.head_dim": 4,
}
HEADS = 2


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    from transformers import OPTConfig, OPTForCausalLM

    path = tmp_path_factory.mktemp("opt-tiny")
    torch.manual_seed(0)
    OPTForCausalLM(OPTConfig(hidden_size=16, num_hidden_layers=2, ffn_dim=32, num_attention_heads=2, vocab_size=258,
                             max_position_embeddings=128, word_embed_proj_dim=16, pad_token_id=257, bos_token_id=256,
                             eos_token_id=256)).save_pretrained(path)
    build_byte_tokenizer().save_pretrained(path)
    return path


def official_state():
    state = random_official_state(GEOMETRY, seed=1)
    state["audio_transformer.position_enc.pos_table"] = interleaved_sinusoids(16, 8)[None]  # as in the release
    state["lang_encoder.lm_head.weight"] = state["lang_encoder.model.decoder.embed_tokens.weight"]  # tied, as saved
    return state


def clapcap_state():
    cfg = load_model_config("af1", OVERRIDES)
    torch.manual_seed(3)
    enc = build_encoder(cfg.encoder, cfg.audio.sample_rate, cfg.audio.window_samples)
    return to_clapcap_layout(enc.state_dict(), n_fft=256), enc


@pytest.fixture(scope="module")
def loaded(lm_dir):
    clap, _ = clapcap_state()
    state = official_state()
    return load_af1({"model_state_dict": state, "epoch": 1}, clapcap=clap, lm=lm_dir, overrides=OVERRIDES), state


def test_every_model_tensor_gets_a_value_from_the_official_layout(loaded):
    model, state = loaded
    parts = split_official_state_dict(state)
    own = model.state_dict()
    blk = own["lm.model.decoder.layers.1.xattn.to_kv.weight"]
    assert torch.equal(blk, parts.xattn[1]["attn.to_kv.weight"])
    qkv = own["transform.layers.layers.1.self_attn.in_proj_weight"]
    assert torch.equal(qkv[8:16], parts.transform["layer_stack.1.slf_attn.w_ks.weight"])  # rows: q, k, v
    assert torch.equal(own["transform.input_norm.weight"], parts.transform["layer_norm.weight"])
    assert torch.equal(own["lm.model.decoder.layers.0.decoder_layer.fc1.weight"], parts.lm["model.decoder.layers.0.fc1.weight"])
    assert model.lm.lm_head.weight is model.lm.get_input_embeddings().weight
    assert not own["transform.layers.layers.0.self_attn.in_proj_bias"].any()
    assert official_sources("encoder.norm.weight") is None


def test_transform_equals_reference_with_padding_attended(loaded):
    model, state = loaded
    w = split_official_state_dict(state).transform
    torch.manual_seed(0)
    x = torch.randn(2, 8, 8)
    pad = torch.zeros(2, 8, dtype=torch.bool)
    pad[:, 5:] = True  # AF1 does not mask padding: the mask must be ignored in this mode
    with torch.no_grad():
        ours = model.transform(x, pad)
    ref = af1_transform(w, x, heads=HEADS)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    masked = af1_transform(w, x, heads=HEADS, mask=~pad)
    assert (ours - masked).abs().max() > 1e-3  # the test can tell masked from unmasked


def test_xattn_block_equals_reference_with_af1_mask(loaded):
    model, state = loaded
    w = split_official_state_dict(state).xattn[1]
    block = model.xattn_blocks()[1]
    torch.manual_seed(1)
    x, media = torch.randn(1, 8, 16), torch.randn(1, 8, 8)
    index = torch.tensor([[0, 0, 0, -1, 1, 1, -1, -1]])  # 2 audios x 4 window slots, padding -1
    ids = torch.tensor([[256, 256, 104, model.media.audio, 105, 106, model.media.audio, 107]])
    ctx = model.audio_context(ids, AudioTokens(media, index), None)
    with torch.no_grad():
        ours = block(x, block.audio_kv(media), ctx.allow)
    ref = af1_xattn_block(w, x, media, index >= 0, ids == model.media.audio, heads=HEADS, per_audio=4)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    assert ctx.allow[0, 0, :3].all()  # AF1: text before the first <audio> sees audio 0


def test_af1_slots_encode_padding_and_hide_it_from_xattn(loaded):
    model, _ = loaded
    clip = Clip(np.sin(np.arange(6000) / 7.0).astype(np.float32), 16000)  # 0.375 s -> 2 windows of 4 slots
    with torch.no_grad():
        tokens = model.encode_audio([[clip]])
    assert tokens.tokens.shape == (1, 4, 8)
    assert tokens.audio_index.tolist() == [[0, 0, -1, -1]]
    chat = load_model_config("af1", {**OVERRIDES, "audio.audio_slots": 4})
    assert chat.audio.audio_slots * chat.audio.max_windows == 16


def test_round_trip_through_save_pretrained_gives_identical_logits(loaded, tmp_path):
    model, _ = loaded
    save_pretrained(model, tmp_path / "af1")
    again = load_model(tmp_path / "af1")
    assert again.config.prompt_style == "af1" and not again.config.transform.mask_padding
    clip = Clip((0.3 * np.sin(np.arange(5000) / 5.0)).astype(np.float32), 16000)
    text = model._text("What is it?", 1, "caption", [])
    assert text.startswith("</s>the task is audio captioning. <audio>what is it?\nanswer:<SEP>")
    ids = torch.tensor([model.tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        a, _ = model(ids, audio=model.encode_audio([[clip]]))
        b, _ = again(ids, audio=again.encode_audio([[clip]]))
        silent, _ = model(ids, audio=None)
    assert torch.equal(a, b)
    assert (a - silent).abs().max() > 1e-3  # the blocks are wired in (non-zero gates)


def test_chat_layout_pads_to_four_audio_slots(lm_dir):
    clap, _ = clapcap_state()
    model = load_af1(official_state(), clapcap=clap, lm=lm_dir, overrides=OVERRIDES, chat=True)
    assert model.config.audio.audio_slots == 4
    with torch.no_grad():
        tokens = model.encode_audio([[Clip(np.ones(3000, np.float32) * 0.1, 16000)]])
    assert tokens.tokens.shape == (1, 16, 8) and (tokens.audio_index >= 0).sum() == 1


def test_missing_unexpected_and_misshaped_keys_are_named(lm_dir):
    state = official_state()
    for alias in ("lang_encoder.model.decoder.layers.1.gated_cross_attn_layer.attn.to_q.weight",
                  "lang_encoder.gated_cross_attn_layers.1.attn.to_q.weight"):
        del state[alias]
    state["audio_transformer.layer_stack.0.pos_ffn.w_1.weight"] = torch.zeros(13, 8)
    state["audio_transformer.extra.weight"] = torch.zeros(2)
    clap, _ = clapcap_state()
    with pytest.raises(AF1CheckpointError) as err:
        load_af1(state, clapcap=clap, lm=lm_dir, overrides=OVERRIDES)
    msg = str(err.value)
    assert ("missing (1): lang_encoder.model.decoder.layers.1.gated_cross_attn_layer.attn.to_q.weight "
            "(for lm.model.decoder.layers.1.xattn.to_q.weight)") in msg
    assert "unexpected (1): audio_transformer.extra.weight" in msg
    assert ("wrong shape (1): audio_transformer.layer_stack.0.pos_ffn.w_1.weight: checkpoint (13, 8), model (12, 8) "
            "(transform.layers.layers.0.linear1.weight)") in msg


def test_a_foreign_position_table_and_an_untied_lm_head_are_refused(lm_dir):
    state = official_state()
    state["audio_transformer.position_enc.pos_table"] = state["audio_transformer.position_enc.pos_table"] + 0.01
    state["lang_encoder.lm_head.weight"] = state["lang_encoder.lm_head.weight"] + 1.0
    clap, _ = clapcap_state()
    with pytest.raises(AF1CheckpointError, match="wrong values \\(2\\): lang_encoder.lm_head.weight differs.*pos_table differs"):
        load_af1(state, clapcap=clap, lm=lm_dir, overrides=OVERRIDES)


def test_trainable_only_checkpoint_takes_decoder_layers_from_the_lm_folder(lm_dir):
    state = {k: v for k, v in official_state().items() if ".decoder_layer." not in k and "old_decoder_blocks" not in k}
    clap, _ = clapcap_state()
    model = load_af1(state, clapcap=clap, lm=lm_dir, overrides=OVERRIDES)
    from transformers import OPTForCausalLM

    hf = OPTForCausalLM.from_pretrained(lm_dir)
    assert torch.equal(model.lm.model.decoder.layers[1].decoder_layer.fc2.weight, hf.model.decoder.layers[1].fc2.weight)
    assert any("LM tensors taken from" in n for n in model.load_notes)


def test_bfloat16_load_through_load_model_casts_every_weight(lm_dir):
    clap, _ = clapcap_state()
    model = load_model("af1", checkpoint=official_state(), clapcap=clap, lm=lm_dir, overrides=OVERRIDES, dtype="bfloat16")
    assert model.lm.model.decoder.layers[0].xattn.to_q.weight.dtype == torch.bfloat16
    assert model.transform.input_norm.weight.dtype == torch.bfloat16
    assert not model.training


def test_a_tokenizer_of_the_wrong_size_is_explained(lm_dir):
    state = random_official_state(AF1Geometry(**{**GEOMETRY.__dict__, "vocab": VOCAB + 4}))
    state["audio_transformer.position_enc.pos_table"] = interleaved_sinusoids(16, 8)[None]
    with pytest.raises(AF1CheckpointError, match=r"embed_tokens.weight: checkpoint \(265, 16\), model \(261, 16\).*len\(tokenizer\) = 261"):
        load_af1(state, clapcap=clapcap_state()[0], lm=lm_dir, overrides=OVERRIDES)


class _RefLayer(torch.nn.Module):
    """An HF OPT decoder layer preceded by the reference xattn block (AF1's FlamingoLayer, restated)."""

    def __init__(self, layer, w, media, media_mask, audio_token):
        super().__init__()
        self.layer, self.w, self.media, self.media_mask, self.audio_token = layer, w, media, media_mask, audio_token

    def forward(self, hidden_states, *args, **kwargs):
        x = af1_xattn_block(self.w, hidden_states, self.media, self.media_mask, self.audio_token, heads=HEADS, per_audio=4)
        return self.layer(x, *args, **kwargs)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("layer"), name)


def test_whole_model_equals_reference_composition(lm_dir):
    """AF1's forward restated from the reference pieces: HF OPT with the official LM tensors, each layer after
    `af1_xattn_block`, media = `af1_transform` over 4 slots with every zero window encoded, no padding mask.
    Gates at 1 and larger audio projections make the audio matter: masking the padding in the transform
    moves the logits by ~7e-5, hiding audio from the task prefix by ~0.2 (float32 agreement is ~1e-7)."""
    from transformers import OPTForCausalLM

    state = official_state()
    for k in state:
        if k.endswith(("attn_gate", "ff_gate")):
            state[k] = torch.ones(1)
        if k.endswith(("attn.to_out.weight", "attn.to_kv.weight")):
            state[k] = state[k] * 10
    model = load_af1(state, clapcap=clapcap_state()[0], lm=lm_dir, overrides=OVERRIDES)
    parts = split_official_state_dict(state)
    hf = OPTForCausalLM(model.lm.config).eval()
    hf.load_state_dict(parts.lm, strict=False)
    hf.tie_weights()
    clip = Clip((0.3 * np.sin(np.arange(6000) / 5.0)).astype(np.float32), 16000)  # 2 windows + 2 padding slots
    from audioflamingo.audio import make_windows

    wins = make_windows(clip, model.config.audio)  # (2, S)
    slots = torch.cat([wins, torch.zeros(2, wins.shape[1])])  # (4, S) AF1 encodes the zero windows too
    with torch.no_grad():
        media = af1_transform(parts.transform, model.encoder(slots).reshape(1, 4, 8), heads=HEADS)  # (1, 4, E)
    mask = torch.tensor([[True, True, False, False]])
    ids = torch.tensor([model.tokenizer("</s></s>the task is x. <audio>what?\nanswer:<SEP>", add_special_tokens=False)["input_ids"]])
    layers = hf.model.decoder.layers
    for i in range(len(layers)):
        layers[i] = _RefLayer(layers[i], parts.xattn[i], media, mask, ids == model.media.audio)
    with torch.no_grad():
        ref = hf(input_ids=ids).logits
        ours, _ = model(ids, audio=model.encode_audio([[clip]]))
    torch.testing.assert_close(ours, ref, atol=2e-6, rtol=1e-5)
