"""Mixtures of 2-4 labelled events at known onsets and levels over a quiet noise bed.

Events come from clips of one split only (so a mixture never joins two sides) and from distinct
categories (so "which happens first" has one answer). Onsets are spaced so each event starts after
the previous one has begun; the loudest event is the one whose measured RMS in the mix is highest,
and it is used only when it beats the runner-up by at least 6 dB (otherwise no loudness question).
"""

from __future__ import annotations

import numpy as np

from audioflamingo.data.sources import Candidate

EVENT_MAX_S = 2.5


def mixture_candidates(clips: list[dict], n: int, rng: np.random.Generator, split: str) -> list[Candidate]:
    """n mixture Candidates from `clips` (rendered sfx/instrument clips of one split, with facts)."""
    by_label: dict[str, list[dict]] = {}
    for c in clips:
        label = c["facts"].get("category") or c["facts"].get("instrument")
        if label and c["duration"] >= 0.15:
            by_label.setdefault(label, []).append(c)
    labels = sorted(by_label)
    if len(labels) < 2:
        return []
    out = []
    for i in range(n):
        k = int(rng.integers(2, min(4, len(labels)) + 1))
        chosen = [labels[j] for j in rng.choice(len(labels), size=k, replace=False)]
        events, t = [], float(rng.uniform(0.2, 0.6))
        for label in chosen:
            src = by_label[label][int(rng.integers(len(by_label[label])))]
            seconds = min(src["duration"], EVENT_MAX_S)
            gain = float(rng.choice([-18.0, -12.0, -6.0, 0.0]))
            events.append({"uid": src["uid"], "path": src["abs_audio"], "label": label, "phrase": src["facts"]["phrase"],
                           "onset": round(t, 3), "seconds": round(seconds, 3), "gain_db": gain})
            t += float(rng.uniform(0.4, 1.0)) + min(seconds, 1.0)
        p = {"op": "mix", "events": events, "seconds": round(t + 0.5, 3), "bed_db": -45.0, "seed": int(rng.integers(1 << 31))}
        group = "mix:" + "+".join(sorted({e["uid"] for e in events}))
        cand = Candidate(f"mix/{split}_{i:05d}", "mixture", "mixture", group, {}, {"synthesis": _strip(p)}, p)
        out.append(cand)
    return out


def _strip(p: dict) -> dict:
    """Provenance without absolute paths (they depend on the machine)."""
    return {**p, "events": [{k: v for k, v in e.items() if k != "path"} for e in p["events"]]}


def render_mix(p: dict, rate: int) -> tuple[np.ndarray, dict]:
    """Samples of the mixture and its facts (order, count, loudest, measured levels)."""
    import soundfile as sf

    n = int(p["seconds"] * rate)
    rng = np.random.default_rng(p["seed"])
    bed = rng.standard_normal(n).astype(np.float32)
    bed *= 10 ** (p["bed_db"] / 20) / (np.sqrt(np.mean(bed**2)) + 1e-9)
    mix = bed.copy()
    levels = []
    for e in p["events"]:
        x, sr = sf.read(e["path"], dtype="float32")
        if sr != rate:
            raise ValueError(f"{e['path']}: rate {sr}, expected {rate} (mix sources must be converted clips)")
        x = x[: int(e["seconds"] * rate)] * 10 ** (e["gain_db"] / 20)
        a = int(e["onset"] * rate)
        x = x[: n - a]
        mix[a : a + len(x)] += x
        levels.append(float(20 * np.log10(np.sqrt(np.mean(x**2)) + 1e-12)))
    order = [e["phrase"] for e in sorted(p["events"], key=lambda e: e["onset"])]
    facts = {"event_order": order, "event_count": len(order), "event_labels": [e["label"] for e in p["events"]],
             "event_levels_db": [round(v, 1) for v in levels],
             "phrase": "a mixture of " + _join(order) + " over a quiet noise background"}
    ranked = sorted(range(len(levels)), key=lambda j: -levels[j])
    if levels[ranked[0]] - levels[ranked[1]] >= 6.0:
        facts["loudest"] = p["events"][ranked[0]]["phrase"]
    return mix, facts


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
