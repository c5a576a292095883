"""Minimum-Bayes-risk (MBR) choice of an answer: among candidates (the model's greedy or beam answer and N of
its own samples), the one with the highest expected utility against the samples, which stand in for the
model's answer distribution (each sample is a draw from it, so each counts 1/N).

Greedy decoding finds the single likeliest token path; where the model's mass is spread over several
answers that share most of their words (a long caption with an uncertain duration, a mixture with one
uncertain sound), the answer that agrees most with the rest scores better on overlap metrics. The utility
here is word F1 (bags of lowercase words), the metric af-mini's caption scores use; pass another callable
for another metric.

Retrieval-augmented MBR (`mbr_choose` with neighbours; `model.answer(..., mbr_rag=INDEX)`): the answers of the
query's nearest training items (by CLAP audio similarity, the items asked the same kind of question) join the
candidates and the evidence, with total weight `weight` shared by softmax(cosine / temperature) and the samples
sharing 1 - weight. The model then answers with a neighbour's caption when its own samples agree with it, and
with its own answer when they agree with each other; on af-mini (model card) this beats both the model alone and
copying the nearest neighbour's caption.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from typing import Callable

import torch

from audioflamingo.model.generate import GenerationConfig, generate


def words(text: str) -> list[str]:
    """Lowercase runs of letters and digits: 'A dog, barking.' -> ['a', 'dog', 'barking']."""
    return re.findall(r"[a-z0-9]+", text.lower())


def word_f1(pred: str, ref: str) -> float:
    """F1 of the two bags of words (0 when they share none; two empty answers agree: 1)."""
    p, r = Counter(words(pred)), Counter(words(ref))
    if not p and not r:
        return 1.0
    common = sum((p & r).values())
    if not common:
        return 0.0
    prec, rec = common / sum(p.values()), common / sum(r.values())
    return 2 * prec * rec / (prec + rec)


def mbr_select(candidates: list[str], evidence: list[tuple[str, float]],
               utility: Callable[[str, str], float] = word_f1) -> int:
    """Index of the candidate with the highest sum of weight x utility(candidate, evidence text); ties go to the
    earlier candidate (put the greedy answer first). Raises on an empty candidate list."""
    if not candidates:
        raise ValueError("mbr_select needs at least one candidate")
    scores: dict[str, float] = {}
    best, best_u = 0, -float("inf")
    for i, c in enumerate(candidates):
        if c not in scores:
            scores[c] = sum(w * utility(c, e) for e, w in evidence)
        if scores[c] > best_u + 1e-12:
            best, best_u = i, scores[c]
    return best


def mbr_choose(first: str, samples: list[str], neighbours: list[tuple[str, float]] = (), weight: float = 0.0,
               temperature: float = 0.02) -> int:
    """Index into `[first] + samples + [answers of neighbours]` of the MBR answer (neighbours join only when
    weight > 0). first: the greedy/beam answer; samples: the model's samples (each 1/len x (1 - weight) of the
    evidence); neighbours: [(answer, cosine)] of the nearest training items (weight x softmax(cosine / temperature))."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the neighbours' weight must be in [0, 1], got {weight}")
    cands, ev = [first] + list(samples), [(x, (1.0 - weight) / len(samples)) for x in samples] if samples else []
    if weight > 0 and neighbours:
        share = (torch.tensor([c for _, c in neighbours], dtype=torch.float64) / temperature).softmax(-1).tolist()  # (K,)
        cands += [a for a, _ in neighbours]
        ev += [(a, weight * w) for (a, _), w in zip(neighbours, share)]
    return mbr_select(cands, ev)


@torch.no_grad()
def draw_samples(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, audio, cfg: GenerationConfig, stop_ids: set[int],
                 copy_factory: Callable | None = None) -> list[list[list[int]]]:
    """cfg.mbr_samples ancestral samples of each row's answer, all rows x samples in one decoding batch.

    input_ids (B, T) left-padded; audio: the rows' AudioTokens. Sampling uses temperature cfg.mbr_temperature and
    cfg's top_k / top_p, seeded by cfg.seed (0 when None: the same call gives the same samples).
    `copy_factory(rows)`: the CopyMixture for the repeated rows (row indices, each B row n times), if any.
    -> B lists of n token lists.
    """
    n, B = cfg.mbr_samples, input_ids.shape[0]
    idx = torch.arange(B).repeat_interleave(n)  # (B*n,): row b's samples at b*n .. b*n+n-1
    scfg = replace(cfg, do_sample=True, temperature=cfg.mbr_temperature, num_beams=1, mbr_samples=0,
                   seed=0 if cfg.seed is None else cfg.seed)
    copy = copy_factory(idx.tolist()) if copy_factory is not None else None
    flat = generate(model, input_ids[idx.to(input_ids.device)], attention_mask[idx.to(attention_mask.device)],
                    audio.select(idx.to(audio.tokens.device)) if audio is not None else None, scfg, stop_ids, copy=copy)
    return [flat[b * n : (b + 1) * n] for b in range(B)]
