"""`audioflamingo data stats MANIFEST...`: counts per source/task/split, hours, label distributions, a PNG.

Hours count each distinct audio file once (many items share one clip); durations come from the
rows' `duration` field, or from the file header when a row has none.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import soundfile as sf

from audioflamingo.data.manifest import iter_manifest, resolve_audio


def manifest_stats(paths: list[str | Path]) -> dict:
    by = {k: Counter() for k in ("dataset", "task", "split", "source")}
    labels: dict[str, Counter] = {}
    seconds: dict[str, float] = {}
    split_seconds: Counter = Counter()
    files_per_split: dict[str, set] = {}
    n = 0
    for mpath in paths:
        for _, row, probs in iter_manifest(mpath, strict=False):
            if row is None or probs:
                continue
            n += 1
            for k in by:
                by[k][str(row.get(k, "?"))] += 1
            if row.get("label") is not None:
                labels.setdefault(row.get("label_set") or row["dataset"], Counter())[row["label"]] += 1
            path = str(resolve_audio(row, mpath))
            if path not in seconds:
                d = row.get("duration")
                if d is None:
                    try:
                        d = sf.info(path).duration
                    except Exception:
                        d = 0.0
                seconds[path] = float(d)
                split_seconds[row["split"]] += float(d)
            files_per_split.setdefault(row["split"], set()).add(path)
    return {"rows": n, "audio_files": len(seconds), "hours": sum(seconds.values()) / 3600,
            "hours_per_split": {k: v / 3600 for k, v in split_seconds.items()},
            "files_per_split": {k: len(v) for k, v in files_per_split.items()},
            **{f"per_{k}": dict(v.most_common()) for k, v in by.items()},
            "labels": {k: dict(v.most_common()) for k, v in sorted(labels.items())}}


def stats_text(st: dict) -> str:
    lines = [f"rows {st['rows']}, audio files {st['audio_files']}, hours {st['hours']:.2f}"]
    for k in ("split", "task", "dataset", "source"):
        lines.append(f"per {k}: " + ", ".join(f"{a} {b}" for a, b in st[f"per_{k}"].items()))
    lines.append("hours per split: " + ", ".join(f"{a} {b:.2f}" for a, b in st["hours_per_split"].items()))
    for name, dist in st["labels"].items():
        lines.append(f"labels {name} ({len(dist)}): " + ", ".join(f"{a} {b}" for a, b in dist.items()))
    return "\n".join(lines)


def stats_markdown(st: dict) -> str:
    out = [f"{st['rows']} items over {st['audio_files']} audio files, {st['hours']:.2f} hours.", ""]
    for k in ("split", "task", "source", "dataset"):
        out += [f"| {k} | items |", "| --- | ---: |"] + [f"| {a} | {b} |" for a, b in st[f"per_{k}"].items()] + [""]
    out += ["| label set | classes | items per class (most common first) |", "| --- | ---: | --- |"]
    for name, dist in st["labels"].items():
        out.append(f"| {name} | {len(dist)} | " + ", ".join(f"{a} {b}" for a, b in list(dist.items())[:12])
                   + (" ..." if len(dist) > 12 else "") + " |")
    return "\n".join(out)


def plot_stats(st: dict, png: str | Path) -> None:
    """Four panels: items per task, per split, per source kind, and the largest label set's distribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    panels = [("items per task", st["per_task"]), ("items per split", st["per_split"]),
              ("items per source kind", st["per_source"])]
    if st["labels"]:
        name, dist = max(st["labels"].items(), key=lambda kv: len(kv[1]))
        panels.append((f"label set '{name}'", dict(list(dist.items())[:25])))
    for ax, (title, d) in zip(axes.flat, panels):
        ax.barh(list(d)[::-1], list(d.values())[::-1], color="#4878a8")
        ax.set_title(title)
        ax.tick_params(axis="y", labelsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{st['rows']} items, {st['audio_files']} audio files, {st['hours']:.2f} h")
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)
