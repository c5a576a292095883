"""Score any system's outputs: predictions JSONL + references JSONL -> one corpus-level number.

Prediction rows are `{"id": str, "text": str}`, reference rows `{"id": str, "refs": [str, ...]}`;
every reference id must have exactly one prediction and vice versa. Every problem is reported as a
`ScoreInputError` naming the file and line.
"""

from __future__ import annotations

import json
from pathlib import Path

from audioflamingo.eval.metrics import get_metric


class ScoreInputError(ValueError):
    """A predictions or references file is malformed; the message names the file and line."""


def _read_rows(path: str | Path, kind: str) -> dict[str, object]:
    """Read `{"id", field}` rows; `kind` is 'text' (predictions) or 'refs' (references)."""
    path = Path(path)
    if not path.is_file():
        raise ScoreInputError(f"{path}: file not found")
    rows: dict[str, object] = {}
    first_line: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ScoreInputError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise ScoreInputError(f"{where}: expected a JSON object, got {type(row).__name__}")
            if "id" not in row:
                raise ScoreInputError(f"{where}: missing key 'id'")
            if isinstance(row["id"], bool) or not isinstance(row["id"], (str, int)):
                raise ScoreInputError(f"{where}: 'id' must be a string, got {row['id']!r}")
            key = str(row["id"])
            if key in rows:
                raise ScoreInputError(f"{where}: duplicate id {key!r} (first on line {first_line[key]})")
            if kind not in row:
                other = "refs" if kind == "text" else "text"
                hint = f" (this looks like a {'references' if other == 'refs' else 'predictions'} file)" if other in row else ""
                raise ScoreInputError(f"{where}: missing key {kind!r}{hint}")
            value = row[kind]
            if kind == "text" and not isinstance(value, str):
                raise ScoreInputError(f"{where}: 'text' must be a string, got {type(value).__name__}")
            if kind == "refs":
                if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
                    raise ScoreInputError(f"{where}: 'refs' must be a list of strings, got {value!r:.80}")
                if not value:
                    raise ScoreInputError(f"{where}: 'refs' is empty for id {key!r}")
            rows[key] = value
            first_line[key] = n
    if not rows:
        raise ScoreInputError(f"{path}: no rows")
    return rows


def read_predictions(path: str | Path) -> dict[str, str]:
    return _read_rows(path, "text")  # type: ignore[return-value]


def read_references(path: str | Path) -> dict[str, list[str]]:
    return _read_rows(path, "refs")  # type: ignore[return-value]


def _id_list(ids: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in sorted(ids)[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def align(preds: dict[str, str], refs: dict[str, list[str]], pred_path, refs_path) -> tuple[list[str], list[str], list[list[str]]]:
    """(ids, predictions, references) in the references' order; mismatched ids raise."""
    missing = [i for i in refs if i not in preds]
    extra = [i for i in preds if i not in refs]
    if missing:
        raise ScoreInputError(f"{pred_path}: no prediction for {len(missing)} id(s) of {refs_path}: {_id_list(missing)}")
    if extra:
        raise ScoreInputError(f"{pred_path}: {len(extra)} id(s) not in {refs_path}: {_id_list(extra)}")
    ids = list(refs)
    return ids, [preds[i] for i in ids], [refs[i] for i in ids]


def score_files(metric: str, pred_path: str | Path, refs_path: str | Path) -> dict:
    """{"metric": name, "score": corpus score, "per_item": {id: score}} for two JSONL files."""
    fn = get_metric(metric)
    ids, preds, refs = align(read_predictions(pred_path), read_references(refs_path), pred_path, refs_path)
    corpus, per_item = fn(preds, refs)
    return {"metric": metric, "score": float(corpus), "per_item": dict(zip(ids, map(float, per_item)))}
