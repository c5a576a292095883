"""The key layout of AF1's released checkpoints (`foundation.pt`, `chat.pt`), as data.

Read from the public AF1 source (NVIDIA/audio-flamingo, 2024: src/flamingo.py, src/flamingo_lm.py,
src/helpers.py, train/train_utils.py, inference_examples.py); see docs/af1.md, "Checkpoint layout".

A checkpoint is `torch.save({"epoch", "model_state_dict", "optimizer_state_dict",
"lr_scheduler_state_dict"})`; only "model_state_dict" matters. Its keys are the `state_dict()` of the
reference `Flamingo` module, gathered with FSDP FULL_STATE_DICT. Because the reference wraps each OPT
decoder layer and its cross-attention block in a `FlamingoLayer` while keeping the original lists, the
same tensors are reachable under two names each:

    lang_encoder.model.decoder.layers.{i}.decoder_layer.<opt layer>      == lang_encoder.old_decoder_blocks.{i}.<opt layer>
    lang_encoder.model.decoder.layers.{i}.gated_cross_attn_layer.<xattn> == lang_encoder.gated_cross_attn_layers.{i}.<xattn>

The reference loader strips every "module." and loads with strict=False; a trainable-only save
(`filter_state_dict_to_trainable`) drops the two alias lists and frozen LM tensors. There are no audio
encoder weights (the ClapCap tower sits in a plain Python object): they come from clapcap_weights_2023.pth.

`split_official_state_dict` turns any of these variants into four canonical parts:
    lm         a Hugging Face OPTForCausalLM state dict (model.decoder.*, lm_head.weight)
    xattn      {layer index: {"attn.norm.weight", "attn.to_q.weight", "attn.to_kv.weight", "attn.to_out.weight",
                              "attn_gate", "ff.0.weight", "ff.0.bias", "ff.1.weight", "ff.3.weight", "ff_gate"}}
    transform  the representation transformation layers (names of `audio_transformer.` below)
    other      anything unrecognised (reported, never silently used)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

STATE_DICT_KEY = "model_state_dict"

# prefixes wrappers add: DDP "module.", FSDP / activation checkpointing segments (removed anywhere)
WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")

# (pattern, part, canonical name template): first match wins; {i} is the decoder layer index
KEY_PATTERNS: list[tuple[str, str, str]] = [
    (r"lang_encoder\.model\.decoder\.layers\.(?P<i>\d+)\.decoder_layer\.(?P<rest>.+)", "lm", "model.decoder.layers.{i}.{rest}"),
    (r"lang_encoder\.old_decoder_blocks\.(?P<i>\d+)\.(?P<rest>.+)", "lm", "model.decoder.layers.{i}.{rest}"),
    (r"lang_encoder\.model\.decoder\.layers\.(?P<i>\d+)\.gated_cross_attn_layer\.(?P<rest>.+)", "xattn", "{rest}"),
    (r"lang_encoder\.gated_cross_attn_layers\.(?P<i>\d+)\.(?P<rest>.+)", "xattn", "{rest}"),
    (r"lang_encoder\.(?P<rest>model\.decoder\.(?!layers\.).+)", "lm", "{rest}"),  # embeddings, final LN
    (r"lang_encoder\.(?P<rest>lm_head\..+)", "lm", "{rest}"),
    (r"audio_transformer\.(?P<rest>.+)", "transform", "{rest}"),
]
_COMPILED = [(re.compile(p + r"\Z"), part, tmpl) for p, part, tmpl in KEY_PATTERNS]

# tensor names inside one gated xattn-dense block (helpers.GatedCrossAttentionBlock)
XATTN_NAMES = {
    "attn.norm.weight": "LayerNorm(D) before the cross-attention",
    "attn.norm.bias": "",
    "attn.to_q.weight": "(H·d, D) no bias; AF1 H=8, d=64",
    "attn.to_kv.weight": "(2·H·d, E) no bias; rows [0, H·d) are keys, [H·d, 2·H·d) values; heads are (h d) head-major",
    "attn.to_out.weight": "(D, H·d) no bias",
    "attn_gate": "(1,) tanh gate of the attention branch, init 0",
    "ff.0.weight": "LayerNorm(D) before the FFN (nn.Sequential index 0)",
    "ff.0.bias": "",
    "ff.1.weight": "(4D, D) no bias, then GELU (index 2, no weights)",
    "ff.3.weight": "(D, 4D) no bias",
    "ff_gate": "(1,) tanh gate of the FFN branch, init 0",
}

# representation transformation layers (helpers.TransformerEncoder), per layer n
TRANSFORM_NAMES = {
    "position_enc.pos_table": "(1, 128, E) sinusoidal table buffer (sin on even, cos on odd channels)",
    "layer_norm.weight": "input LayerNorm (eps 1e-6) applied after x·sqrt(E) + positions, BEFORE the layers",
    "layer_norm.bias": "",
    "layer_stack.{n}.slf_attn.w_qs.weight": "(E, E) no bias (n_head·d_k = 8·128)",
    "layer_stack.{n}.slf_attn.w_ks.weight": "(E, E) no bias",
    "layer_stack.{n}.slf_attn.w_vs.weight": "(E, E) no bias",
    "layer_stack.{n}.slf_attn.fc.weight": "(E, E) no bias",
    "layer_stack.{n}.slf_attn.layer_norm.weight": "post-LN after attention + residual (eps 1e-6)",
    "layer_stack.{n}.slf_attn.layer_norm.bias": "",
    "layer_stack.{n}.pos_ffn.w_1.weight": "(F, E) with bias, ReLU; AF1 F=2048",
    "layer_stack.{n}.pos_ffn.w_1.bias": "",
    "layer_stack.{n}.pos_ffn.w_2.weight": "(E, F) with bias",
    "layer_stack.{n}.pos_ffn.w_2.bias": "",
    "layer_stack.{n}.pos_ffn.layer_norm.weight": "post-LN after FFN + residual (eps 1e-6)",
    "layer_stack.{n}.pos_ffn.layer_norm.bias": "",
}

# Hugging Face OPT decoder layer tensor names (transformers OPTDecoderLayer)
OPT_LAYER_NAMES = [
    f"self_attn.{p}_proj.{w}" for p in ("k", "v", "q", "out") for w in ("weight", "bias")
] + [f"{n}.{w}" for n in ("self_attn_layer_norm", "fc1", "fc2", "final_layer_norm") for w in ("weight", "bias")]


@dataclass
class AF1Geometry:
    """Sizes that fix every shape in an AF1 checkpoint (defaults: the release, OPT-IML-MAX-1.3B)."""

    layers: int = 24
    d_model: int = 2048
    ffn: int = 8192
    vocab: int = 50268  # 50265 OPT tokens + <audio>, <|endofchunk|>, <SEP> (resize_token_embeddings shrinks 50272)
    max_positions: int = 2048  # OPT learned positions have 2 extra rows
    audio_dim: int = 1024  # E: ClapCap projection width
    xattn_heads: int = 8
    xattn_dim_head: int = 64
    xattn_ff_mult: int = 4
    xattn_every: int = 1
    transform_layers: int = 3
    transform_ffn: int = 2048
    transform_positions: int = 128


def official_shapes(g: AF1Geometry = AF1Geometry(), aliases: bool = True) -> dict[str, tuple[int, ...]]:
    """Every key of a full AF1 `model_state_dict` with its shape (both alias names when `aliases`)."""
    D, E, inner = g.d_model, g.audio_dim, g.xattn_heads * g.xattn_dim_head
    opt_layer = {
        **{f"self_attn.{p}_proj.weight": (D, D) for p in ("k", "v", "q", "out")},
        **{f"self_attn.{p}_proj.bias": (D,) for p in ("k", "v", "q", "out")},
        "self_attn_layer_norm.weight": (D,), "self_attn_layer_norm.bias": (D,),
        "fc1.weight": (g.ffn, D), "fc1.bias": (g.ffn,), "fc2.weight": (D, g.ffn), "fc2.bias": (D,),
        "final_layer_norm.weight": (D,), "final_layer_norm.bias": (D,),
    }
    xattn = {
        "attn.norm.weight": (D,), "attn.norm.bias": (D,), "attn.to_q.weight": (inner, D),
        "attn.to_kv.weight": (2 * inner, E), "attn.to_out.weight": (D, inner), "attn_gate": (1,),
        "ff.0.weight": (D,), "ff.0.bias": (D,), "ff.1.weight": (g.xattn_ff_mult * D, D),
        "ff.3.weight": (D, g.xattn_ff_mult * D), "ff_gate": (1,),
    }
    out: dict[str, tuple[int, ...]] = {
        "lang_encoder.model.decoder.embed_tokens.weight": (g.vocab, D),
        "lang_encoder.model.decoder.embed_positions.weight": (g.max_positions + 2, D),
        "lang_encoder.model.decoder.final_layer_norm.weight": (D,),
        "lang_encoder.model.decoder.final_layer_norm.bias": (D,),
        "lang_encoder.lm_head.weight": (g.vocab, D),
    }
    for i in range(g.layers):
        for k, s in opt_layer.items():
            out[f"lang_encoder.model.decoder.layers.{i}.decoder_layer.{k}"] = s
            if aliases:
                out[f"lang_encoder.old_decoder_blocks.{i}.{k}"] = s
        if (i + 1) % g.xattn_every == 0:
            for k, s in xattn.items():
                out[f"lang_encoder.model.decoder.layers.{i}.gated_cross_attn_layer.{k}"] = s
                if aliases:
                    out[f"lang_encoder.gated_cross_attn_layers.{i}.{k}"] = s
    out["audio_transformer.position_enc.pos_table"] = (1, g.transform_positions, E)
    out["audio_transformer.layer_norm.weight"] = (E,)
    out["audio_transformer.layer_norm.bias"] = (E,)
    for n in range(g.transform_layers):
        p = f"audio_transformer.layer_stack.{n}."
        for w in ("w_qs", "w_ks", "w_vs", "fc"):
            out[p + f"slf_attn.{w}.weight"] = (E, E)
        out[p + "pos_ffn.w_1.weight"], out[p + "pos_ffn.w_1.bias"] = (g.transform_ffn, E), (g.transform_ffn,)
        out[p + "pos_ffn.w_2.weight"], out[p + "pos_ffn.w_2.bias"] = (E, g.transform_ffn), (E,)
        for ln in ("slf_attn.layer_norm", "pos_ffn.layer_norm"):
            out[p + ln + ".weight"], out[p + ln + ".bias"] = (E,), (E,)
    return out


def strip_wrappers(key: str) -> str:
    """Remove DDP/FSDP/checkpointing wrapper segments (the reference loader removed every 'module.')."""
    for seg in WRAPPER_SEGMENTS:
        key = key.replace(seg, "")
    while key.startswith("module."):
        key = key[len("module."):]
    return key


def classify_key(key: str) -> tuple[str, int | None, str]:
    """Official key -> (part, layer index or None, canonical name); part 'other' when unrecognised."""
    key = strip_wrappers(key)
    for rx, part, tmpl in _COMPILED:
        m = rx.match(key)
        if m:
            groups = m.groupdict()
            i = int(groups["i"]) if groups.get("i") is not None else None
            return part, i, tmpl.format(**groups)
    return "other", None, key


@dataclass
class AF1Parts:
    lm: dict = field(default_factory=dict)
    xattn: dict = field(default_factory=dict)  # {layer index: {name: tensor}}
    transform: dict = field(default_factory=dict)
    other: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)


def split_official_state_dict(state: dict, check_aliases: str = "shape") -> AF1Parts:
    """Split an AF1 model_state_dict (or a whole checkpoint dict) into canonical parts.

    Aliased copies are merged; `check_aliases` = "shape" (cheap) or "values" (torch.equal on every
    pair; reads the whole file) decides how hard copies are compared. A conflict raises ValueError.
    """
    if STATE_DICT_KEY in state and isinstance(state[STATE_DICT_KEY], dict):
        state = state[STATE_DICT_KEY]
    parts, seen, aliased = AF1Parts(), {}, 0
    for key, value in state.items():
        part, i, name = classify_key(key)
        target = parts.xattn.setdefault(i, {}) if part == "xattn" else getattr(parts, part)
        ident = (part, i, name)
        if ident in seen:
            first = seen[ident]
            same = tuple(first[1].shape) == tuple(value.shape)
            if same and check_aliases == "values":
                same = torch.equal(first[1], value)
            if not same:
                raise ValueError(f"checkpoint keys {first[0]!r} and {key!r} name the same tensor but differ")
            aliased += 1
            continue
        seen[ident] = (key, value)
        target[name] = value
    if aliased:
        parts.notes.append(f"merged {aliased} aliased duplicate tensors (old_decoder_blocks / gated_cross_attn_layers)")
    if parts.other:
        parts.notes.append(f"{len(parts.other)} unrecognised keys: {', '.join(sorted(parts.other)[:10])}")
    return parts


def random_official_state(g: AF1Geometry, aliases: bool = True, seed: int = 0) -> dict:
    """A `model_state_dict` in the official layout with random values (for loader tests at tiny width).

    Aliased names share one tensor, as `Module.state_dict()` returns them; gates are non-zero so that a
    test can see whether the blocks are wired in.
    """
    gen = torch.Generator().manual_seed(seed)
    state, shared = {}, {}
    for key, shape in official_shapes(g, aliases).items():
        ident = classify_key(key)
        if ident not in shared:
            shared[ident] = 0.1 * torch.randn(shape, generator=gen)
        state[key] = shared[ident]
    return state
