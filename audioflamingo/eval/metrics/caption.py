"""Caption metrics: BLEU-1..4, ROUGE-L, CIDEr-D (pure Python) and METEOR (the METEOR 1.5 jar).

All take `preds: list[str]` (one hypothesis per item) and `refs: list[list[str]]` (one or more
references per item) and, unless `tokenize=False`, first run `coco_tokenize` on every string, so
the numbers are the ones `pycocoevalcap` reports (a test checks equality with its scorers).
Each returns `(corpus_score, per_item_scores)`. Definitions, as in pycocoevalcap:

BLEU-n (Papineni et al. 2002), corpus level: clipped n-gram matches and hypothesis n-gram counts
are summed over the corpus; p_k = (matches_k + 1e-15) / (count_k + 1e-9) (pycocoevalcap's
smoothing, which makes an empty match count give ~0 rather than a crash); BLEU-n is the geometric
mean of p_1..p_n times the brevity penalty exp(1 - r/c) when c < r, where c is the total hypothesis
length and r the sum over items of the reference length closest to the hypothesis length (ties go to
the shorter reference).

ROUGE-L (Lin 2004) per item: LCS length against each reference, P = max_r LCS/|hyp|,
R = max_r LCS/|ref| (maxima taken separately), F = (1 + b^2) P R / (R + b^2 P), b = 1.2; the
corpus score is the mean over items.

CIDEr-D (Vedantam et al. 2015), as pycocoevalcap's `Cider`: TF-IDF vectors of 1..4-grams, where
document frequency counts the items whose references contain the n-gram and IDF = log(N_items) -
log(max(1, df)) over the scored corpus itself; for each n the hypothesis vector's entries are clipped
to the reference's, the cosine is multiplied by exp(-(l_h - l_r)^2 / (2 * 6^2)), averaged over n and
over references, times 10. Faithful quirk: the "length" l in the penalty is pycocoevalcap's, the
number of bigrams (words - 1), not words. Because IDF comes from the corpus being scored, a
corpus-level CIDEr-D is not the mean of CIDEr-D on subsets.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np

from audioflamingo.eval.metrics.text import coco_tokenize


class MetricUnavailable(RuntimeError):
    """A metric needs something that is not installed (Java, a jar)."""


def _check(preds: list[str], refs: list[list[str]]) -> None:
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} reference lists")
    for i, r in enumerate(refs):
        if not r:
            raise ValueError(f"item {i} has no reference")


def _prepare(preds, refs, tokenize):
    _check(preds, refs)
    if tokenize:
        preds = [coco_tokenize(p) for p in preds]
        refs = [[coco_tokenize(r) for r in rs] for rs in refs]
    return [p.split() for p in preds], [[r.split() for r in rs] for rs in refs]


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


# ----------------------------------------------------------------------------------------------------
# BLEU


def bleu(preds: list[str], refs: list[list[str]], n: int = 4, tokenize: bool = True):
    """Corpus BLEU-1..n (a list of n floats) and per-item BLEU-1..n (list of lists)."""
    hyps, refss = _prepare(preds, refs, tokenize)
    tiny, small = 1e-15, 1e-9
    total_match, total_guess = [0] * n, [0] * n
    total_hyp_len = total_ref_len = 0
    per_item = []
    for hyp, rs in zip(hyps, refss):
        c = len(hyp)
        r = min((abs(len(ref) - c), len(ref)) for ref in rs)[1]  # closest reference length
        match, guess = [], []
        for k in range(1, n + 1):
            max_ref = Counter()
            for ref in rs:
                max_ref |= _ngrams(ref, k)  # elementwise max of counts = clipping bound
            hyp_ngrams = _ngrams(hyp, k)
            match.append(sum(min(cnt, max_ref[g]) for g, cnt in hyp_ngrams.items()))
            guess.append(max(0, c - k + 1))
        per_item.append(_bleu_from_counts(match, guess, c, r, tiny, small))
        total_hyp_len += c
        total_ref_len += r
        total_match = [a + b for a, b in zip(total_match, match)]
        total_guess = [a + b for a, b in zip(total_guess, guess)]
    corpus = _bleu_from_counts(total_match, total_guess, total_hyp_len, total_ref_len, tiny, small)
    return corpus, per_item


def _bleu_from_counts(match, guess, hyp_len, ref_len, tiny, small) -> list[float]:
    scores, prod = [], 1.0
    for k, (m, g) in enumerate(zip(match, guess)):
        prod *= (m + tiny) / (g + small)
        scores.append(prod ** (1.0 / (k + 1)))
    ratio = (hyp_len + tiny) / (ref_len + small)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


# ----------------------------------------------------------------------------------------------------
# ROUGE-L


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(preds: list[str], refs: list[list[str]], tokenize: bool = True, beta: float = 1.2):
    """Mean ROUGE-L F-score (beta 1.2, max precision and max recall over references)."""
    hyps, refss = _prepare(preds, refs, tokenize)
    per_item = []
    for hyp, rs in zip(hyps, refss):
        if not hyp or not any(rs):
            per_item.append(0.0)
            continue
        lcs = [_lcs(ref, hyp) for ref in rs]
        p = max(x / len(hyp) for x in lcs)
        r = max(x / len(ref) for x, ref in zip(lcs, rs) if ref)
        per_item.append((1 + beta**2) * p * r / (r + beta**2 * p) if p > 0 and r > 0 else 0.0)
    return float(np.mean(per_item)) if per_item else 0.0, per_item


# ----------------------------------------------------------------------------------------------------
# CIDEr-D


def cider_d(preds: list[str], refs: list[list[str]], tokenize: bool = True, n: int = 4, sigma: float = 6.0):
    """Corpus CIDEr-D (mean over items) and per-item CIDEr-D, with IDF from this corpus's references."""
    hyps, refss = _prepare(preds, refs, tokenize)

    def counts(words):
        c = Counter()
        for k in range(1, n + 1):
            c.update(_ngrams(words, k))
        return c

    hyp_counts = [counts(h) for h in hyps]
    ref_counts = [[counts(r) for r in rs] for rs in refss]
    df = Counter()
    for rcs in ref_counts:
        df.update(set().union(*[set(c) for c in rcs]))
    log_n = math.log(float(len(refss))) if refss else 0.0

    def vec(cnt):
        v = [dict() for _ in range(n)]
        norm = [0.0] * n
        for g, tf in cnt.items():
            w = tf * (log_n - math.log(max(1.0, df[g])))
            v[len(g) - 1][g] = w
            norm[len(g) - 1] += w * w
        bigrams = sum(tf for g, tf in cnt.items() if len(g) == 2)  # pycocoevalcap's "length"
        return v, [math.sqrt(x) for x in norm], bigrams

    per_item = []
    for hc, rcs in zip(hyp_counts, ref_counts):
        vh, nh, lh = vec(hc)
        total = np.zeros(n)
        for rc in rcs:
            vr, nr, lr = vec(rc)
            penalty = math.exp(-((lh - lr) ** 2) / (2 * sigma**2))
            for k in range(n):
                val = sum(min(w, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, w in vh[k].items())
                if nh[k] != 0 and nr[k] != 0:
                    val /= nh[k] * nr[k]
                total[k] += val * penalty
        per_item.append(float(np.mean(total)) / len(rcs) * 10.0)
    return float(np.mean(per_item)) if per_item else 0.0, per_item


# ----------------------------------------------------------------------------------------------------
# METEOR (needs Java and the METEOR 1.5 jar)


def find_meteor_jar() -> Path | None:
    """$AUDIOFLAMINGO_METEOR_JAR, else the jar shipped inside the `pycocoevalcap` package."""
    env = os.environ.get("AUDIOFLAMINGO_METEOR_JAR")
    if env:
        return Path(env) if Path(env).is_file() else None
    try:
        import importlib.util

        spec = importlib.util.find_spec("pycocoevalcap")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        jar = Path(root) / "meteor" / "meteor-1.5.jar"
        if jar.is_file():
            return jar
    return None


def meteor_unavailable_reason() -> str | None:
    """None when METEOR can run, else why not (for skip messages and errors)."""
    if shutil.which("java") is None:
        return "METEOR needs Java: install a JRE (e.g. apt-get install default-jre-headless)"
    if find_meteor_jar() is None:
        return "METEOR needs meteor-1.5.jar: pip install pycocoevalcap, or set AUDIOFLAMINGO_METEOR_JAR"
    return None


def meteor(preds: list[str], refs: list[list[str]], tokenize: bool = True, timeout: float = 600.0):
    """Corpus METEOR 1.5 (`-l en -norm`, as pycocoevalcap) and per-item scores, via the Java jar."""
    reason = meteor_unavailable_reason()
    if reason:
        raise MetricUnavailable(reason)
    _check(preds, refs)
    if tokenize:
        preds = [coco_tokenize(p) for p in preds]
        refs = [[coco_tokenize(r) for r in rs] for rs in refs]
    jar = find_meteor_jar()
    # The jar's -stdio protocol: one "SCORE ||| ref1 ||| ref2 ||| hyp" line gives a statistics line;
    # "EVAL ||| stats1 ||| stats2 ..." gives one score per item and then the corpus score.
    clean = lambda s: s.replace("|||", "").replace("  ", " ")  # noqa: E731
    proc = subprocess.Popen(
        ["java", "-jar", "-Xmx2G", jar.name, "-", "-", "-stdio", "-l", "en", "-norm"],
        cwd=str(jar.parent), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        stats = []
        for p, rs in zip(preds, refs):
            proc.stdin.write("SCORE ||| " + " ||| ".join(clean(r) for r in rs) + " ||| " + clean(p) + "\n")
            proc.stdin.flush()
            stats.append(proc.stdout.readline().strip())
        proc.stdin.write("EVAL ||| " + " ||| ".join(stats) + "\n")
        proc.stdin.flush()
        per_item = [float(proc.stdout.readline().strip()) for _ in preds]
        corpus = float(proc.stdout.readline().strip())
    except (ValueError, BrokenPipeError) as e:
        err = proc.stderr.read() if proc.poll() is not None else ""
        raise MetricUnavailable(f"METEOR jar {jar} failed: {e} {err[-500:]}") from e
    finally:
        proc.stdin.close()
        proc.kill()
        proc.wait(timeout=timeout)
    return corpus, per_item
