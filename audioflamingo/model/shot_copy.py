"""Copying from in-context examples: the LM mixed with the examples' own answers, weighted by audio similarity.

A small LM trained from scratch does not learn to copy a label from its in-context examples (the negative
results in docs/results/fewshot-heldout-af-mini.md), so a label it never saw in training is out of its
reach however good the retrieved examples are. This component supplies the copy explicitly, in the manner
of kNN-LM (Khandelwal et al. 2020) and pointer mixtures (Merity et al. 2017), with the k examples of the
prompt as the neighbours. For a query q with examples (s_i, a_i), the probability of an answer y is

    p(y) = (1 - λ) · p_LM(y | prompt) + λ · Σ_i w_i · [y = a_i],      w = softmax_i(cos(e(q), e(s_i)) / τ)

where e() is the model's CLAP audio embedding (the one retrieval uses), λ = `ShotCopyConfig.weight` and
τ = `ShotCopyConfig.temperature`. Ranking options uses it directly; generation uses its exact token-level
factorisation (`CopyMixture`), so the product of the per-token probabilities of a generated answer is p(y).
With no examples, or λ = 0, the model is the plain LM.
"""

from __future__ import annotations

import math

import torch


def shot_weights(embedding: torch.Tensor, n_shots: list[int], n_query: list[int], temperature: float) -> list[torch.Tensor]:
    """embedding (B, A, E) unit rows, shots first then the query's audios -> per sample (K_b,) weights summing to 1.

    The query's direction is the mean of its audios' embeddings (one audio: that audio's embedding).
    """
    out = []
    for b, (k, nq) in enumerate(zip(n_shots, n_query)):
        if k == 0:
            out.append(embedding.new_zeros(0))
            continue
        q = torch.nn.functional.normalize(embedding[b, k : k + nq].float().mean(0), dim=-1)  # (E,)
        sims = embedding[b, :k].float() @ q  # (K,) cosine similarities
        out.append((sims / temperature).softmax(-1))  # (K,)
    return out


def answer_spans(ids: list[int], sep: int, eoc: int) -> list[tuple[int, ...]]:
    """Token ids of one prompt -> the answers it already holds: the tokens after each <SEP> through its
    <|endofchunk|> (inclusive). The query's answer is still open, so it is not among them."""
    spans, start = [], None
    for i, tok in enumerate(ids):
        if tok == sep:
            start = i + 1
        elif tok == eoc and start is not None:
            spans.append(tuple(ids[start : i + 1]))
            start = None
    return spans


def mix_sequence(lm_logp: torch.Tensor, answers: list[tuple[int, ...]], option: tuple[int, ...],
                 weights: torch.Tensor, weight: float) -> torch.Tensor:
    """Sequence level: log[(1 - λ) p_LM(option) + λ Σ_{i: a_i = option} w_i] from log p_LM(option) (a scalar tensor)."""
    if weight <= 0 or not answers:
        return lm_logp
    mass = sum(float(w) for a, w in zip(answers, weights.tolist()) if a == option)
    lm_part = lm_logp + math.log1p(-weight)
    if mass <= 0:
        return lm_part
    return torch.logaddexp(lm_part, lm_part.new_tensor(math.log(weight) + math.log(mass)))


class CopyMixture:
    """The token-level factorisation of the mixture above, for decoding (greedy, sampling, beam search).

    Per row it tracks log p_LM of the answer so far and which examples' answers it still agrees with:

        p(v | y_<t) = [(1 - λ) p_LM(y_<t) p_LM(v | y_<t) + λ Σ_{i: a_i[:t+1] = y_<t v} w_i]
                      / [(1 - λ) p_LM(y_<t) + λ Σ_{i: a_i[:t] = y_<t} w_i]

    answers[r]: the examples' answers of row r as token tuples ending with <|endofchunk|>; weights[r]: (K_r,).
    """

    def __init__(self, answers: list[list[tuple[int, ...]]], weights: list[torch.Tensor], weight: float):
        if not 0 <= weight < 1:
            raise ValueError(f"shot_copy.weight must be in [0, 1), got {weight}")
        self.answers = [list(a) for a in answers]
        self.weights = [w.tolist() for w in weights]
        self.log_keep = math.log1p(-weight)
        self.log_weight = math.log(weight) if weight > 0 else -math.inf
        self.lm_so_far = [0.0] * len(answers)  # log p_LM(y_<t) per row
        self.so_far: list[list[int]] = [[] for _ in answers]  # y_<t per row
        self._last: torch.Tensor | None = None  # (R, V) the LM log-probs of the current step

    @classmethod
    def from_prompts(cls, prompts: list[list[int]], weights: list[torch.Tensor], weight: float, sep: int, eoc: int) -> "CopyMixture":
        """Rows from their prompts' token ids (answer_spans) and (K_r,) example weights; a prompt without exactly one
        answer span per example (another template) copies nothing rather than pair answers with the wrong weights."""
        held = [answer_spans(list(p), sep, eoc) for p in prompts]
        return cls([h if len(h) == len(w) else [] for h, w in zip(held, weights)], weights, weight)

    @property
    def active(self) -> bool:
        return self.log_weight > -math.inf and any(self.answers)

    def mix(self, logits: torch.Tensor) -> torch.Tensor:
        """(R, V) LM logits of the next token -> (R, V) log-probs of the mixture (rows without examples: the LM's)."""
        lm = logits.float().log_softmax(-1)  # (R, V)
        self._last = lm
        out = lm.clone()
        for r, (answers, ws) in enumerate(zip(self.answers, self.weights)):
            if not answers:
                continue
            t, prefix = len(self.so_far[r]), self.so_far[r]
            next_mass: dict[int, float] = {}
            for a, w in zip(answers, ws):
                if len(a) > t and list(a[:t]) == prefix:
                    next_mass[a[t]] = next_mass.get(a[t], 0.0) + w
            lm_part = self.log_keep + self.lm_so_far[r]
            total = sum(next_mass.values())
            den = lm_part if total <= 0 else float(torch.logaddexp(torch.tensor(lm_part), torch.tensor(self.log_weight + math.log(total))))
            row = lm[r] + lm_part  # (V,)
            if next_mass:
                toks = torch.tensor(list(next_mass), dtype=torch.long, device=row.device)
                copy = torch.tensor([self.log_weight + math.log(m) for m in next_mass.values()], device=row.device)
                row[toks] = torch.logaddexp(row[toks], copy)
            out[r] = row - den
        return out

    def advance(self, tokens: torch.Tensor, done: torch.Tensor | None = None) -> None:
        """tokens (R,): the tokens chosen after the last `mix`; rows marked `done` are left as they are."""
        for r, tok in enumerate(tokens.tolist()):
            if done is not None and bool(done[r]):
                continue
            self.lm_so_far[r] += float(self._last[r, tok])
            self.so_far[r].append(tok)

    def reorder(self, idx: torch.Tensor) -> None:
        """Keep rows `idx` (beam search), as FlamingoCache.reorder."""
        idx = idx.tolist()
        self.answers = [self.answers[i] for i in idx]
        self.weights = [self.weights[i] for i in idx]
        self.lm_so_far = [self.lm_so_far[i] for i in idx]
        self.so_far = [list(self.so_far[i]) for i in idx]
        if self._last is not None:
            self._last = self._last[idx]

    def repeat_interleave(self, n: int) -> "CopyMixture":
        """Each row n times (the beams of a sample)."""
        self.reorder(torch.arange(len(self.answers)).repeat_interleave(n))
        return self
