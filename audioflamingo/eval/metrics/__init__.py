"""Metrics as pure functions, and the table of text metrics by name.

Every text metric has the signature `metric(preds: list[str], refs: list[list[str]]) ->
(corpus_score, per_item_scores)`. Names (used by `audioflamingo score --metric` and by task
configs): cider_d, bleu_1..bleu_4, rouge_l, meteor, accuracy, macro_f1, wer, cer. Score-based
metrics (multi-label mAP, retrieval) take arrays and live in `classification` / `retrieval`.
"""

from __future__ import annotations

from typing import Callable

from audioflamingo.eval.metrics.asr import cer, wer
from audioflamingo.eval.metrics.caption import MetricUnavailable, bleu, cider_d, meteor, meteor_unavailable_reason, rouge_l
from audioflamingo.eval.metrics.classification import (
    accuracy,
    average_precision,
    macro_f1,
    mean_average_precision,
    multilabel_f1,
    normalize_label,
)
from audioflamingo.eval.metrics.retrieval import retrieval_metrics
from audioflamingo.eval.metrics.text import asr_normalize, coco_tokenize

MetricFn = Callable[[list, list], tuple]


def _bleu_n(n: int) -> MetricFn:
    def fn(preds, refs):
        corpus, per_item = bleu(preds, refs, n=n)
        return corpus[n - 1], [s[n - 1] for s in per_item]

    fn.__name__ = f"bleu_{n}"
    fn.__doc__ = f"Corpus BLEU-{n} (see caption.bleu)."
    return fn


TEXT_METRICS: dict[str, MetricFn] = {
    "cider_d": cider_d,
    "bleu_1": _bleu_n(1),
    "bleu_2": _bleu_n(2),
    "bleu_3": _bleu_n(3),
    "bleu_4": _bleu_n(4),
    "rouge_l": rouge_l,
    "meteor": meteor,
    "accuracy": accuracy,
    "macro_f1": macro_f1,
    "wer": wer,
    "cer": cer,
}

# score-based metrics a task can name (they need per-label scores, not just text)
SCORE_METRICS = ("map", "retrieval")


def get_metric(name: str) -> MetricFn:
    try:
        return TEXT_METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(TEXT_METRICS)}") from None


__all__ = [
    "TEXT_METRICS", "SCORE_METRICS", "get_metric", "MetricUnavailable", "meteor_unavailable_reason",
    "accuracy", "macro_f1", "average_precision", "mean_average_precision", "multilabel_f1",
    "normalize_label", "bleu", "cider_d", "rouge_l", "meteor", "wer", "cer", "retrieval_metrics",
    "coco_tokenize", "asr_normalize",
]
