"""Word and character error rates, corpus level, on `asr_normalize`d text.

WER = (S + D + I) summed over the corpus / number of reference words summed over the corpus
(not the mean of per-utterance rates, which over-weights short utterances). CER is the same over
characters of the normalised text, single spaces between words included. When an item has several
references the first one is used. When every reference is empty after normalisation the rate is
0.0 if the hypotheses are empty too, and undefined (ValueError) otherwise.
"""

from __future__ import annotations

from audioflamingo.eval.metrics.text import asr_normalize


def edit_distance(ref: list, hyp: list) -> int:
    """Levenshtein distance (substitution, deletion, insertion all cost 1)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


def _error_rate(preds, refs, split) -> tuple[float, list[float]]:
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} reference lists")
    errors = total = 0
    per_item = []
    for p, rs in zip(preds, refs):
        r_units, p_units = split(asr_normalize(rs[0])), split(asr_normalize(p))
        e = edit_distance(r_units, p_units)
        errors += e
        total += len(r_units)
        per_item.append(e / len(r_units) if r_units else float(e > 0))
    if total == 0:
        if errors:
            raise ValueError("error rate undefined: every reference is empty after normalisation")
        return 0.0, per_item
    return errors / total, per_item


def wer(preds: list[str], refs: list[list[str]]) -> tuple[float, list[float]]:
    """Corpus word error rate and per-item rates."""
    return _error_rate(preds, refs, str.split)


def cer(preds: list[str], refs: list[list[str]]) -> tuple[float, list[float]]:
    """Corpus character error rate (spaces count) and per-item rates."""
    return _error_rate(preds, refs, list)
