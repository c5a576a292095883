"""Converters from AF1's dataset files and public benchmark layouts to our manifest rows.

Each converter reads the dataset's own metadata as distributed (layouts in docs/manifest.md) and
writes absolute audio paths; rows whose audio is missing are still written (`data check` reports
them), so a partly downloaded dataset converts and the gaps are visible.
"""

from __future__ import annotations

import ast
import csv
import json
import re
from pathlib import Path
from typing import Callable, Iterator

from audioflamingo.data.manifest import write_manifest

CAPTION_PROMPT = "Describe the sound in a sentence."
MUSIC_PROMPT = "Describe the music in detail."


def _split_from_name(name: str, default: str | None) -> str:
    n = name.lower()
    for key, split in (("evaluation", "test"), ("eval", "test"), ("development", "train"), ("train", "train"),
                       ("validation", "val"), ("valid", "val"), ("val", "val"), ("test", "test")):
        if key in n:
            return split
    if default:
        return default
    raise ValueError(f"cannot tell the split from {name!r}: pass --split train|val|test")


def _row(dataset, audio, task, prompt, answer, split, rid, **extra) -> dict:
    return {"id": rid, "audio": str(audio), "dataset": dataset, "task": task, "prompt": prompt,
            "answer": answer, "split": split, **extra}


def _csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------------------------------

AF1_TASKS = [("Captioning", "caption"), ("AQA", "aqa"), ("Classification", "classification"),
             ("Tagging", "tagging"), ("Dialog", "dialog"), ("Chat", "dialog")]


def from_af1(src: Path, audio_dir: Path | None, split: str | None) -> Iterator[dict]:
    """AF1 dataset file: {"dataset_path", "split", "split_path", "flamingo_task": "<name>-<Task>",
    "total_num", "data": {"0": {"name", "prompt", "output"}, ...}}; audio = dataset_path/split_path/name."""
    d = json.loads(src.read_text(encoding="utf-8"))
    name, _, af1_task = d.get("flamingo_task", "af1-unknown").rpartition("-")
    task = next((t for k, t in AF1_TASKS if af1_task.endswith(k)), af1_task.lower() or "unknown")
    base = audio_dir or Path(d["dataset_path"]) / (d.get("split_path") or ".")
    sp = {"validation": "val", "valid": "val"}.get(d.get("split"), d.get("split")) or split or "train"
    for i in range(int(d["total_num"])):
        e = d["data"][str(i)]
        prompt = e.get("prompt", e.get("prefix", ""))
        answer = e.get("output", e.get("label", ""))
        extra = {"provenance": {"format": "af1", "file": src.name, "index": i, "flamingo_task": d.get("flamingo_task")}}
        if "dialogue" in e:
            extra["dialogue"] = e["dialogue"]
            task = "dialog"
        yield _row(name or "af1", base / e["name"], task, prompt, answer, sp, f"{name}:{sp}:{i}", **extra)


def from_clotho(src: Path, audio_dir: Path | None, split: str | None) -> Iterator[dict]:
    """clotho_captions_<development|validation|evaluation>.csv: file_name, caption_1..caption_5;
    audio in a sibling folder named development/validation/evaluation."""
    folder = re.sub(r"^clotho_captions_", "", src.stem)
    sp = _split_from_name(folder, split)
    base = audio_dir or src.parent / folder
    for r in _csv(src):
        for k in range(1, 6):
            cap = (r.get(f"caption_{k}") or "").strip()
            if cap:
                yield _row("clotho", base / r["file_name"], "caption", CAPTION_PROMPT, cap, sp,
                           f"clotho:{sp}:{r['file_name']}:{k}", group=f"clotho:{r['file_name']}")


def from_clotho_aqa(src: Path, audio_dir: Path | None, split: str | None) -> Iterator[dict]:
    """clotho_aqa_<train|val|test>.csv: file_name, QuestionText, answer, confidence (three answers per question)."""
    sp = _split_from_name(src.stem.replace("clotho_aqa", ""), split)
    base = audio_dir or src.parent / "audio_files"
    for n, r in enumerate(_csv(src)):
        yield _row("clotho-aqa", base / r["file_name"], "aqa", r["QuestionText"].strip(), r["answer"].strip(), sp,
                   f"clotho-aqa:{sp}:{n}", group=f"clotho:{r['file_name']}",
                   provenance={"confidence": r.get("confidence")})


def _find(base: Path, names: list[str]) -> Path:
    return next((base / n for n in names if (base / n).exists()), base / names[0])


def from_audiocaps(src: Path, audio_dir: Path | None, split: str | None) -> Iterator[dict]:
    """<train|val|test>.csv: audiocap_id, youtube_id, start_time, caption. Audio named by the download
    tool: {youtube_id}.wav, Y{youtube_id}.wav, {youtube_id}_{start}.wav or {audiocap_id}.wav (first found)."""
    sp = _split_from_name(src.stem, split)
    base = audio_dir or src.parent / sp
    for r in _csv(src):
        y, s = r["youtube_id"], r["start_time"]
        names = [f"{y}.wav", f"Y{y}.wav", f"{y}_{s}.wav", f"{r['audiocap_id']}.wav", f"{y}.flac"]
        yield _row("audiocaps", _find(base, names), "caption", CAPTION_PROMPT, r["caption"].strip(), sp,
                   f"audiocaps:{r['audiocap_id']}", group=f"audiocaps:{y}")


def from_esc50(src: Path, audio_dir: Path | None, split: str | None) -> Iterator[dict]:
    """ESC-50 root (meta/esc50.csv: filename, fold, target, category, esc10, src_file, take; audio/).
    Fold 5 is test, fold 4 val, folds 1-3 train (fixed here; the benchmark itself is 5-fold CV)."""
    root = src if src.is_dir() else src.parent.parent
    rows = _csv(root / "meta" / "esc50.csv")
    options = sorted({r["category"].replace("_", " ") for r in rows})
    base = audio_dir or root / "audio"
    for r in rows:
        sp = split or {"5": "test", "4": "val"}.get(r["fold"], "train")
        label = r["category"].replace("_", " ")
        yield _row("esc50", base / r["filename"], "classification", "Classify this sound.", label, sp,
                   f"esc50:{r['filename']}", label=label, label_set="esc50", options=options,
                   group=f"esc50:{r['src_file']}", provenance={"fold": int(r["fold"])})


def from_fsd50k(src: Path, audio_dir: Path | None, split: str | None) -> Iterator[dict]:
    """FSD50K root: FSD50K.ground_truth/dev.csv (fname, labels, mids, split=train|val) and eval.csv
    (fname, labels, mids); audio in FSD50K.dev_audio/ and FSD50K.eval_audio/. Labels are comma-separated."""
    root = src if src.is_dir() else src.parent.parent
    gt = root / "FSD50K.ground_truth"
    for csv_name, audio_name in (("dev.csv", "FSD50K.dev_audio"), ("eval.csv", "FSD50K.eval_audio")):
        if not (gt / csv_name).exists():
            continue
        for r in _csv(gt / csv_name):
            sp = {"train": "train", "val": "val"}.get(r.get("split", ""), "test")
            labels = [x.replace("_", " ") for x in r["labels"].split(",") if x]
            base = audio_dir or root / audio_name
            yield _row("fsd50k", base / f"{r['fname']}.wav", "tagging", "Generate tags.", ", ".join(labels), sp,
                       f"fsd50k:{audio_name}:{r['fname']}", labels=labels, group=f"fsd50k:{r['fname']}")


def from_nsynth(src: Path, audio_dir: Path | None, split: str | None) -> Iterator[dict]:
    """nsynth-<train|valid|test>/examples.json: {note_str: {instrument_family_str, instrument_source_str,
    pitch, velocity, qualities_str, ...}}; audio/<note_str>.wav."""
    folder = src if src.is_dir() else src.parent
    meta = json.loads((folder / "examples.json").read_text())
    sp = _split_from_name(folder.name, split)
    base = audio_dir or folder / "audio"
    families = sorted({m["instrument_family_str"] for m in meta.values()})
    for note, m in sorted(meta.items()):
        fam = m["instrument_family_str"].replace("_", " ")
        yield _row("nsynth", base / f"{note}.wav", "classification", "This music note is produced by", fam, sp,
                   f"nsynth:{note}", label=fam, label_set="nsynth_family",
                   options=[f.replace("_", " ") for f in families], group=f"nsynth:{m.get('instrument_str', note)}",
                   provenance={"pitch": m.get("pitch"), "velocity": m.get("velocity"),
                               "source": m.get("instrument_source_str"), "qualities": m.get("qualities_str")})


def from_musiccaps(src: Path, audio_dir: Path | None, split: str | None) -> Iterator[dict]:
    """musiccaps-public.csv: ytid, start_s, end_s, audioset_positive_labels, aspect_list, caption,
    author_id, is_balanced_subset, is_audioset_eval. is_audioset_eval=True rows are test."""
    base = audio_dir or src.parent / "audio"
    for r in _csv(src):
        sp = split or ("test" if r["is_audioset_eval"].strip().lower() == "true" else "train")
        audio = _find(base, [f"{r['ytid']}.wav", f"[{r['ytid']}]-[{r['start_s']}-{r['end_s']}].wav"])
        yield _row("musiccaps", audio, "caption_long", MUSIC_PROMPT, r["caption"].strip(), sp, f"musiccaps:{r['ytid']}",
                   group=f"musiccaps:{r['ytid']}")
        try:
            aspects = [str(a) for a in ast.literal_eval(r["aspect_list"])]
        except (ValueError, SyntaxError):
            aspects = []
        if aspects:
            yield _row("musiccaps", audio, "tagging", "Generate tags for this music.", ", ".join(aspects), sp,
                       f"musiccaps:{r['ytid']}:aspects", labels=aspects, group=f"musiccaps:{r['ytid']}")


CONVERTERS: dict[str, Callable[[Path, Path | None, str | None], Iterator[dict]]] = {
    "af1": from_af1, "clotho": from_clotho, "clotho-aqa": from_clotho_aqa, "audiocaps": from_audiocaps,
    "esc50": from_esc50, "fsd50k": from_fsd50k, "nsynth": from_nsynth, "musiccaps": from_musiccaps,
}


def convert(fmt: str, src: str | Path, out: str | Path, audio_dir: str | Path | None = None,
            split: str | None = None) -> int:
    """Convert one dataset file/folder in layout `fmt` to a manifest at `out`; returns the row count."""
    if fmt not in CONVERTERS:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(CONVERTERS)}")
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"{fmt} source {src} does not exist")
    rows = CONVERTERS[fmt](src, Path(audio_dir) if audio_dir else None, split)
    return write_manifest(out, rows)
