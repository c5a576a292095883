"""Manifest rows: one JSON object per line, one item (audio + prompt + answer) per row.

The schema is documented in docs/manifest.md. Required keys are checked here so every reader and
writer in the project agrees on them; relative audio paths are relative to the manifest's folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

from audioflamingo.config import ConfigError

REQUIRED = ("id", "audio", "dataset", "task", "prompt", "answer", "split")
SPLITS = ("train", "val", "test")
TASKS = (
    "caption",
    "caption_long",
    "classification",
    "tagging",
    "aqa",
    "transcription",
    "dialog",
)
# optional keys and the JSON type each must have when present
OPTIONAL_TYPES = {
    "label": str,
    "labels": list,
    "options": list,
    "dialogue": list,
    "duration": (int, float),
    "group": str,
    "source": str,
    "provenance": dict,
    "extra_audios": list,
    "heldout": bool,
    "heldout_reason": list,
    "label_set": str,
}


class ManifestError(ConfigError):
    """A manifest file or row is malformed; the message names the file and line."""


def row_problems(row: object, required: tuple[str, ...] = REQUIRED) -> list[str]:
    """Everything wrong with one parsed row, as short phrases (empty list = valid)."""
    if not isinstance(row, dict):
        return [f"row is a {type(row).__name__}, expected a JSON object"]
    problems = []
    for key in required:
        if key not in row:
            problems.append(f"missing required key {key!r}")
        elif key == "id" and isinstance(row[key], int) and not isinstance(row[key], bool):
            continue  # integer ids are fine (they are read as strings)
        elif not isinstance(row[key], str):
            problems.append(f"key {key!r} must be a string, got {type(row[key]).__name__}")
        elif key not in ("prompt", "answer") and not row[key].strip():
            problems.append(f"key {key!r} is empty")
    if isinstance(row.get("split"), str) and row["split"] not in SPLITS:
        problems.append(f"split {row['split']!r} is not one of {', '.join(SPLITS)}")
    for key, tp in OPTIONAL_TYPES.items():
        if key in row and row[key] is not None and not isinstance(row[key], tp):
            problems.append(f"optional key {key!r} has type {type(row[key]).__name__}")
    if row.get("task") == "dialog":
        turns = row.get("dialogue")
        if not turns or not all(isinstance(t, dict) and {"user", "assistant"} <= set(t) for t in turns):
            problems.append("dialog row needs 'dialogue': a list of {'user', 'assistant'} turns")
    if "options" in row and isinstance(row["options"], list) and isinstance(row.get("answer"), str):
        if row["answer"] not in row["options"]:
            problems.append("answer is not one of 'options'")
    return problems


def iter_manifest(path: str | Path, strict: bool = True, required: tuple[str, ...] = REQUIRED) -> Iterator[tuple[int, dict | None, list[str]]]:
    """Yield (line_number, row or None, problems) for every non-blank line of a JSONL manifest."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist")
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                if strict:
                    raise ManifestError(f"{path}:{n}: not valid JSON ({e.msg})") from e
                yield n, None, [f"not valid JSON ({e.msg})"]
                continue
            problems = row_problems(row, required)
            if problems and strict:
                raise ManifestError(f"{path}:{n}: {'; '.join(problems)}")
            yield n, row, problems


def read_manifest(path: str | Path, required: tuple[str, ...] = REQUIRED, resolve: bool = False) -> list[dict]:
    """All rows of a manifest, validated; raises ManifestError naming file:line on the first bad row.

    The one manifest reader of the project. `required`: the keys a reader needs (the corpus needs all
    of REQUIRED; evaluation and retrieval accept hand-made files with fewer). `resolve`: ids become
    strings and every audio path (`audio`, `extra_audios`, `shots[].audio`) absolute.
    """
    rows = [row for _, row, _ in iter_manifest(path, strict=True, required=required)]
    if resolve:
        base = Path(path).resolve().parent
        absolute = lambda a: str(a) if Path(a).is_absolute() else str((base / a).resolve())  # noqa: E731
        for row in rows:
            row["id"] = str(row["id"])
            row["audio"] = absolute(row["audio"])
            if "extra_audios" in row:
                row["extra_audios"] = [absolute(a) for a in row["extra_audios"]]
            for shot in row.get("shots", []):
                shot["audio"] = absolute(shot["audio"])
    return rows


def resolve_audio(row: dict, manifest_path: str | Path) -> Path:
    """The absolute path of a row's audio (relative paths are relative to the manifest's folder)."""
    p = Path(row["audio"])
    return p if p.is_absolute() else Path(manifest_path).resolve().parent / p


def write_manifest(path: str | Path, rows: Iterable[dict]) -> int:
    """Validate and write rows as JSONL (atomically: a temp file renamed into place); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            problems = row_problems(row)
            if problems:
                raise ManifestError(f"refusing to write row {row.get('id')!r} to {path}: {'; '.join(problems)}")
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")
            n += 1
    tmp.replace(path)
    return n
