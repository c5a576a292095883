"""Load the released AF1 weights (`foundation.pt` / `chat.pt` + `clapcap_weights_2023.pth` + an OPT folder).

    model = load_model("af1", checkpoint="foundation.pt", clapcap="clapcap_weights_2023.pth",
                       lm="opt-iml-max-1.3b/", dtype="bfloat16")

The model is built from the `af1` preset on the meta device (no memory), the official tensors are
mapped onto our parameter names (`official_sources` states the mapping, our name -> official names),
every expected tensor is checked for presence and shape, and only then are the tensors assigned (cast
to `dtype` one by one: the 17.7 GB file is memory-mapped, the aliased copies are never read).

    official (canonical, af1_keys.split_official_state_dict)       ours
    lm: model.decoder.layers.{i}.<opt>                              lm.model.decoder.layers.{i}.decoder_layer.<opt>
    lm: model.decoder.<embeddings, final LN>, lm_head.weight        lm.model.decoder.…, (lm_head tied)
    xattn[i]: attn.norm / attn.to_q / attn.to_kv / attn.to_out      lm.model.decoder.layers.{i}.xattn.norm / to_q / to_kv / to_out
    xattn[i]: attn_gate, ff.0, ff.1, ff.3, ff_gate                  ….xattn.attn_gate, ff.0, ff.1, ff.3, ff_gate
    transform: layer_norm                                          transform.input_norm
    transform: layer_stack.{n}.slf_attn.w_qs | w_ks | w_vs          transform.layers.layers.{n}.self_attn.in_proj_weight (stacked)
    transform: layer_stack.{n}.slf_attn.fc                          ….self_attn.out_proj.weight   (AF1 has no biases: ours are 0)
    transform: layer_stack.{n}.slf_attn.layer_norm / pos_ffn.w_1 / pos_ffn.w_2 / pos_ffn.layer_norm
                                                                    ….norm1 / linear1 / linear2 / norm2
    transform: position_enc.pos_table                               checked against transform.positions "interleaved"
    clapcap_weights_2023.pth                                        encoder.* (audioflamingo.compat.clapcap)
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch

from audioflamingo.compat.af1_keys import STATE_DICT_KEY, split_official_state_dict
from audioflamingo.compat.af1_prompts import AUDIO_SLOTS
from audioflamingo.config import load_model_config
from audioflamingo.model.loading import CheckpointError, build_model, save_pretrained
from audioflamingo.model.xattn import interleaved_sinusoids
from audioflamingo.text import load_tokenizer


class AF1CheckpointError(CheckpointError):
    """An AF1 checkpoint does not fit the af1 model; the message lists missing / unexpected / misshaped keys."""


XATTN_SOURCES = {  # our name inside `….xattn.` -> the official name inside `gated_cross_attn_layer.`
    "norm.weight": "attn.norm.weight", "norm.bias": "attn.norm.bias", "to_q.weight": "attn.to_q.weight",
    "to_kv.weight": "attn.to_kv.weight", "to_out.weight": "attn.to_out.weight", "attn_gate": "attn_gate",
    "ff.0.weight": "ff.0.weight", "ff.0.bias": "ff.0.bias", "ff.1.weight": "ff.1.weight",
    "ff.3.weight": "ff.3.weight", "ff_gate": "ff_gate",
}
TRANSFORM_SOURCES = {  # our name inside `transform.layers.layers.{n}.` -> inside `layer_stack.{n}.`
    "self_attn.in_proj_weight": ("slf_attn.w_qs.weight", "slf_attn.w_ks.weight", "slf_attn.w_vs.weight"),
    "self_attn.out_proj.weight": ("slf_attn.fc.weight",),
    "norm1.weight": ("slf_attn.layer_norm.weight",), "norm1.bias": ("slf_attn.layer_norm.bias",),
    "linear1.weight": ("pos_ffn.w_1.weight",), "linear1.bias": ("pos_ffn.w_1.bias",),
    "linear2.weight": ("pos_ffn.w_2.weight",), "linear2.bias": ("pos_ffn.w_2.bias",),
    "norm2.weight": ("pos_ffn.layer_norm.weight",), "norm2.bias": ("pos_ffn.layer_norm.bias",),
}
ZERO_BIASES = ("self_attn.in_proj_bias", "self_attn.out_proj.bias")  # AF1's attention has no biases
POS_TABLE = "position_enc.pos_table"

_LAYER = re.compile(r"lm\.model\.decoder\.layers\.(\d+)\.decoder_layer\.(.+)")
_XATTN = re.compile(r"lm\.model\.decoder\.layers\.(\d+)\.xattn\.(.+)")
_TRANSFORM = re.compile(r"transform\.layers\.layers\.(\d+)\.(.+)")


def official_sources(key: str):
    """Our parameter name -> tuple of canonical sources (part, layer, name) stacked along dim 0,
    "zeros" (no AF1 counterpart, a zero bias), or None (not from the AF1 file: the encoder)."""
    if key.startswith("encoder."):
        return None
    if m := _LAYER.fullmatch(key):
        return (("lm", None, f"model.decoder.layers.{m[1]}.{m[2]}"),)
    if m := _XATTN.fullmatch(key):
        return (("xattn", int(m[1]), XATTN_SOURCES.get(m[2], m[2])),)
    if key.startswith("lm."):
        return (("lm", None, key[len("lm."):]),)
    if key.startswith("transform.input_norm."):
        return (("transform", None, "layer_norm." + key.rsplit(".", 1)[1]),)
    if m := _TRANSFORM.fullmatch(key):
        if m[2] in ZERO_BIASES:
            return "zeros"
        return tuple(("transform", None, f"layer_stack.{m[1]}.{s}") for s in TRANSFORM_SOURCES.get(m[2], (m[2],)))
    return (("other", None, key),)


def official_name(source: tuple) -> str:
    """A canonical source -> the key it has in the released file (first of its aliases)."""
    part, i, name = source
    if part == "xattn":
        return f"lang_encoder.model.decoder.layers.{i}.gated_cross_attn_layer.{name}"
    if part == "lm":
        m = re.fullmatch(r"model\.decoder\.layers\.(\d+)\.(.+)", name)
        return f"lang_encoder.model.decoder.layers.{m[1]}.decoder_layer.{m[2]}" if m else f"lang_encoder.{name}"
    if part == "transform":
        return f"audio_transformer.{name}"
    return name


def _report(source: str, missing, unexpected, shapes, values) -> None:
    if not (missing or unexpected or shapes or values):
        return
    lines = [f"{source} does not fit the af1 model:"]
    for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes), ("wrong values", values)):
        if items:
            lines.append(f"  {title} ({len(items)}): " + ", ".join(items[:12]) + (" …" if len(items) > 12 else ""))
    raise AF1CheckpointError("\n".join(lines))


def map_official_state(parts, own: dict, skip: set, source: str = "checkpoint", dtype=None,
                       extra_lm: dict | None = None, positions_width: int | None = None) -> dict:
    """Canonical AF1 parts (`split_official_state_dict`) -> our state dict for every key of `own`
    (name -> tensor or shape) except `skip` and the encoder; raises AF1CheckpointError listing every
    missing (official name and ours), unexpected and misshaped tensor."""
    available = {("lm", None, k): v for k, v in parts.lm.items()}
    available.update({("xattn", i, k): v for i, block in parts.xattn.items() for k, v in block.items()})
    available.update({("transform", None, k): v for k, v in parts.transform.items()})
    used, state, missing, shapes, values = set(), {}, [], [], []
    for key, ref in own.items():
        sources = official_sources(key)
        if sources is None or key in skip:
            continue
        shape = tuple(ref.shape)
        if sources == "zeros":
            state[key] = torch.zeros(shape, dtype=dtype or torch.float32)
            continue
        tensors = []
        for s in sources:
            t = available.get(s)
            if t is None and extra_lm is not None and s[0] == "lm":
                t = extra_lm.get(s[2])
            if t is None:
                missing.append(f"{official_name(s)} (for {key})")
            tensors.append(t)
            used.add(s)
        if any(t is None for t in tensors):
            continue
        got = (sum(t.shape[0] for t in tensors), *tensors[0].shape[1:]) if len({t.shape[1:] for t in tensors}) == 1 else None
        if got != shape:
            given = " + ".join(str(tuple(t.shape)) for t in tensors)
            shapes.append(f"{' + '.join(official_name(s) for s in sources)}: checkpoint {given}, model {shape} ({key})")
            continue
        value = tensors[0] if len(tensors) == 1 else torch.cat(tensors, 0)  # stacked q, k, v rows
        state[key] = value.to(dtype) if dtype is not None else value
    for key in skip:  # tied copies (lm_head = embeddings): the official copy only needs the right shape
        s = ("lm", None, key[len("lm."):])
        if s in available:
            used.add(s)
            emb = available.get(("lm", None, "model.decoder.embed_tokens.weight"))
            if tuple(available[s].shape) != tuple(own[key].shape):
                shapes.append(f"{official_name(s)}: checkpoint {tuple(available[s].shape)}, model {tuple(own[key].shape)}")
            elif emb is not None and emb.shape == available[s].shape and not torch.equal(emb, available[s]):
                values.append(f"{official_name(s)} differs from the input embeddings it is tied to")
    pos = ("transform", None, POS_TABLE)
    if pos in available and positions_width is not None:
        used.add(pos)
        table = available[pos].float()
        if table.dim() != 3 or table.shape[-1] != positions_width:
            shapes.append(f"{official_name(pos)}: checkpoint {tuple(table.shape)}, model (1, L, {positions_width})")
        elif (diff := (table[0] - interleaved_sinusoids(table.shape[1], positions_width)).abs().max().item()) > 1e-4:
            values.append(f"{official_name(pos)} differs from AF1's sinusoid table (transform.positions: interleaved) by {diff:.2e}")
    unexpected = sorted(official_name(s) for s in available if s not in used) + sorted(parts.other)
    if any("embed_tokens" in s for s in shapes):
        shapes.append(f"(the embedding rows are len(tokenizer) = {own['lm.model.decoder.embed_tokens.weight'].shape[0]} "
                      "with <audio>, <|endofchunk|>, <SEP> added: AF1 needs OPT's 50265-token tokenizer -> 50268)")
    _report(source, missing, unexpected, shapes, values)
    return state


def read_official(checkpoint, trust_pickle: bool = False) -> dict:
    """`foundation.pt` / `chat.pt` (or an already loaded dict) -> its model_state_dict, memory-mapped."""
    if isinstance(checkpoint, dict):
        return checkpoint.get(STATE_DICT_KEY, checkpoint)
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"AF1 checkpoint {path} does not exist (the files are foundation.pt / chat.pt)")
    try:
        obj = torch.load(path, map_location="cpu", mmap=True, weights_only=not trust_pickle)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise AF1CheckpointError(f"{path}: cannot be read ({e}); pass trust_pickle=True for a file you trust") from e
        warnings.warn(f"{path}: not memory-mappable ({e}); reading the whole file into memory", stacklevel=2)
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as e:  # noqa: BLE001 - a pickle with non-tensor objects needs the user's consent
        raise AF1CheckpointError(f"{path}: cannot be read with weights_only=True ({type(e).__name__}: {e}); "
                                 "if you trust the file, pass trust_pickle=True (CLI: --trust-pickle)") from e
    if not isinstance(obj, dict):
        raise AF1CheckpointError(f"{path}: expected a dict with {STATE_DICT_KEY!r}, got {type(obj).__name__}")
    return obj.get(STATE_DICT_KEY, obj)


def _dtype(dtype):
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "half": "float16"}
    return getattr(torch, names.get(str(dtype), str(dtype)))


def load_af1(checkpoint, clapcap=None, lm=None, device=None, dtype=None, tokenizer=None, chat: bool = False,
             overrides=None, trust_pickle: bool = False):
    """Build the af1 model and fill it with the released weights. `lm` (the OPT-IML-MAX-1.3B folder) gives
    the LM config and tokenizer (and any LM tensor a trainable-only checkpoint lacks); `chat` pads the
    audio to 4 slots as `chat.pt` was run; `overrides` (dotted keys) change the geometry (tests)."""
    cfg = load_model_config("af1", overrides)
    if lm is not None:
        cfg.lm.path = str(lm)
    if chat:
        cfg.audio.audio_slots = AUDIO_SLOTS["chat"]
    name = str(checkpoint) if not isinstance(checkpoint, dict) else "AF1 state dict"
    parts = split_official_state_dict(read_official(checkpoint, trust_pickle))
    if tokenizer is None or isinstance(tokenizer, (str, Path)):
        spec = tokenizer or lm or cfg.lm.tokenizer
        if spec is None:
            raise ValueError("load_af1: pass lm= (the opt-iml-max-1.3b folder: config and tokenizer) or tokenizer=")
        tokenizer = load_tokenizer(spec)
    dtype = _dtype(dtype)
    model = build_model(cfg, tokenizer, meta=True)
    emb, out = model.lm.get_input_embeddings(), model.lm.get_output_embeddings()
    tied = out is not None and out.weight is emb.weight
    own = model.state_dict()
    skip = {k for k in own if tied and k.startswith("lm.") and k.endswith("lm_head.weight")}  # tied to embeddings
    extra = _lm_weights(cfg.lm.path, parts, own, skip)
    state = map_official_state(parts, own, skip, name, dtype, extra, model.transform.width)
    notes = list(parts.notes) + ([f"{len(extra)} LM tensors taken from {cfg.lm.path}"] if extra else [])
    model.load_state_dict(state, strict=False, assign=True)
    if tied:
        model.lm.get_output_embeddings().weight = model.lm.get_input_embeddings().weight
    model.encoder = _load_encoder(cfg, clapcap, trust_pickle, notes)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise AF1CheckpointError(f"{name}: no values for {len(left)} model tensors: {', '.join(left[:12])}")
    model.eval()
    if dtype is not None:
        model.to(dtype)
    if device is not None:
        model.to(device)
    model.load_notes = notes
    return model


def _lm_weights(path, parts, own: dict, skip: set) -> dict:
    """LM tensors the checkpoint lacks (a trainable-only save), read from the OPT folder; {} if none lack."""
    wanted = {s[2] for k in own if k not in skip and isinstance(src := official_sources(k), tuple)
              for s in src if s[0] == "lm" and s[2] not in parts.lm}
    if not wanted or path is None:
        return {}
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32).state_dict()
    return {k: hf[k] for k in wanted if k in hf}


def _load_encoder(cfg, clapcap, trust_pickle: bool, notes: list):
    from audioflamingo.compat.clapcap import load_clapcap_weights
    from audioflamingo.model.encoder import build_encoder

    encoder = build_encoder(cfg.encoder, cfg.audio.sample_rate, cfg.audio.window_samples)
    if clapcap is None:
        warnings.warn("load_af1: no clapcap= given: the audio encoder is RANDOM (answers are meaningless)", stacklevel=3)
        notes.append("audio encoder random (no clapcap weights)")
    else:
        notes.extend(load_clapcap_weights(encoder, clapcap, trust_pickle=trust_pickle))
    return encoder


def convert_af1(checkpoint, out, clapcap=None, lm=None, dtype=None, chat: bool = False, trust_pickle: bool = False):
    """Official files -> our checkpoint folder (config.json, model.safetensors, tokenizer/)."""
    model = load_af1(checkpoint, clapcap=clapcap, lm=lm, dtype=dtype, chat=chat, trust_pickle=trust_pickle)
    save_pretrained(model, out)
    return Path(out), model.load_notes


@torch.no_grad()
def af1_chat(model, audio, dialogue: list[dict], generation=None, **gen) -> str:
    """One AF1 chat turn (load `chat.pt` with chat=True): `dialogue` = [{"user", "assistant"}, …, {"user"}]
    about one audio -> the assistant's reply, with AF1's chat string and its demo sampling (top-k 50, top-p 0.95)."""
    from audioflamingo.compat.af1_prompts import CHAT_SAMPLING, MAX_NEW_TOKENS, chat_prompt, leading_specials
    from audioflamingo.model.generate import GenerationConfig, generate

    if not dialogue or "assistant" in dialogue[-1]:
        raise ValueError("af1_chat: the dialogue must end with a {'user': …} turn awaiting the reply")
    if generation is None:
        sampling = {k: v for k, v in CHAT_SAMPLING.items() if k != "num_return_sequences"}
        generation = GenerationConfig(**{"max_new_tokens": MAX_NEW_TOKENS, **sampling, **gen})
    elif not isinstance(generation, GenerationConfig):
        generation = GenerationConfig.preset(generation, **gen)
    tok = model.tokenizer
    text = leading_specials(tok) + chat_prompt(dialogue, bos=tok.eos_token, eos=tok.eos_token)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]], device=model.device)  # (1, T)
    audio_tokens = model.encode_audio([[model.load_clip(audio)]])
    out = generate(model, ids, torch.ones_like(ids), audio_tokens, generation, {model.media.eoc, model.media.eos})
    return tok.decode(out[0], skip_special_tokens=True).strip()
