"""Converters from AF1's and public benchmarks' layouts, each on a fixture in the exact layout."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audioflamingo.data.check import check_manifests
from audioflamingo.data.convert import convert
from audioflamingo.data.manifest import read_manifest

FIX = Path(__file__).parent / "fixtures"


def _audio(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sf.write(path, (0.1 * rng.standard_normal(1600)).astype(np.float32), 16000)


@pytest.fixture
def fx(tmp_path):
    def _copy(name):
        dst = tmp_path / name
        shutil.copytree(FIX / name, dst)
        return dst

    return _copy


def _convert_and_check(fmt, src, tmp_path, n_audio_seed=0, **kw):
    out = tmp_path / f"{fmt}.jsonl"
    n = convert(fmt, src, out, **kw)
    rows = read_manifest(out)
    assert n == len(rows)
    for i, p in enumerate(sorted({r["audio"] for r in rows})):
        _audio(Path(p), n_audio_seed + i)
    report = check_manifests([out])
    assert report.ok, report.text()
    return rows


def test_af1(fx, tmp_path):
    d = fx("af1")
    rows = _convert_and_check("af1", d / "audiocaps-AudioCaptioning-train.json", tmp_path, audio_dir=tmp_path / "a")
    assert [r["task"] for r in rows] == ["caption"] * 3
    assert rows[2]["answer"] == "Rain falls on a metal roof."
    assert rows[2]["audio"] == str(tmp_path / "a" / "Yxyz789.flac")
    assert rows[0]["prompt"] == "describe the sound in a sentence." and rows[0]["dataset"] == "audiocaps"
    assert {r["split"] for r in rows} == {"train"}


def test_af1_without_audio_dir_uses_dataset_path(fx, tmp_path):
    d = fx("af1")
    f = d / "audiocaps-AudioCaptioning-train.json"
    data = json.loads(f.read_text())
    data["dataset_path"] = str(tmp_path / "root")
    f.write_text(json.dumps(data))
    rows = _convert_and_check("af1", f, tmp_path)
    assert rows[0]["audio"] == str(tmp_path / "root" / "audio" / "train" / "Yabc123.flac")


def test_clotho(fx, tmp_path):
    d = fx("clotho")
    rows = _convert_and_check("clotho", d / "clotho_captions_evaluation.csv", tmp_path)
    assert len(rows) == 10 and {r["split"] for r in rows} == {"test"}
    assert rows[5]["audio"] == str(d / "evaluation" / "Beach, Waves.wav")
    assert rows[5]["answer"] == "Waves crash against the shore, then recede."
    assert len({r["group"] for r in rows}) == 2


def test_clotho_aqa(fx, tmp_path):
    d = fx("clotho_aqa")
    rows = _convert_and_check("clotho-aqa", d / "clotho_aqa_test.csv", tmp_path)
    assert [r["answer"] for r in rows] == ["yes", "yes", "machine"]
    assert rows[2]["prompt"] == "What is making the noise?" and rows[0]["split"] == "test"
    assert rows[1]["provenance"]["confidence"] == "maybe"


def test_audiocaps(fx, tmp_path):
    d = fx("audiocaps")
    _audio(d / "val" / "Y" "tdWhHV3X25Q.wav", 9)  # a downloader that prefixes "Y": found and used
    rows = _convert_and_check("audiocaps", d / "val.csv", tmp_path)
    assert [r["split"] for r in rows] == ["val", "val"]
    assert rows[0]["audio"] == str(d / "val" / "vfY_TJq7n_U.wav")
    assert rows[1]["audio"] == str(d / "val" / "YtdWhHV3X25Q.wav")
    assert rows[1]["answer"] == "A goat bleats while people talk"


def test_esc50(fx, tmp_path):
    d = fx("esc50")
    rows = _convert_and_check("esc50", d, tmp_path)
    assert [r["split"] for r in rows] == ["train", "train", "val", "test"]
    assert rows[1]["answer"] == "chirping birds" and rows[1]["answer"] in rows[1]["options"]
    assert rows[0]["options"] == ["chirping birds", "dog", "hand saw", "pig"]
    assert rows[0]["audio"] == str(d / "audio" / "1-100032-A-0.wav")


def test_fsd50k(fx, tmp_path):
    d = fx("fsd50k")
    rows = _convert_and_check("fsd50k", d, tmp_path)
    assert [r["split"] for r in rows] == ["train", "val", "test"]
    assert rows[0]["labels"][:2] == ["Electric guitar", "Guitar"] and len(rows[0]["labels"]) == 5
    assert rows[2]["audio"] == str(d / "FSD50K.eval_audio" / "37199.wav")


def test_nsynth(fx, tmp_path):
    d = fx("nsynth")
    rows = _convert_and_check("nsynth", d / "nsynth-valid", tmp_path)
    by = {r["id"]: r for r in rows}
    r = by["nsynth:keyboard_acoustic_004-060-025"]
    assert r["answer"] == "keyboard" and r["split"] == "val" and r["options"] == ["bass", "keyboard"]
    assert r["provenance"]["pitch"] == 60 and r["audio"].endswith("audio/keyboard_acoustic_004-060-025.wav")


def test_musiccaps(fx, tmp_path):
    d = fx("musiccaps")
    rows = _convert_and_check("musiccaps", d / "musiccaps-public.csv", tmp_path)
    assert [(r["task"], r["split"]) for r in rows] == [("caption_long", "test"), ("tagging", "test"),
                                                       ("caption_long", "train"), ("tagging", "train")]
    assert rows[1]["labels"] == ["low quality", "sustained strings melody", "soft female vocal"]


def test_unknown_split_is_an_error(tmp_path):
    (tmp_path / "captions.csv").write_text("file_name,caption_1\na.wav,x\n")
    with pytest.raises(ValueError, match="--split"):
        convert("clotho", tmp_path / "captions.csv", tmp_path / "o.jsonl")
