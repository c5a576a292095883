"""Generation: (a) KV cache + audio K/V computed once, (b) full recompute per token, (c) prefix fusion.

(c) is the design of Qwen2-Audio / AF3: audio enters the LM sequence as 25 tokens per second. It gets
random audio embeddings, so its encoder cost is NOT counted (which favours it). Same LM geometry in all
three. The audio encoding of (a) and (b) (encoder + transformation layers) is timed on its own, so every
row has decoder-only figures (`*_dec_*`: generation from already encoded audio, which is what (c) gets)
and end-to-end figures that add the encoding (`*_e2e_*`). The audio keys/values of the cross-attention
are computed in (a)'s prefill and are part of its decoder time.

`same_tokens` checks that (a) produces (b)'s tokens (transformers < 5.24 silently drops the `cache=` argument).
On CUDA: bf16 autocast, and SDPA without its cuDNN backend (see benchmarks.common.decode_attention).

Every configuration uses positions that reach past 10 min of prefix audio (15,000 tokens): af-mini (GPT-NeoX) and the
Llama-style configurations use rotary positions (no table) with a 32,768 maximum (a GPT-2 position
table would be widened to 32,768 rows, random like all weights here).
"""

from __future__ import annotations

import inspect
import math
import statistics
import time

import torch

from audioflamingo.config import list_presets, load_model_config
from audioflamingo.model.generate import GenerationConfig, generate
from audioflamingo.model.loading import build_model
from audioflamingo.text import encode, icl_text, pad_batch, single_text
from benchmarks.common import autocast, compute_dtype, decode_attention, resolve_device, sync, table, timeit

MAX_POSITIONS = 32768  # > 25 tokens/s x 600 s + the prompt


def _llama(width: int, layers: int, heads: int, ffn: int) -> dict:
    return {"lm.hf_config": {"model_type": "llama", "hidden_size": width, "num_hidden_layers": layers, "num_attention_heads": heads,
                             "num_key_value_heads": heads, "intermediate_size": ffn, "max_position_embeddings": MAX_POSITIONS}}


# the LM sizes compared; af-mini's own geometry when its preset exists
MID = _llama(512, 8, 8, 1536)
STANDIN = _llama(256, 4, 4, 768)
LARGE = _llama(2048, 24, 16, 5504)  # the LM size of AF1 (OPT-IML-1.3B); GPU runs only
ENCODER = {"encoder.width": 128, "encoder.layers": 2, "encoder.heads": 4, "encoder.out_dim": 256, "encoder.tokens_per_window": 1,
           "transform.layers": 2, "transform.heads": 4, "transform.ffn": 512, "transform.dropout": 0.0,
           "xattn.heads": 4, "xattn.head_dim": 64, "xattn.ffn_mult": 2, "lm.tokenizer": "byte",
           "audio.window_seconds": 7.0, "audio.hop_seconds": 1.75, "audio.max_windows": 16}
LARGE_XATTN = {"xattn.heads": 8, "xattn.head_dim": 64, "xattn.ffn_mult": 4, "xattn.every": 2}


def _configs(large: bool = False):
    """(name, ModelConfig) of the compared sizes; `large` adds an AF1-sized LM (for GPU runs)."""
    if "af-mini" in list_presets():
        cfg = load_model_config("af-mini")
        key = "n_positions" if "n_positions" in cfg.lm.hf_config else "max_position_embeddings"  # GPT-2 table / rotary
        cfg.lm.hf_config = {**cfg.lm.hf_config, key: MAX_POSITIONS}  # room for the prefix baseline
        yield "af-mini", cfg
    else:
        yield "mini (width 256, 4 layers)", load_model_config("tiny", {**ENCODER, **STANDIN})
    yield "mid (width 512, 8 layers)", load_model_config("tiny", {**ENCODER, **MID})
    if large:
        yield "large (width 2048, 24 layers)", load_model_config("tiny", {**ENCODER, **LARGE, **LARGE_XATTN})


def _prompts():
    """A plain question, and an AF1-style 8-shot ICL prompt (the shots' audio is not counted here)."""
    short = single_text("Describe the sound in detail.", None)
    shots = [("Classify the sound. OPTIONS: dog, cat, bird, car, rain.", a) for a in ["dog", "rain", "car", "bird"] * 2]
    icl = icl_text(shots, "Classify the sound. OPTIONS: dog, cat, bird, car, rain.", None, n_audios=1)
    return {"short": short, "icl-8shot": icl}


def _median_runs(fn, repeat: int, warmup: int) -> tuple:
    """fn() -> (ttft, total[, tokens]) -> medians of ttft and total over `repeat` runs after `warmup` runs, then
    the rest of the last run."""
    for _ in range(warmup):
        fn()
    runs = [fn() for _ in range(repeat)]
    return (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs), *runs[-1][2:])


def _ours(model, ids, mask, audio, n, use_cache, device) -> tuple[float, float, list[int]]:
    """Generate exactly n tokens from encoded audio (no stop token) -> (time to first token, total seconds, tokens)."""
    first = []

    def mark(_tokens):  # called after each step, once its token is on the host (so GPU work is done)
        if not first:
            first.append(time.perf_counter())

    sync(device)
    t = time.perf_counter()
    out = generate(model, ids, mask, audio, GenerationConfig(max_new_tokens=n, use_cache=use_cache), set(), on_tokens=mark)
    sync(device)
    return first[0] - t, time.perf_counter() - t, out[0]


class PrefixLM:
    """The prefix-fusion baseline: audio embeddings (25 per second) prepended to the text embeddings."""

    def __init__(self, lm):
        self.lm = lm
        # transformers 5.x renamed past_key_values to cache; unknown names would vanish into **kwargs
        self.cache_arg = "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"

    def _step(self, cache, **inputs):
        out = self.lm(**inputs, **{self.cache_arg: cache}, use_cache=True)
        return out.logits[:, -1].argmax(-1), (out.cache if "cache" in out else out.past_key_values)  # (B,)

    @torch.no_grad()
    def generate(self, ids, audio_embeds, n, device) -> tuple[float, float]:
        """Greedy n tokens -> (time to first token, total) seconds."""
        sync(device)
        t = time.perf_counter()
        emb = torch.cat([audio_embeds, self.lm.get_input_embeddings()(ids)], 1)  # (B, A*25*s + T, D)
        tok, cache = self._step(None, inputs_embeds=emb)
        tok.tolist()  # the first token on the host (waits for the GPU, as a server would)
        ttft = time.perf_counter()
        for _ in range(n - 1):
            tok, cache = self._step(cache, input_ids=tok[:, None])
        tok.tolist()
        return ttft - t, time.perf_counter() - t


def _row(name, prompt_name, sec, model, prefix, ids, mask, clips, device, new_tokens, long) -> dict:
    D = model.lm.get_input_embeddings().weight.shape[1]
    n_aud = len(clips)
    rep, warm = (1, 0) if long else (3, 1)  # long audio: one run each (the prefill of (c) alone takes seconds)
    with torch.no_grad(), autocast(device), decode_attention(device):
        enc = timeit(lambda: model.encode_audio([clips]), repeat=rep, warmup=1, device=device)
        audio = model.encode_audio([clips])
        a_ttft, a_total, a_tokens = _median_runs(lambda: _ours(model, ids, mask, audio, new_tokens, True, device), 3, 1)
        _ours(model, ids, mask, audio, 2, False, device)  # warm-up of (b)'s path: 2 tokens
        _, b_total, b_tokens = _ours(model, ids, mask, audio, new_tokens, False, device)
        embeds = torch.randn(1, 25 * sec * n_aud, D, device=device) * 0.02  # (1, A*25*s, D)
        if long:
            prefix.generate(ids, embeds[:, :1000], 2, device)  # warm-up at a smaller size
        c_ttft, c_total = _median_runs(lambda: prefix.generate(ids, embeds, new_tokens, device), rep, warm)
    return {
        "model": name, "prompt": prompt_name, "audio_s": sec, "new_tokens": new_tokens, "encode_s": enc,
        "a_dec_tok_s": new_tokens / a_total, "a_e2e_tok_s": new_tokens / (a_total + enc),
        "b_dec_tok_s": new_tokens / b_total, "b_e2e_tok_s": new_tokens / (b_total + enc),
        "c_dec_tok_s": new_tokens / c_total,
        "a_dec_ttft_s": a_ttft, "a_e2e_ttft_s": a_ttft + enc, "c_dec_ttft_s": c_ttft,
        "a_dec_total_s": a_total, "b_dec_total_s": b_total, "c_dec_total_s": c_total,
        "cached_vs_recompute": (b_total + enc) / (a_total + enc), "cached_vs_recompute_dec": b_total / a_total,
        "lm_seq_a": ids.shape[1], "lm_seq_c": ids.shape[1] + 25 * sec * n_aud, "audio_tokens": int((audio.audio_index >= 0).sum()),
        # (a) must produce (b)'s tokens; < 1 means the KV cache is not used right (or, under bf16, near-ties flipped)
        "same_tokens": sum(x == y for x, y in zip(a_tokens, b_tokens)) / max(len(b_tokens), 1),
    }  # fmt: skip


COLUMNS = ["model", "prompt", "audio_s", "encode_s", "a_dec_tok_s", "a_e2e_tok_s", "b_dec_tok_s", "b_e2e_tok_s", "c_dec_tok_s",
           "a_dec_ttft_s", "a_e2e_ttft_s", "c_dec_ttft_s", "cached_vs_recompute", "lm_seq_a", "audio_tokens", "lm_seq_c", "same_tokens"]


def _interleaved(name, model, ids, mask, clips_by_seconds, device, new_tokens, rounds=5) -> dict:
    """(a)'s decoder time at the shortest and longest audio, measured alternately (short, long, short, ...)
    so that a shared machine's changing load falls on both alike -> medians and their ratio."""
    with torch.no_grad(), autocast(device), decode_attention(device):
        audios = {sec: model.encode_audio([clips]) for sec, clips in clips_by_seconds.items()}
        times = {sec: [] for sec in audios}
        for sec, audio in audios.items():  # warm-up
            _ours(model, ids, mask, audio, new_tokens, True, device)
        for _ in range(rounds):
            for sec, audio in audios.items():
                times[sec].append(_ours(model, ids, mask, audio, new_tokens, True, device)[1])
    (lo, t_lo), (hi, t_hi) = [(sec, statistics.median(v)) for sec, v in sorted(times.items())]
    return {"model": name, "rounds": rounds, "short_audio_s": lo, "long_audio_s": hi, "a_dec_total_s_short": t_lo,
            "a_dec_total_s_long": t_hi, "long_over_short": t_hi / t_lo}


def run(quick: bool = True, device=None, new_tokens: int = 64) -> dict:
    device = resolve_device(device)
    seconds_list = [5, 30] if quick else [5, 30, 120, 600]
    rows, flat = [], []
    for name, cfg in _configs(large=device.type == "cuda" and not quick):
        cfg.audio.max_windows = 1 + math.ceil((max(seconds_list) - cfg.audio.window_seconds) / cfg.audio.hop_seconds)
        model = build_model(cfg).eval().to(device)
        prefix = PrefixLM(model.lm)
        for prompt_name, text in _prompts().items():
            ends = {}  # shortest and longest audio's clips, for the interleaved check of (a)'s flatness
            ids, _ = encode(model.tokenizer, text)
            ids, mask = pad_batch([ids], model.media.pad)  # (1, T)
            ids, mask = ids.to(device), mask.to(device)
            for sec in seconds_list:
                if prompt_name != "short" and sec != seconds_list[0]:
                    continue  # the ICL prompt is measured at the shortest audio only
                rate = cfg.audio.sample_rate
                clips = [model.load_clip((torch.randn(int(sec * rate)).numpy() * 0.1, rate)) for _ in range(text.count("<audio>"))]
                rows.append(_row(name, prompt_name, sec, model, prefix, ids, mask, clips, device, new_tokens, sec >= 120))
                r = rows[-1]
                print(f"  generation: {name} {prompt_name} {sec}s audio: encode {r['encode_s']:.2f}s; decoder-only tok/s: "
                      f"cached {r['a_dec_tok_s']:.1f}, recompute {r['b_dec_tok_s']:.1f}, prefix {r['c_dec_tok_s']:.1f}", flush=True)
                if prompt_name == "short" and sec in (seconds_list[0], seconds_list[-1]):
                    ends[sec] = clips
            if prompt_name == "short":
                flat.append(_interleaved(name, model, ids, mask, ends, device, new_tokens))
                print(f"  generation: {name}: (a) decoder, interleaved: {flat[-1]['long_audio_s']} s audio costs "
                      f"{flat[-1]['long_over_short']:.2f}x {flat[-1]['short_audio_s']} s", flush=True)
        del model, prefix
        if device.type == "cuda":
            torch.cuda.empty_cache()
    first = rows[0]["model"]
    icl = [r["cached_vs_recompute"] for r in rows if r["prompt"] == "icl-8shot"]
    short = [r for r in rows if r["model"] == first and r["prompt"] == "short"]
    growth = lambda key: short[-1][key] / short[0][key]  # noqa: E731  longest vs shortest audio, first model
    return {
        "cached_vs_recompute_speedup": min(icl),  # AF's few-shot prompt, 64 new tokens, end to end, smallest over sizes
        "cached_vs_recompute_speedup_short_prompt": min(r["cached_vs_recompute"] for r in rows if r["prompt"] == "short"),
        "a_dec_total_growth": growth("a_dec_total_s"),
        "a_e2e_total_growth": (short[-1]["a_dec_total_s"] + short[-1]["encode_s"]) / (short[0]["a_dec_total_s"] + short[0]["encode_s"]),
        "c_dec_total_growth": growth("c_dec_total_s"),
        "audio_seconds": [short[0]["audio_s"], short[-1]["audio_s"]],
        "dtype": compute_dtype(device),
        "same_tokens_min": min(r["same_tokens"] for r in rows),
        "a_dec_interleaved_growth": flat[0]["long_over_short"],  # first model, longest vs shortest audio
        "rows": rows,
        "flatness": flat,
        "table": table(rows, COLUMNS) + "\n\n(a)'s decoder time, shortest vs longest audio measured alternately "
                 f"({flat[0]['rounds']} rounds each, medians):\n\n" + table(flat),
    }
