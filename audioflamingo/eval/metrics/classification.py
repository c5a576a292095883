"""Classification and tagging metrics: accuracy, macro-F1, multi-label mAP and F1.

Labels are compared after `normalize_label` (lowercase, `_` -> space, outer punctuation stripped,
whitespace collapsed), so "Dog_bark." and "dog bark" are the same class.
"""

from __future__ import annotations

import re

import numpy as np


def normalize_label(text: str) -> str:
    """'  Dog_Bark. ' -> 'dog bark' (the one label normaliser used by every classification metric)."""
    text = text.strip().lower().replace("_", " ")
    text = re.sub(r"\s+", " ", text)
    return text.strip(" .,;:!?\"'`")


def accuracy(preds: list[str], refs: list[list[str]]) -> tuple[float, list[float]]:
    """Fraction of items whose normalised prediction equals any of its normalised references."""
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} reference lists")
    per_item = [float(normalize_label(p) in {normalize_label(r) for r in rs}) for p, rs in zip(preds, refs)]
    return (float(np.mean(per_item)) if per_item else 0.0), per_item


def macro_f1(preds: list[str], refs: list[list[str]]) -> tuple[float, list[float]]:
    """Unweighted mean over classes of F1 (single-label; the gold label is each item's first reference).

    Classes are the union of gold and predicted labels (as scikit-learn's f1_score(average="macro")),
    so a wrong free-text answer counts as a false positive of a class with no support: it lowers the
    mean. A class with no true positive has F1 = 0. The per-item list is per-item correctness.
    """
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} reference lists")
    gold = [normalize_label(rs[0]) for rs in refs]
    pred = [normalize_label(p) for p in preds]
    f1s = []
    for c in sorted(set(gold) | set(pred)):
        tp = sum(g == c and p == c for g, p in zip(gold, pred))
        fp = sum(g != c and p == c for g, p in zip(gold, pred))
        fn = sum(g == c and p != c for g, p in zip(gold, pred))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return (float(np.mean(f1s)) if f1s else 0.0), [float(g == p) for g, p in zip(gold, pred)]


def average_precision(scores: np.ndarray, target: np.ndarray) -> float:
    """AP of one class: sum over distinct score thresholds (descending) of (R_k - R_{k-1}) * P_k.

    Same definition as scikit-learn's average_precision_score (tied scores form one threshold).
    Returns NaN when the class has no positive.
    """
    scores = np.asarray(scores, dtype=np.float64)  # (N,)
    target = np.asarray(target).astype(bool)  # (N,)
    n_pos = int(target.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], target[order]
    tp = np.cumsum(t)
    last_of_tie = np.r_[np.diff(s) != 0, True]  # index where each threshold's group ends
    tp, k = tp[last_of_tie], np.flatnonzero(last_of_tie) + 1
    precision, recall = tp / k, tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Multi-label mAP: mean AP over classes that have at least one positive. scores, targets: (N, C)."""
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must both be (items, classes)")
    aps = [average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])]
    aps = [a for a in aps if not np.isnan(a)]
    return float(np.mean(aps)) if aps else 0.0


def multilabel_f1(pred_sets: list[set[str]], gold_sets: list[set[str]], average: str = "micro") -> float:
    """F1 of predicted label sets against gold label sets ('micro': pooled counts; 'macro': mean over
    the labels that occur in gold or prediction). Labels are normalised with `normalize_label`."""
    if len(pred_sets) != len(gold_sets):
        raise ValueError(f"{len(pred_sets)} predictions but {len(gold_sets)} gold label sets")
    pred_sets = [{normalize_label(x) for x in s} for s in pred_sets]
    gold_sets = [{normalize_label(x) for x in s} for s in gold_sets]
    if average == "micro":
        tp = sum(len(p & g) for p, g in zip(pred_sets, gold_sets))
        fp = sum(len(p - g) for p, g in zip(pred_sets, gold_sets))
        fn = sum(len(g - p) for p, g in zip(pred_sets, gold_sets))
        return 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    if average == "macro":
        labels = set().union(*pred_sets, *gold_sets) if pred_sets else set()
        f1s = []
        for c in sorted(labels):
            tp = sum(c in p and c in g for p, g in zip(pred_sets, gold_sets))
            fp = sum(c in p and c not in g for p, g in zip(pred_sets, gold_sets))
            fn = sum(c not in p and c in g for p, g in zip(pred_sets, gold_sets))
            f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
        return float(np.mean(f1s)) if f1s else 0.0
    raise ValueError(f"average must be 'micro' or 'macro', got {average!r}")
