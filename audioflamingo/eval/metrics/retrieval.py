"""Audio <-> text retrieval metrics with several captions per clip, as in the CLAP literature.

Protocol (Mei et al., "audio-text retrieval" tools; LAION-CLAP's `evaluate_clotho_audiocaps`):
- text -> audio: every caption is a query and its one clip is the only relevant item; rank r (1-based)
  of that clip among all clips. R@k = mean over captions of [r <= k]; mAP@10 = mean of 1/r when
  r <= 10, else 0 (average precision with a single relevant item, cut at 10).
- audio -> text: every clip is a query and all of its captions are relevant. R@k = mean over clips
  of [the best-ranked of its captions has rank <= k]. mAP@10 = mean over clips of
  (1/n_rel) * sum over its captions ranked <= 10, taken in rank order i = 1, 2, ..., of i / rank_i,
  with n_rel the clip's number of captions (5 for Clotho and AudioCaps test).
  (LAION-CLAP's code describes this computation but forgets to sort the ranks before dividing,
  which can lower its number; we sort, as its docstring and Mei et al. do.)
Ties in similarity are broken by index order (stable sort), so results are deterministic.
"""

from __future__ import annotations

import numpy as np


def _ranks(sim_row: np.ndarray) -> np.ndarray:
    """rank (1-based) of every candidate for one query; higher similarity ranks first, ties by index."""
    order = np.argsort(-sim_row, kind="stable")
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks


def retrieval_metrics(sim: np.ndarray, text_to_audio: list[int] | np.ndarray, ks=(1, 5, 10)) -> dict[str, float]:
    """Both directions' R@k and mAP@10.

    sim: (n_audio, n_text) similarities (e.g. cosine of L2-normalised CLAP embeddings);
    text_to_audio: (n_text,) index of the clip each caption describes.
    Returns keys 'a2t_R@1', ..., 'a2t_mAP@10', 't2a_R@1', ..., 't2a_mAP@10' (fractions in [0, 1]).
    """
    sim = np.asarray(sim, dtype=np.float64)
    owner = np.asarray(text_to_audio, dtype=np.int64)
    n_audio, n_text = sim.shape
    if owner.shape != (n_text,):
        raise ValueError(f"text_to_audio has {owner.shape[0]} entries but sim has {n_text} text columns")
    if n_text and (owner.min() < 0 or owner.max() >= n_audio):
        raise ValueError(f"text_to_audio must index clips 0..{n_audio - 1}")
    out: dict[str, float] = {}

    # text -> audio: one relevant clip per caption
    t2a = np.array([_ranks(sim[:, j])[owner[j]] for j in range(n_text)])  # (n_text,)
    for k in ks:
        out[f"t2a_R@{k}"] = float(np.mean(t2a <= k)) if n_text else 0.0
    out["t2a_mAP@10"] = float(np.mean(np.where(t2a <= 10, 1.0 / t2a, 0.0))) if n_text else 0.0

    # audio -> text: all captions of the clip are relevant
    best, aps = [], []
    for i in range(n_audio):
        rel = np.flatnonzero(owner == i)
        if len(rel) == 0:
            continue  # a clip without captions cannot be a query
        r = np.sort(_ranks(sim[i])[rel])
        best.append(r[0])
        hit = r[r <= 10]
        aps.append(float(np.sum(np.arange(1, len(hit) + 1) / hit)) / len(rel))
    best = np.array(best)
    for k in ks:
        out[f"a2t_R@{k}"] = float(np.mean(best <= k)) if len(best) else 0.0
    out["a2t_mAP@10"] = float(np.mean(aps)) if aps else 0.0
    return dict(sorted(out.items()))
