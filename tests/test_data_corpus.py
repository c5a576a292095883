"""The `tiny` corpus plan, built once: split and reserved-source properties, resume, check, stats."""

import json
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
import soundfile as sf

from audioflamingo.data.audiofile import fingerprint, pcm_hash
from audioflamingo.data.build import BuildConfig, build_corpus, default_cache
from audioflamingo.data.check import check_manifests
from audioflamingo.data.debian import RESERVED_VOICES, is_reserved
from audioflamingo.data.manifest import read_manifest, resolve_audio
from audioflamingo.data.shards import export_shards, read_shard
from audioflamingo.data.splits import HELDOUT
from audioflamingo.data.stats import manifest_stats, plot_stats

SPLITS = ("train", "val", "test")
needs_tools = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("dpkg-deb") is None,
    reason="the corpus builder needs espeak-ng and dpkg-deb (scripts/setup.sh --dev installs them)",
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    summary = build_corpus(BuildConfig(out=str(out), plan="tiny", seed=0, cache=str(default_cache())))
    return out, summary


def _rows(out: Path, names=SPLITS):
    return {n: read_manifest(out / f"{n}.jsonl") for n in names}


@needs_tools
def test_tiny_has_every_kind_and_valid_rows(tiny):
    out, summary = tiny
    rows = _rows(out)
    all_rows = [r for rs in rows.values() for r in rs]
    assert summary["items"]["train"] > 100 and rows["val"] and rows["test"]
    kinds = {r["source"] for r in all_rows}
    assert {"sfx", "speech", "signal", "mixture"} <= kinds
    tasks = {r["task"] for r in all_rows}
    assert {"caption", "classification", "aqa", "dialog"} <= tasks
    for r in all_rows:
        assert r["split"] in SPLITS and r["provenance"]
        if "options" in r:
            assert r["answer"] in r["options"]
        x, sr = sf.read(resolve_audio(r, out / "train.jsonl"))
        assert sr == 16000 and x.ndim == 1


@needs_tools
def test_tiny_splits_share_no_group_sound_or_sentence(tiny):
    out, _ = tiny
    rows = _rows(out, SPLITS + ("fewshot_support", "fewshot_query"))
    side = lambda name: "heldout" if name.startswith("fewshot") else name  # noqa: E731
    where = defaultdict(set)  # key -> sides it appears on
    for name, rs in rows.items():
        for r in rs:
            path = resolve_audio(r, out / "train.jsonl")
            x, _ = sf.read(path, dtype="float32")
            where["group:" + r["group"]].add(side(name))
            where["pcm:" + pcm_hash(x)].add(side(name))
            where["fp:" + fingerprint(x, 16000)].add(side(name))
            if r["task"] == "transcription":
                where["text:" + r["answer"].lower()].add(side(name))
    crossing = {k: v for k, v in where.items() if len(v) > 1}
    assert not crossing, f"on two sides: {list(crossing.items())[:5]}"


@needs_tools
def test_tiny_heldout_categories_never_in_training_and_no_reserved_source(tiny):
    out, _ = tiny
    rows = _rows(out, SPLITS + ("fewshot_support", "fewshot_query"))
    held_labels = {v for _, v in HELDOUT}
    fewshot = rows["fewshot_support"] + rows["fewshot_query"]
    assert fewshot and all(r["heldout"] and r["heldout_reason"] for r in fewshot)
    assert {x for r in fewshot for x in r["heldout_reason"]} <= {f"{k}={v}" for k, v in HELDOUT}
    for name in SPLITS:
        for r in rows[name]:
            assert r.get("label") not in held_labels, r
            assert not any(f" {v}" in r["answer"].lower() for v in ("glass breaking", "door ", "snow")), r
    for rs in rows.values():
        for r in rs:
            prov = json.dumps(r["provenance"])
            assert not is_reserved(r["provenance"].get("package", "")), r
            assert not any(f":{v}" in prov or f'"{v}"' in prov for v in RESERVED_VOICES), r


@needs_tools
def test_tiny_rebuild_resumes_and_is_deterministic(tiny):
    out, summary = tiny
    log = out / "work" / "measure.jsonl"
    before_log, before_train = log.read_text(), (out / "train.jsonl").read_text()
    again = build_corpus(BuildConfig(out=str(out), plan="tiny", seed=0, cache=str(default_cache())))
    assert log.read_text() == before_log  # nothing rendered again
    assert (out / "train.jsonl").read_text() == before_train
    assert again["items"] == summary["items"]


@needs_tools
def test_tiny_check_stats_and_shards(tiny, tmp_path):
    out, _ = tiny
    manifests = [out / f"{n}.jsonl" for n in SPLITS]
    assert check_manifests(manifests).ok
    st = manifest_stats(manifests)
    assert st["rows"] == sum(len(read_manifest(m)) for m in manifests)
    assert set(st["per_split"]) == set(SPLITS) and st["hours"] > 0
    plot_stats(st, tmp_path / "stats.png")
    assert (tmp_path / "stats.png").read_bytes()[:4] == b"\x89PNG"
    shards = export_shards(out / "val.jsonl", tmp_path / "shards", max_items=10)
    back = [row for s in shards for row, audio in read_shard(s) if audio[:4] == b"RIFF"]
    assert sorted(r["id"] for r in back) == sorted(r["id"] for r in read_manifest(out / "val.jsonl"))


@needs_tools
def test_tiny_same_seed_same_corpus_from_scratch(tiny, tmp_path):
    out, _ = tiny
    build_corpus(BuildConfig(out=str(tmp_path), plan="tiny", seed=0, cache=str(default_cache()), workers=1))
    for name in SPLITS + ("fewshot_support", "fewshot_query"):
        assert (tmp_path / f"{name}.jsonl").read_text() == (out / f"{name}.jsonl").read_text(), name
    for rel in ("audio/signal/beeps_00000.wav", "audio/music/chord_00000.wav"):
        if (out / rel).exists():
            assert (tmp_path / rel).read_bytes() == (out / rel).read_bytes(), rel
