"""Tasks as data: a task = manifest + prompt template + decoding preset + answer parser + metric.

An evaluation config (`configs/eval/*.yaml`) is an `EvalConfig`; adding a benchmark is one more
entry in its `tasks:` list (or one more small YAML file), never code in the runner. Paths in a
config are relative to the config file's folder; audio paths in a manifest are relative to the
manifest's folder (docs/manifest.md).
"""

from __future__ import annotations

import json
import string
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from audioflamingo.config import ConfigError, from_dict, load_yaml
from audioflamingo.eval.metrics import SCORE_METRICS, TEXT_METRICS
from audioflamingo.eval.parsers import PARSERS

MODES = ("generate", "loglik", "retrieval")


@dataclass
class GenerationConfig:
    """Decoding preset. AF1 benchmarks: beam search with 3 beams, at most 128 new tokens."""

    num_beams: int = 3
    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None


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
    group_refs: bool = False  # rows with the same audio and prompt become one item with several refs
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    shots: list[int] = field(default_factory=lambda: [0])  # k values for k-shot ICL
    shot_selection: str = "random"  # random | retrieved (nearest by the model's audio embedding)
    shot_manifest: str | None = None  # pool of in-context examples (train split)
    shot_split: str | None = "train"


@dataclass
class EvalConfig:
    name: str = "eval"
    model: str | None = None  # model path or preset; `--model` overrides
    output_dir: str = "runs/eval"
    batch_size: int = 8
    seeds: list[int] = field(default_factory=lambda: [0])  # k-shot runs repeat per seed; 0-shot runs once
    limit: int | None = None  # evaluate at most this many items per task (quick checks)
    tasks: list[TaskConfig] = field(default_factory=list)
    base_dir: str = ""  # folder paths are relative to (set by load_eval_config)


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
    if task.metric == "map" and task.mode != "loglik":
        raise ConfigError(f"{where}: metric `map` needs per-label scores: set mode: loglik")
    if task.mode == "loglik" and task.options is None:
        raise ConfigError(f"{where}: mode loglik ranks options: set `options` (a list, 'manifest' or 'labels')")
    if (task.mode == "retrieval") != (task.metric == "retrieval"):
        raise ConfigError(f"{where}: mode retrieval goes with metric retrieval (and only with it)")
    if task.shot_selection not in ("random", "retrieved"):
        raise ConfigError(f"{where}: shot_selection must be 'random' or 'retrieved'")
    if any(k > 0 for k in task.shots) and not task.shot_manifest:
        raise ConfigError(f"{where}: k-shot evaluation needs `shot_manifest` (the pool of examples)")
    if any(k < 0 for k in task.shots):
        raise ConfigError(f"{where}: shots must be >= 0")


def load_eval_config(source: str | Path | dict, overrides=None) -> EvalConfig:
    """Load and check an eval config (YAML path or dict); task paths become relative to its folder."""
    from audioflamingo.config import apply_overrides

    if isinstance(source, dict):
        data, base = dict(source), Path(source.get("base_dir") or ".")
    else:
        data, base = load_yaml(source), Path(source).resolve().parent
    data = apply_overrides(data, overrides)
    tasks = data.pop("tasks", []) or []
    cfg = from_dict(EvalConfig, data)
    cfg.base_dir = str(base)
    for i, t in enumerate(tasks):
        if not isinstance(t, dict):
            raise ConfigError(f"tasks[{i}] must be a mapping")
        task = from_dict(TaskConfig, t, path=f"tasks[{i}].")
        _validate(task, f"{source if not isinstance(source, dict) else 'config'}: tasks[{i}] ({task.name or '?'})")
        cfg.tasks.append(task)
    names = [t.name for t in cfg.tasks]
    if len(set(names)) != len(names):
        raise ConfigError(f"task names must be unique, got {names}")
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
    """Rows of a manifest JSONL; `audio` (and `extra_audios`) resolved against the manifest's folder."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"manifest {path} does not exist")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        missing = [k for k in REQUIRED if k not in row]
        if not isinstance(row, dict) or missing:
            raise ConfigError(f"{path}:{n}: manifest row lacks {', '.join(missing) or 'an object'}")
        row = dict(row)
        row["id"] = str(row["id"])
        row["audio"] = str((path.parent / row["audio"]).resolve()) if not Path(row["audio"]).is_absolute() else row["audio"]
        rows.append(row)
    return rows


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
            found.update(_row_labels(r) if task.metric in ("map", "multilabel_f1") else [str(r["answer"])])
        return sorted(found)
    if task.options not in (None, "manifest"):
        raise ConfigError(f"task {task.name}: options must be a list, 'manifest' or 'labels', got {task.options!r}")
    return None


def build_items(task: TaskConfig, base_dir: str | Path, limit: int | None = None) -> list[Item]:
    """Manifest rows -> Items (filtered, grouped, prompts rendered), in manifest order."""
    path = Path(base_dir) / task.manifest
    rows = [r for r in read_manifest(path) if _keep(r, task.split, task.dataset, task.task)]
    if not rows:
        raise ConfigError(f"task {task.name}: no rows in {path} with split={task.split} dataset={task.dataset} task={task.task}")
    shared = task_options(task, rows)
    groups: OrderedDict[tuple, list[dict]] = OrderedDict()
    for r in rows:
        key = (r["audio"], r["prompt"]) if task.group_refs else (r["id"],)
        groups.setdefault(key, []).append(r)
    items = []
    for group in groups.values():
        first = group[0]
        options = shared if shared is not None else first.get("options")
        if task.options == "manifest" and not options:
            raise ConfigError(f"task {task.name}: row {first['id']} of {path} has no `options`")
        items.append(
            Item(
                id=first["id"], audio=first["audio"], prompt=render_prompt(task.prompt, first, options),
                refs=[str(r["answer"]) for r in group], labels=_row_labels(first), options=options, row=first,
            )
        )
    return items[:limit] if limit else items


def build_pool(task: TaskConfig, base_dir: str | Path) -> list[Item]:
    """In-context example pool (one Item per row, answer = its first ref)."""
    if not task.shot_manifest:
        return []
    pool_task = TaskConfig(**{**task.__dict__, "manifest": task.shot_manifest, "split": task.shot_split, "group_refs": False})
    return build_items(pool_task, base_dir)
