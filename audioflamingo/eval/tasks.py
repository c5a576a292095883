"""Tasks as data: a task = manifest + prompt template + decoding preset + answer parser + metric.

An evaluation config (`configs/eval/*.yaml`) is an `EvalConfig`; adding a benchmark is one more
entry in its `tasks:` list (or one more small YAML file), never code in the runner. A task's
`manifest` is relative to the config's `data_root` (itself relative to the working directory);
audio paths in a manifest are relative to the manifest's folder (docs/manifest.md).
Overrides address a task by name: `tasks.esc50.shots=[0,4]`, or every task: `tasks.*.shots=[0,4]`.
"""

from __future__ import annotations

import json
import string
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from audioflamingo.config import ConfigError, from_dict, load_yaml
from audioflamingo.data.manifest import read_manifest as _read_manifest
from audioflamingo.model.generate import GenerationConfig
from audioflamingo.eval.metrics import SCORE_METRICS, TEXT_METRICS, normalize_label
from audioflamingo.eval.parsers import PARSERS

MODES = ("generate", "loglik", "retrieval")


def _benchmark_decoding() -> GenerationConfig:
    """AF1 benchmarks: beam search with 3 beams, at most 128 new tokens (the model's one decoding config)."""
    return GenerationConfig.preset("beam")


@dataclass
class TaskConfig:
    name: str = ""
    manifest: str = ""  # JSONL of test items
    split: str | None = "test"  # keep rows of this split (None: all rows)
    dataset: str | None = None  # keep rows whose `dataset` equals this
    task: str | None = None  # keep rows whose `task` equals this
    prompt: str = "{prompt}"  # template over the row's fields, plus {options}
    task_prefix: str | None = None  # AF1's "The task is <task_prefix>." (given to the model's template)
    mode: str = "generate"  # generate | loglik (rank every option by log-likelihood) | retrieval
    parser: str = "text"  # text | label | option | yes_no | number | labels
    metric: str = "cider_d"  # a text metric, or `map` (loglik scores), `multilabel_f1`, `retrieval`
    options: list[str] | str | None = None  # explicit list | "manifest" (row's options) | "labels" (all answers)
    answer_field: str = "answer"  # the row field holding the reference; dotted for nested ("provenance.source")
    group_refs: bool = False  # rows with the same audio and prompt become one item with several refs
    answers_in: list[str] | None = None  # keep items whose every reference is one of these (e.g. [yes, no])
    answers_not_in: list[str] | None = None  # keep items with no reference among these
    unanimous: bool = False  # keep items whose references all agree (after label normalisation)
    extra_metrics: list[str] = field(default_factory=list)  # more text metrics on the same predictions
    generation: GenerationConfig = field(default_factory=_benchmark_decoding)
    shots: list[int] = field(default_factory=lambda: [0])  # k values for k-shot ICL
    shot_selection: str = "random"  # random | retrieved (nearest by the model's audio embedding)
    shot_manifest: str | None = None  # pool of in-context examples (train split)
    shot_split: str | None = "train"
    shot_order: str = "nearest_last"  # retrieved shots: nearest_last (the inference default) | nearest_first | shuffle (seeded per item)
    baselines: list[str] = field(default_factory=list)  # also run these 0-shot on the same items (baselines.py)
    calibrate: bool = False  # loglik: contextual calibration (each option minus its score with the query audio silenced)


BASELINE_NAMES = ("majority", "nn_caption", "clap_zeroshot")  # the keys of baselines.BASELINES


@dataclass
class EvalConfig:
    name: str = "eval"
    model: str | None = None  # model path or preset; `--model` overrides
    data_root: str = "data/manifests"  # where task manifests live (relative to the working directory)
    output_dir: str = "runs/eval"
    batch_size: int = 8
    seeds: list[int] = field(default_factory=lambda: [0])  # k-shot runs repeat per seed; 0-shot runs once
    limit: int | None = None  # evaluate at most this many items per task (quick checks)
    tasks: list[TaskConfig] = field(default_factory=list)


def _validate(task: TaskConfig, where: str) -> None:
    if not task.name or not task.manifest:
        raise ConfigError(f"{where}: every task needs a `name` and a `manifest`")
    if task.mode not in MODES:
        raise ConfigError(f"{where}: mode {task.mode!r} must be one of {', '.join(MODES)}")
    if task.parser not in PARSERS:
        raise ConfigError(f"{where}: parser {task.parser!r} must be one of {', '.join(PARSERS)}")
    known = set(TEXT_METRICS) | set(SCORE_METRICS) | {"multilabel_f1"}
    if task.metric not in known:
        raise ConfigError(f"{where}: metric {task.metric!r} must be one of {', '.join(sorted(known))}")
    bad = [m for m in task.extra_metrics if m not in TEXT_METRICS]
    if bad:
        raise ConfigError(f"{where}: extra_metrics {bad} must be text metrics: {', '.join(TEXT_METRICS)}")
    if task.metric == "map" and task.mode != "loglik":
        raise ConfigError(f"{where}: metric `map` needs per-label scores: set mode: loglik")
    if task.mode == "loglik" and task.options is None:
        raise ConfigError(f"{where}: mode loglik ranks options: set `options` (a list, 'manifest' or 'labels')")
    if task.calibrate and task.mode != "loglik":
        raise ConfigError(f"{where}: calibrate adjusts option log-likelihoods: it needs mode: loglik")
    if (task.mode == "retrieval") != (task.metric == "retrieval"):
        raise ConfigError(f"{where}: mode retrieval goes with metric retrieval (and only with it)")
    if task.shot_selection not in ("random", "retrieved"):
        raise ConfigError(f"{where}: shot_selection must be 'random' or 'retrieved'")
    if task.shot_selection == "retrieved":
        from audioflamingo.retrieval.neighbours import ORDERS

        if task.shot_order not in ORDERS:
            raise ConfigError(f"{where}: shot_order {task.shot_order!r} must be one of {', '.join(ORDERS)}")
    if any(k > 0 for k in task.shots) and not task.shot_manifest:
        raise ConfigError(f"{where}: k-shot evaluation needs `shot_manifest` (the pool of examples)")
    if any(k < 0 for k in task.shots):
        raise ConfigError(f"{where}: shots must be >= 0")
    for name in task.baselines:
        if name not in BASELINE_NAMES:
            raise ConfigError(f"{where}: baseline {name!r} must be one of {', '.join(BASELINE_NAMES)}")
        if task.mode == "retrieval":
            raise ConfigError(f"{where}: baselines answer questions; a retrieval task has none")
        if name in ("majority", "nn_caption") and not task.shot_manifest:
            raise ConfigError(f"{where}: baseline {name} learns from the pool: set `shot_manifest`")
        if name == "nn_caption" and task.mode != "generate":
            raise ConfigError(f"{where}: baseline nn_caption copies answers, it cannot rank options: use it with mode generate")
        if name == "clap_zeroshot" and task.options is None:
            raise ConfigError(f"{where}: baseline clap_zeroshot ranks options: set `options`")


def _apply_task_overrides(tasks: list, overrides: list[str] | None) -> tuple[list, list[str]]:
    """Split off `tasks.<name|index|*>.key=value` overrides and apply them to the task dicts."""
    from audioflamingo.config import apply_overrides, parse_override

    rest = []
    for text in overrides or []:
        key, value = parse_override(text)
        if not key.startswith("tasks."):
            rest.append(text)
            continue
        _, sel, *sub = key.split(".")
        if not sub:
            raise ConfigError(f"override {text!r}: use tasks.<name>.<key>=value")
        hits = [i for i, t in enumerate(tasks) if sel in ("*", t.get("name"), str(i))]
        if not hits:
            raise ConfigError(f"override {text!r}: no task named {sel!r}; tasks: {[t.get('name') for t in tasks]}")
        for i in hits:
            tasks[i] = apply_overrides(tasks[i], {".".join(sub): value})
    return tasks, rest


def load_eval_config(source: str | Path | dict, overrides=None) -> EvalConfig:
    """Load and check an eval config (YAML path or dict) with dotted overrides."""
    from audioflamingo.config import apply_overrides

    data = dict(source) if isinstance(source, dict) else load_yaml(source)
    where = "config" if isinstance(source, dict) else str(source)
    tasks = [dict(t) if isinstance(t, dict) else t for t in (data.pop("tasks", None) or [])]
    if not all(isinstance(t, dict) for t in tasks):
        raise ConfigError(f"{where}: every entry of `tasks` must be a mapping")
    tasks, rest = _apply_task_overrides(tasks, list(overrides or []))
    cfg = from_dict(EvalConfig, apply_overrides(data, rest))
    for i, t in enumerate(tasks):
        task = from_dict(TaskConfig, t, path=f"tasks[{i}].")
        _validate(task, f"{where}: tasks[{i}] ({task.name or '?'})")
        cfg.tasks.append(task)
    names = [t.name for t in cfg.tasks]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: task names must be unique, got {names}")
    return cfg


# ----------------------------------------------------------------------------------------------------
# manifests and items


@dataclass
class Item:
    """One test question: its audio, the rendered prompt, the references, and the source rows."""

    id: str
    audio: str
    prompt: str
    refs: list[str]
    labels: list[str] = field(default_factory=list)  # multi-label gold (tagging)
    options: list[str] | None = None
    row: dict = field(default_factory=dict)


REQUIRED = ("id", "audio", "prompt", "answer")


def read_manifest(path: str | Path) -> list[dict]:
    """Rows of a manifest (the project's one reader); `audio` paths resolved against the manifest's folder."""
    return _read_manifest(path, required=REQUIRED, resolve=True)


def _keep(row: dict, split, dataset, task) -> bool:
    return (split is None or row.get("split") == split) and (dataset is None or row.get("dataset") == dataset) and (
        task is None or row.get("task") == task
    )


def render_options(options: list[str]) -> str:
    """AF1's OPTIONS block: '\\nOPTIONS:\\n - a.\\n - b.' (labels with `_` shown as spaces)."""
    return "\nOPTIONS:\n - " + ".\n - ".join(o.replace("_", " ") for o in options) + "."


class _Fields(dict):
    def __missing__(self, key):
        raise ConfigError(f"prompt template field {{{key}}} is not in the manifest row (fields: {', '.join(sorted(self))})")


def render_prompt(template: str, row: dict, options: list[str] | None) -> str:
    fields = _Fields({k: v for k, v in row.items() if isinstance(v, (str, int, float))})
    fields["options"] = render_options(options) if options else ""
    return string.Formatter().vformat(template, (), fields)


def _field(row: dict, dotted: str):
    value = row
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ConfigError(f"manifest row {row.get('id')} has no field {dotted!r}")
        value = value[part]
    return value


def _row_labels(row: dict) -> list[str]:
    if isinstance(row.get("labels"), list):
        return [str(x) for x in row["labels"]]
    return [x.strip() for x in str(row["answer"]).split(",") if x.strip()]


def task_options(task: TaskConfig, rows: list[dict]) -> list[str] | None:
    """The task-wide option list (explicit or 'labels'); None when options come from each row."""
    if isinstance(task.options, list):
        return [str(o) for o in task.options]
    if task.options == "labels":
        found = set()
        for r in rows:
            found.update(_row_labels(r) if task.metric in ("map", "multilabel_f1") else [str(_field(r, task.answer_field))])
        return sorted(found)
    if task.options not in (None, "manifest"):
        raise ConfigError(f"task {task.name}: options must be a list, 'manifest' or 'labels', got {task.options!r}")
    return None


def _keep_group(task: TaskConfig, refs: list[str]) -> bool:
    normed = {normalize_label(r) for r in refs}
    if task.unanimous and len(normed) > 1:
        return False
    if task.answers_in is not None and not normed <= {normalize_label(a) for a in task.answers_in}:
        return False
    if task.answers_not_in is not None and normed & {normalize_label(a) for a in task.answers_not_in}:
        return False
    return True


def build_items(task: TaskConfig, data_root: str | Path, limit: int | None = None) -> list[Item]:
    """Manifest rows -> Items (filtered, grouped, prompts rendered), in manifest order."""
    path = Path(data_root) / task.manifest
    rows = [r for r in read_manifest(path) if _keep(r, task.split, task.dataset, task.task)]
    if not rows:
        raise ConfigError(f"task {task.name}: no rows in {path} with split={task.split} dataset={task.dataset} task={task.task}")
    groups: OrderedDict[tuple, list[dict]] = OrderedDict()
    for r in rows:
        key = (r["audio"], r["prompt"]) if task.group_refs else (r["id"],)
        groups.setdefault(key, []).append(r)
    kept = [g for g in groups.values() if _keep_group(task, [str(_field(r, task.answer_field)) for r in g])]
    shared = task_options(task, [r for g in kept for r in g])  # 'labels': the answers of the items kept, no others
    items = []
    for group in kept:
        first = group[0]
        refs = [str(_field(r, task.answer_field)) for r in group]
        options = shared if shared is not None else first.get("options")
        if task.options == "manifest" and not options:
            raise ConfigError(f"task {task.name}: row {first['id']} of {path} has no `options`")
        items.append(
            Item(
                id=first["id"], audio=first["audio"], prompt=render_prompt(task.prompt, first, options),
                refs=refs, labels=_row_labels(first), options=options, row=first,
            )
        )
    if not items:
        raise ConfigError(f"task {task.name}: every item of {path} was filtered out (answers_in/answers_not_in/unanimous)")
    return items[:limit] if limit else items


def build_pool(task: TaskConfig, data_root: str | Path) -> list[Item]:
    """In-context example pool (one Item per row, answer = its first ref); filters as the task's."""
    if not task.shot_manifest:
        return []
    pool_task = TaskConfig(**{**task.__dict__, "manifest": task.shot_manifest, "split": task.shot_split, "group_refs": False})
    return build_items(pool_task, data_root)
