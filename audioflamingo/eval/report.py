"""Reports of an evaluation: one JSON document, a markdown table, and PNG charts (shots vs score).

The JSON holds the config, the model fingerprint, and per task: a summary per number of shots
(mean, std over seeds, min, max), every run with its per-item results (raw output, parsed
prediction, references, item score), and the task's baselines (each a 0-shot run with its
fingerprint, or {"skipped": reason}). It has no timestamps, so the same inputs give the same file.
"""

from __future__ import annotations

import json
from pathlib import Path


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def _copy_note(copy: dict | None) -> str:
    if not copy or not copy.get("weight"):
        return ""
    return f"; copying from examples on (shot_copy weight {copy['weight']}, temperature {copy['temperature']})"


def markdown_table(results: dict) -> str:
    """One row per (task, shots): metric, mean ± std over seeds, runs, items, format failures."""
    lines = [
        f"# Evaluation: {results['config'].get('name', 'eval')}",
        "",
        f"Model: `{results['model'].get('path')}` (fingerprint `{results['model'].get('fingerprint')}`)"
        + _copy_note(results["model"].get("shot_copy")),
        "",
        "| task | metric | shots | score | ± std | runs | items | format failures |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for task in results["tasks"]:
        for s in task["summary"]:
            failures = [r["extra"].get("format_failures", 0) for r in task["runs"] if r["shots"] == s["shots"]]
            fail = f"{sum(failures) / len(failures):.1f}" if failures else "-"
            lines.append(
                f"| {task['name']} | {task['metric']} | {s['shots']} | {_fmt(s['mean'])} | {_fmt(s['std'])} | "
                f"{s['n_runs']} | {task['n_items']} | {fail} |"
            )
    extras = [(t["name"], r["extra"]) for t in results["tasks"] for r in t["runs"] if t["metric"] == "retrieval"]
    for name, m in extras:
        lines += ["", f"Retrieval details for {name}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in m.items())]
    lines += _baseline_table(results)
    return "\n".join(lines) + "\n"


def _baseline_table(results: dict) -> list[str]:
    """Each task's baselines beside the model's 0-shot score, on the same items."""
    tasks = [t for t in results["tasks"] if t.get("baselines")]
    names = list(dict.fromkeys(n for t in tasks for n in t["baselines"]))
    if not names:
        return []
    lines = ["", "Baselines beside the model (0 shots, the same items):", "",
             "| task | metric | model | " + " | ".join(names) + " |", "|---|---|---:|" + "---:|" * len(names)]
    skipped = {}
    for t in tasks:
        zero = [s["mean"] for s in t["summary"] if s["shots"] == 0]
        cells = []
        for n in names:
            b = t["baselines"].get(n)
            if b is not None and "skipped" in b:
                skipped[n] = b["skipped"]
            cells.append(_fmt(b["score"]) if b is not None and "score" in b else "-")
        lines.append(f"| {t['name']} | {t['metric']} | {_fmt(zero[0]) if zero else '-'} | " + " | ".join(cells) + " |")
    lines += ["", *(f"Skipped {n}: {why}" for n, why in skipped.items())] if skipped else []
    return lines


def plot_shots(results: dict, path: str | Path) -> Path:
    """One panel per task: mean score against the number of shots, with a ±std band over seeds, and the
    task's 0-shot baselines as dashed lines; bounded scores are drawn from 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = results["tasks"]
    cols = min(3, max(1, len(tasks)))
    rows = (len(tasks) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        ks = [s["shots"] for s in task["summary"]]
        mean = [s["mean"] for s in task["summary"]]
        std = [s["std"] for s in task["summary"]]
        ax.errorbar(ks, mean, yerr=std, marker="o", capsize=3, label="model")
        drawn = False
        for i, (name, b) in enumerate((task.get("baselines") or {}).items()):  # 0-shot baselines, same items
            if b is not None and "score" in b:
                ax.axhline(b["score"], linestyle="--", color=f"C{i + 1}", label=name)
                drawn = True
        if drawn:
            ax.legend(fontsize=8)
        if all(0.0 <= v <= 1.0 for v in mean):  # a bounded score: from 0, so small changes look small
            ax.set_ylim(bottom=0.0)
        ax.set_title(task["name"], fontsize=10)
        ax.set_xlabel("in-context examples (shots)")
        ax.set_ylabel(task["metric"])
        ax.set_xticks(ks)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    fig.suptitle(f"{results['config'].get('name', 'eval')}: score vs shots")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(results: dict, out_dir: str | Path, plot: bool = False) -> dict[str, Path]:
    """Write results.json, results.md (and shots_vs_score.png with plot=True) into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md"}
    paths["json"].write_text(json.dumps(results, indent=1, ensure_ascii=False, allow_nan=True) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown_table(results), encoding="utf-8")
    if plot:
        paths["plot"] = plot_shots(results, out / "shots_vs_score.png")
    return paths
