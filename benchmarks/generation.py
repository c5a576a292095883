"""Generation: (a) KV cache + audio K/V computed once, (b) full recompute per token, (c) prefix fusion.

(c) is the design of Qwen2-Audio / AF3: audio enters the LM sequence as 25 tokens per second. It gets
random audio embeddings (its encoder cost is NOT counted, which favours it); (a) and (b) include our
encoder. Same LM geometry in all three.
"""

from __future__ import annotations

import math
import time

import torch

from audioflamingo.config import list_presets, load_model_config
from audioflamingo.model.generate import GenerationConfig, generate
from audioflamingo.model.loading import build_model
from audioflamingo.text import encode, icl_text, pad_batch, single_text
from benchmarks.common import table, timeit

# the LM sizes compared; af-mini's own geometry when its preset exists
MID = {"lm.hf_config": {"model_type": "llama", "hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8,
                        "num_key_value_heads": 8, "intermediate_size": 1536, "max_position_embeddings": 32768}}
STANDIN = {"lm.hf_config": {"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
                            "num_key_value_heads": 4, "intermediate_size": 768, "max_position_embeddings": 32768}}
ENCODER = {"encoder.width": 128, "encoder.layers": 2, "encoder.heads": 4, "encoder.out_dim": 256, "encoder.tokens_per_window": 1,
           "transform.layers": 2, "transform.heads": 4, "transform.ffn": 512, "transform.dropout": 0.0,
           "xattn.heads": 4, "xattn.head_dim": 64, "xattn.ffn_mult": 2, "lm.tokenizer": "byte",
           "audio.window_seconds": 7.0, "audio.hop_seconds": 1.75, "audio.max_windows": 16}


def _configs():
    if "af-mini" in list_presets():
        cfg = load_model_config("af-mini")
        # random weights of af-mini's geometry; room for the prefix baseline's long sequences (25 tokens/s)
        cfg.lm.hf_config = {**cfg.lm.hf_config, "n_positions": 32768}
        yield "af-mini", cfg
    else:
        yield "mini (width 256, 4 layers)", load_model_config("tiny", {**ENCODER, **STANDIN})
    yield "mid (width 512, 8 layers)", load_model_config("tiny", {**ENCODER, **MID})


def _timed_generate(model, ids, mask, audio_fn, n, use_cache, repeat=3):
    """Median seconds for encode + generate n tokens (no stop token: always exactly n)."""

    def once():
        audio = audio_fn()
        generate(model, ids, mask, audio, GenerationConfig(max_new_tokens=n, use_cache=use_cache), set())

    return timeit(once, repeat=repeat, warmup=1)


def _prompts(model):
    """A plain question, and an AF1-style 8-shot ICL prompt (the shots' audio is not counted here)."""
    short = single_text("Describe the sound in detail.", None)
    shots = [("Classify the sound. OPTIONS: dog, cat, bird, car, rain.", a) for a in ["dog", "rain", "car", "bird"] * 2]
    icl = icl_text(shots, "Classify the sound. OPTIONS: dog, cat, bird, car, rain.", None, n_audios=1)
    return {"short": short, "icl-8shot": icl}


class PrefixLM:
    """The prefix-fusion baseline: audio embeddings (25 per second) prepended to the text embeddings."""

    def __init__(self, lm):
        self.lm = lm

    @torch.no_grad()
    def generate(self, ids, audio_embeds, n):
        emb = torch.cat([audio_embeds, self.lm.get_input_embeddings()(ids)], 1)  # (B, A*25 + T, D)
        out = self.lm(inputs_embeds=emb, use_cache=True)
        cache = out.cache if "cache" in out else out.past_key_values
        tok = out.logits[:, -1].argmax(-1)  # (B,)
        for _ in range(n - 1):
            out = self.lm(input_ids=tok[:, None], cache=cache, use_cache=True)
            cache = out.cache if "cache" in out else out.past_key_values
            tok = out.logits[:, -1].argmax(-1)
        return tok


def run(quick: bool = True, new_tokens: int = 64) -> dict:
    seconds_list = [5, 30] if quick else [5, 30, 120, 600]
    rows = []
    for name, cfg in _configs():
        cfg.audio.max_windows = 1 + math.ceil((max(seconds_list) - cfg.audio.window_seconds) / cfg.audio.hop_seconds)
        model = build_model(cfg).eval()
        prefix = PrefixLM(model.lm)
        D = model.lm.get_input_embeddings().weight.shape[1]
        for prompt_name, text in _prompts(model).items():
            n_aud = text.count("<audio>")
            ids, _ = encode(model.tokenizer, text)
            ids, mask = pad_batch([ids], model.media.pad)
            for sec in seconds_list:
                if prompt_name != "short" and sec != seconds_list[0]:
                    continue  # the ICL prompt is measured at the shortest audio only
                clips = [model.load_clip((torch.randn(int(sec * cfg.audio.sample_rate)).numpy() * 0.1, cfg.audio.sample_rate)) for _ in range(n_aud)]
                audio_fn = lambda: model.encode_audio([clips])  # noqa: E731
                with torch.no_grad():
                    ttft_a = _timed_generate(model, ids, mask, audio_fn, 1, True)
                    total_a = _timed_generate(model, ids, mask, audio_fn, new_tokens, True)
                    total_b = _timed_generate(model, ids, mask, audio_fn, new_tokens, False, repeat=1)
                    audio_embeds = torch.randn(1, 25 * sec * n_aud, D) * 0.02
                    ttft_c = timeit(lambda: prefix.generate(ids, audio_embeds, 1), repeat=3)
                    total_c = timeit(lambda: prefix.generate(ids, audio_embeds, new_tokens), repeat=1)
                row = {
                    "model": name, "prompt": prompt_name, "audio_s": sec, "new_tokens": new_tokens,
                    "a_cached_tok_s": new_tokens / total_a, "b_recompute_tok_s": new_tokens / total_b,
                    "c_prefix_tok_s": new_tokens / total_c, "a_ttft_s": ttft_a, "c_ttft_s": ttft_c,
                    "a_total_s": total_a, "b_total_s": total_b, "c_total_s": total_c,
                    "cached_vs_recompute": total_b / total_a, "lm_seq_a": ids.shape[1], "lm_seq_c": ids.shape[1] + 25 * sec * n_aud,
                }
                rows.append(row)
                print(f"  generation: {name} {prompt_name} {sec}s audio: cached {row['a_cached_tok_s']:.1f} tok/s, "
                      f"recompute {row['b_recompute_tok_s']:.1f}, prefix {row['c_prefix_tok_s']:.1f}", flush=True)
    first = rows[0]["model"]
    icl = [r["cached_vs_recompute"] for r in rows if r["prompt"] == "icl-8shot"]
    short = [r for r in rows if r["model"] == first and r["prompt"] == "short"]
    return {
        "cached_vs_recompute_speedup": min(icl),  # AF's few-shot prompt, 64 new tokens, smallest over model sizes
        "cached_vs_recompute_speedup_short_prompt": min(r["cached_vs_recompute"] for r in rows if r["prompt"] == "short"),
        "a_total_growth": short[-1]["a_total_s"] / short[0]["a_total_s"],
        "c_total_growth": short[-1]["c_total_s"] / short[0]["c_total_s"],
        "audio_seconds": [short[0]["audio_s"], short[-1]["audio_s"]],
        "rows": rows,
        "table": table(rows, ["model", "prompt", "audio_s", "a_cached_tok_s", "b_recompute_tok_s", "c_prefix_tok_s",
                              "a_ttft_s", "c_ttft_s", "cached_vs_recompute", "lm_seq_a", "lm_seq_c"]),
    }
