"""Decoding: greedy, sampling (temperature, top-k, top-p) and beam search, with or without a KV cache.

With a cache, the prompt is run once (prefill) and each new token costs one position; the audio's
cross-attention keys/values are computed in the prefill and reused. Without a cache (`use_cache=False`),
the whole sequence is recomputed every step: the reference the cached path must equal token for token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from audioflamingo.model.cache import AudioTokens, FlamingoCache
from audioflamingo.model.shot_copy import CopyMixture


@dataclass
class GenerationConfig:
    max_new_tokens: int = 128  # af-mini's longest corpus answers are ~100 tokens; generation ends at <|endofchunk|> anyway
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0
    num_beams: int = 1
    length_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)  # stop strings (the answer is cut before them)
    seed: int | None = None
    use_cache: bool = True
    # minimum Bayes risk (model/mbr.py): > 0 = also draw this many samples (temperature mbr_temperature, the top_k /
    # top_p above) and answer with the candidate (the greedy/beam answer or a sample) of the highest expected word
    # F1 against the samples. Costs ~N more decodes; af-mini's test captions +0.008 (short) / +0.009 (long) word F1
    # over greedy (model card).
    mbr_samples: int = 0
    mbr_temperature: float = 1.0
    # with `answer(..., mbr_rag=INDEX)`: the answers of the mbr_neighbours nearest index items join the candidates and
    # the evidence with total weight mbr_neighbour_weight (softmax of cosine / mbr_neighbour_temperature); 0.3 and
    # 0.02 chosen on af-mini's val split (model card)
    mbr_neighbours: int = 8
    mbr_neighbour_weight: float = 0.3
    mbr_neighbour_temperature: float = 0.02

    @classmethod
    def preset(cls, name: str, **overrides) -> "GenerationConfig":
        """'greedy'; 'beam' (AF1 benchmarks: beam 3, 128 tokens); 'sample' (AF1 demos: top-k 30, top-p 0.95);
        'mbr' (greedy + 16 samples at temperature 1, the answer of the highest expected word F1)."""
        presets = {
            "greedy": {},
            "beam": {"num_beams": 3, "max_new_tokens": 128},
            "sample": {"do_sample": True, "top_k": 30, "top_p": 0.95, "temperature": 0.7, "max_new_tokens": 128},
            "mbr": {"mbr_samples": 16, "mbr_temperature": 1.0, "max_new_tokens": 128},
        }
        if name not in presets:
            raise ValueError(f"generation preset {name!r} unknown; choose from {sorted(presets)}")
        return cls(**{**presets[name], **overrides})


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """(B, V) -> (B, V) with -inf outside the top-k / nucleus."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)  # (B, V)
        probs = sorted_logits.softmax(-1).cumsum(-1)  # (B, V)
        drop = probs - sorted_logits.softmax(-1) > top_p  # keep the smallest set reaching top_p
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return logits


class _Stepper:
    """Runs the model one step at a time, with a cache or by full recomputation."""

    def __init__(self, model, input_ids, attention_mask, audio, use_cache, cache=None):
        self.model, self.audio, self.use_cache = model, audio, use_cache or cache is not None
        self.ids, self.mask = input_ids, attention_mask  # (B, T) all tokens so far
        self.cache = cache if cache is not None else (FlamingoCache() if use_cache else None)

    def first(self) -> torch.Tensor:
        logits, _ = self.model(self.ids, self.mask, self.audio, cache=self.cache)
        return logits[:, -1].float()  # (B, V)

    def next(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B,) -> next-token logits (B, V)."""
        new_mask = torch.ones_like(tokens)[:, None]  # (B, 1)
        self.ids = torch.cat([self.ids, tokens[:, None]], 1)  # (B, T+1)
        self.mask = torch.cat([self.mask, new_mask], 1)  # (B, T+1)
        if self.use_cache:
            logits, _ = self.model(tokens[:, None], new_mask, self.audio, cache=self.cache)
        else:
            logits, _ = self.model(self.ids, self.mask, self.audio)
        return logits[:, -1].float()  # (B, V)

    def reorder(self, idx: torch.Tensor) -> None:
        self.ids, self.mask = self.ids[idx], self.mask[idx]
        self.audio = self.audio.select(idx) if self.audio is not None else None
        if self.cache is not None:
            self.cache.reorder(idx)


@torch.no_grad()
def generate(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    audio: AudioTokens | None,
    cfg: GenerationConfig,
    stop_ids: set[int],
    on_tokens: Callable[[list[int | None]], None] | None = None,
    cache: FlamingoCache | None = None,
    copy: CopyMixture | None = None,
) -> list[list[int]]:
    """input_ids (B, T) left-padded -> B lists of new token ids (stop tokens excluded).

    `on_tokens` is called after every step with the new token of each sample (None once finished).
    `cache`: continue from an existing cache (a chat session): input_ids are then the new tokens only,
    and the cache is updated in place. `copy`: decode the mixture of the LM with the in-context examples'
    answers (model/shot_copy.py) instead of the LM alone.
    """
    if cfg.mbr_samples > 0:
        raise ValueError("mbr_samples: minimum-Bayes-risk decoding is done by model.answer / model.ask (model/mbr.py), "
                         "not by this loop or the paths built on it (chat, the server, af1_chat); pass mbr_samples=0 here")
    if copy is not None and not copy.active:
        copy = None
    if cfg.num_beams > 1:
        if cache is not None:
            raise ValueError("beam search cannot continue an existing cache; use greedy or sampling")
        return _beam_search(model, input_ids, attention_mask, audio, cfg, stop_ids, copy)
    B = input_ids.shape[0]
    gen = None
    if cfg.do_sample:
        gen = torch.Generator(device=input_ids.device)
        gen.manual_seed(cfg.seed if cfg.seed is not None else torch.seed())
    step = _Stepper(model, input_ids, attention_mask, audio, cfg.use_cache, cache)
    logits = step.first()
    out: list[list[int]] = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    for t in range(cfg.max_new_tokens):
        if copy is not None:
            logits = copy.mix(logits)  # (B, V) log-probs of the mixture
        if cfg.do_sample:
            probs = filter_logits(logits / max(cfg.temperature, 1e-5), cfg.top_k, cfg.top_p).softmax(-1)  # (B, V)
            tokens = torch.multinomial(probs, 1, generator=gen)[:, 0]  # (B,)
        else:
            tokens = logits.argmax(-1)  # (B,)
        fresh = []
        for b in range(B):
            if done[b]:
                fresh.append(None)
                continue
            tok = int(tokens[b])
            if tok in stop_ids:
                done[b] = True
                fresh.append(None)
            else:
                out[b].append(tok)
                fresh.append(tok)
                if cfg.stop and _hit_stop(model.tokenizer, out[b], cfg.stop):
                    done[b] = True
        if copy is not None:
            copy.advance(tokens, done)
        if on_tokens is not None:
            on_tokens(fresh)
        if bool(done.all()) or t == cfg.max_new_tokens - 1:
            break
        pad = model.media.pad if model.media is not None else 0
        logits = step.next(torch.where(done, torch.full_like(tokens, pad), tokens))
    return out


def _step_logp(logits: torch.Tensor, copy) -> torch.Tensor:
    """(R, V) logits -> (R, V) next-token log-probs: the LM's, or the mixture with the examples' answers."""
    return copy.mix(logits) if copy is not None else logits.log_softmax(-1)


def _hit_stop(tokenizer, ids: list[int], stops: list[str]) -> bool:
    tail = tokenizer.decode(ids[-32:], skip_special_tokens=True)
    return any(s in tail for s in stops)


def _beam_search(model, input_ids, attention_mask, audio, cfg, stop_ids, copy=None) -> list[list[int]]:
    """Standard beam search with length-normalised finished hypotheses; K = cfg.num_beams per sample."""
    B, K = input_ids.shape[0], cfg.num_beams
    rep = lambda x: x.repeat_interleave(K, 0)  # noqa: E731  (B, ...) -> (B*K, ...)
    step = _Stepper(model, rep(input_ids), rep(attention_mask), audio.repeat_interleave(K) if audio is not None else None, cfg.use_cache)
    copy = copy.repeat_interleave(K) if copy is not None else None
    logp = _step_logp(step.first(), copy)  # (B*K, V)
    V = logp.shape[-1]
    scores = torch.full((B, K), float("-inf"), device=logp.device)
    scores[:, 0] = 0.0  # all beams start identical: only the first may expand at step 0
    seqs: list[list[int]] = [[] for _ in range(B * K)]
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    for t in range(cfg.max_new_tokens):
        cand = (scores.view(-1, 1) + logp).view(B, K * V)  # (B, K*V)
        top, idx = cand.topk(2 * K, dim=-1)  # (B, 2K)
        new_scores = torch.full((B, K), float("-inf"), device=logp.device)
        src = torch.zeros(B, K, dtype=torch.long, device=logp.device)
        tok = torch.zeros(B, K, dtype=torch.long, device=logp.device)
        new_seqs = [[] for _ in range(B * K)]
        for b in range(B):
            n = 0
            for s, i in zip(top[b].tolist(), idx[b].tolist()):
                if s == float("-inf") or n == K:
                    break
                beam, token = divmod(i, V)
                seq = seqs[b * K + beam]
                if token in stop_ids:
                    finished[b].append((s / max(len(seq), 1) ** cfg.length_penalty, seq))
                    continue
                new_scores[b, n], src[b, n], tok[b, n] = s, b * K + beam, token
                new_seqs[b * K + n] = seq + [token]
                n += 1
        seqs, scores = new_seqs, new_scores
        # stop a sample once K hypotheses finished and no live beam can beat the best of them
        if all(len(f) >= K for f in finished) or t == cfg.max_new_tokens - 1:
            break
        step.reorder(src.view(-1))
        pad = model.media.pad if model.media is not None else 0
        tokens = torch.where(torch.isinf(scores.view(-1)), torch.full_like(tok.view(-1), pad), tok.view(-1))
        if copy is not None:
            copy.reorder(src.view(-1))
            copy.advance(tokens, torch.isinf(scores.view(-1)))
        logp = _step_logp(step.next(tokens), copy)  # (B*K, V)
    result = []
    for b in range(B):
        live = [(float(scores[b, k]) / max(len(seqs[b * K + k]), 1) ** cfg.length_penalty, seqs[b * K + k]) for k in range(K) if torch.isfinite(scores[b, k])]
        pool = finished[b] or live
        result.append(max(pool, key=lambda x: x[0])[1] if pool else [])
    return result
