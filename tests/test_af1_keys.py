"""AF1 checkpoint key layout: sizes against hand-computed figures, a tiny official-layout round trip."""

import pytest
import torch

from audioflamingo.compat.af1_keys import (
    OPT_LAYER_NAMES,
    TRANSFORM_NAMES,
    XATTN_NAMES,
    AF1Geometry,
    classify_key,
    official_shapes,
    random_official_state,
    split_official_state_dict,
)

TINY = AF1Geometry(layers=2, d_model=16, ffn=32, vocab=40, max_positions=30, audio_dim=8, xattn_heads=2,
                   xattn_dim_head=4, transform_layers=2, transform_ffn=12, transform_positions=6)


def numel(shapes):
    n = 0
    for s in shapes:
        k = 1
        for d in s:
            k *= d
        n += k
    return n


def test_release_sizes_match_hand_computed_figures():
    shapes = official_shapes(aliases=False)
    lm = numel(s for k, s in shapes.items() if k.startswith("lang_encoder.") and "gated_cross" not in k and "lm_head" not in k)
    xattn = numel(s for k, s in shapes.items() if "gated_cross_attn_layer." in k)
    transform = numel(s for k, s in shapes.items() if k.startswith("audio_transformer.") and "pos_table" not in k)
    layer = 4 * (2048 * 2048 + 2048) + 2 * 2 * 2048 + (8192 * 2048 + 8192) + (2048 * 8192 + 2048)
    assert lm == 50268 * 2048 + 2050 * 2048 + 2 * 2048 + 24 * layer == 1_315_749_888  # OPT-IML-MAX-1.3B, 50268 tokens
    block = 512 * 2048 + 1024 * 1024 + 2048 * 512 + 2 * 2048 + 2 * 8192 * 2048 + 2 * 2048 + 2
    assert xattn == 24 * block == 881_000_496  # the 0.881 B of the paper
    assert transform == 3 * (4 * 1024 * 1024 + 2 * 2048 * 1024 + 2048 + 1024 + 4 * 1024) + 2 * 1024 == 25_189_376
    with_aliases = official_shapes()
    assert len(with_aliases) - len(shapes) == 24 * (len(OPT_LAYER_NAMES) + len(XATTN_NAMES))


def tiny_official_state(prefix_some_with_module=True):
    state = random_official_state(TINY)
    assert state["lang_encoder.old_decoder_blocks.1.fc1.weight"] is state["lang_encoder.model.decoder.layers.1.decoder_layer.fc1.weight"]
    return {("module." + k if prefix_some_with_module and "old_decoder" in k else k): v for k, v in state.items()}


def test_tiny_official_layout_splits_into_canonical_parts():
    state = tiny_official_state()
    parts = split_official_state_dict({"model_state_dict": state, "epoch": 3})
    assert not parts.other
    assert set(parts.xattn) == {0, 1}
    assert all(set(block) == set(XATTN_NAMES) for block in parts.xattn.values())
    expected_transform = {k.replace("{n}", str(n)) for k in TRANSFORM_NAMES for n in range(2)}
    assert set(parts.transform) == expected_transform
    assert parts.transform["position_enc.pos_table"].shape == (1, 6, 8)
    assert parts.xattn[1]["attn.to_kv.weight"].shape == (16, 8)
    assert any("merged 54 aliased" in n for n in parts.notes)  # 2 layers x (16 OPT + 11 xattn tensors)
    # the LM part is a plain Hugging Face OPT state dict
    from transformers import OPTConfig, OPTForCausalLM

    cfg = OPTConfig(vocab_size=40, hidden_size=16, ffn_dim=32, num_hidden_layers=2, num_attention_heads=2,
                    max_position_embeddings=30, word_embed_proj_dim=16)
    lm = OPTForCausalLM(cfg)
    missing, unexpected = lm.load_state_dict(parts.lm, strict=False)
    assert not missing and not unexpected
    torch.testing.assert_close(lm.model.decoder.layers[1].fc2.weight, state["lang_encoder.model.decoder.layers.1.decoder_layer.fc2.weight"])


def test_trainable_only_checkpoint_without_aliases():
    state = {k: v for k, v in tiny_official_state(False).items() if "old_decoder" not in k and "gated_cross_attn_layers" not in k}
    parts = split_official_state_dict(state)
    assert not parts.notes and len(parts.lm) == 5 + 2 * len(OPT_LAYER_NAMES)


def test_conflicting_aliases_and_unknown_keys_are_reported():
    state = tiny_official_state(False)
    state["lang_encoder.old_decoder_blocks.0.fc1.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="old_decoder_blocks.0.fc1.weight"):
        split_official_state_dict(state)
    state = tiny_official_state(False)
    state["lang_encoder.old_decoder_blocks.0.fc1.weight"] = torch.zeros(32, 16)  # same shape, other values
    split_official_state_dict(state)  # shape check only by default
    with pytest.raises(ValueError, match="differ"):
        split_official_state_dict(state, check_aliases="values")
    state = tiny_official_state(False)
    state["clap.something"] = torch.zeros(1)
    parts = split_official_state_dict(state)
    assert "clap.something" in parts.other and any("unrecognised" in n for n in parts.notes)


def test_wrapper_segments_are_stripped():
    key = "module.lang_encoder._fsdp_wrapped_module.gated_cross_attn_layers.5._checkpoint_wrapped_module.ff_gate"
    assert classify_key(key) == ("xattn", 5, "ff_gate")
    assert classify_key("lang_encoder.model.decoder.embed_tokens.weight") == ("lm", None, "model.decoder.embed_tokens.weight")
