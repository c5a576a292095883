"""build_index: manifests of synthetic sines, planted neighbours, extending without re-embedding, the cache."""

import json
import os

import numpy as np
import pytest

from audioflamingo.retrieval import AudioIndex, FingerprintMismatch, NeighbourConfig, RetrievalError, build_index, retrieve
from audioflamingo.data.manifest import ManifestError
from audioflamingo.retrieval.build import read_manifest
from audioflamingo.retrieval.spectral import SpectralEmbedder


class CountingEmbedder(SpectralEmbedder):
    """The spectral embedder, recording which files it was asked to embed."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.embedded: list[str] = []

    def embed_audio(self, audios):
        self.embedded += [os.path.basename(str(a)) for a in audios]
        return super().embed_audio(audios)


FREQS = [200, 212, 1000, 1060, 4000, 4200, 600]


def write_manifest(tmp_path, make_wav, freqs, name="m.jsonl", split="train", start=0, append=False):
    rows = []
    for i, f in enumerate(freqs, start):
        make_wav(f"s{i}.wav", seconds=0.5, freq=f, seed=i)
        rows.append({"id": f"s{i}", "audio": f"s{i}.wav", "answer": f"{f} Hz", "prompt": "pitch?", "dataset": "sines",
                     "task": "classification", "split": split})  # fmt: skip
    with open(tmp_path / name, "a" if append else "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    return tmp_path / name


def test_planted_neighbours_are_found(tmp_path, make_wav):
    manifest = write_manifest(tmp_path, make_wav, FREQS)
    emb = CountingEmbedder()
    index = build_index(manifest, tmp_path / "ix", emb, progress=False)
    assert len(index) == 7 and index.split == "train" and index.fingerprint == emb.embedding_fingerprint()
    query = make_wav("q.wav", seconds=0.5, freq=4100, seed=99)
    (shots,) = retrieve(index, emb, [str(query)], NeighbourConfig(k=2, order="nearest_first"))
    assert [s.answer for s in shots] == ["4000 Hz", "4200 Hz"] or [s.answer for s in shots] == ["4200 Hz", "4000 Hz"]
    assert shots[0].score >= shots[1].score > 0.5


def test_extend_embeds_only_new_files(tmp_path, make_wav):
    manifest = write_manifest(tmp_path, make_wav, FREQS[:4])
    emb = CountingEmbedder()
    build_index(manifest, tmp_path / "ix", emb, progress=False)
    assert sorted(emb.embedded) == ["s0.wav", "s1.wav", "s2.wav", "s3.wav"]
    emb.embedded.clear()
    write_manifest(tmp_path, make_wav, FREQS[4:], start=4, append=True)
    index = build_index(manifest, tmp_path / "ix", emb, progress=False)
    assert sorted(emb.embedded) == ["s4.wav", "s5.wav", "s6.wav"] and len(index) == 7
    emb.embedded.clear()
    build_index(manifest, tmp_path / "ix", emb, progress=False)  # nothing new
    assert emb.embedded == []
    assert AudioIndex.load(tmp_path / "ix").ids == [f"s{i}" for i in range(7)]


def test_cache_serves_a_rebuilt_index_and_notices_changed_files(tmp_path, make_wav):
    manifest = write_manifest(tmp_path, make_wav, FREQS[:3])
    emb = CountingEmbedder()
    build_index(manifest, tmp_path / "ix", emb, progress=False)
    for f in ("index.faiss", "items.jsonl", "meta.json"):  # drop the index, keep its embedding cache
        (tmp_path / "ix" / f).unlink()
    make_wav("s1.wav", seconds=0.7, freq=900, seed=5)  # s1 changes (size and mtime)
    emb.embedded.clear()
    build_index(manifest, tmp_path / "ix", emb, progress=False)
    assert emb.embedded == ["s1.wav"]


def test_items_sharing_one_file_embed_it_once(tmp_path, make_wav):
    make_wav("shared.wav", seconds=0.5, freq=300)
    rows = [{"id": f"q{i}", "audio": "shared.wav", "answer": f"a{i}", "split": "train"} for i in range(3)]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    emb = CountingEmbedder()
    index = build_index(tmp_path / "m.jsonl", tmp_path / "ix", emb, progress=False)
    assert emb.embedded == ["shared.wav"] and len(index) == 3


def test_only_the_requested_split_is_indexed(tmp_path, make_wav):
    manifest = write_manifest(tmp_path, make_wav, FREQS[:3])
    write_manifest(tmp_path, make_wav, FREQS[3:5], start=3, split="test", append=True)
    index = build_index(manifest, tmp_path / "ix", CountingEmbedder(), progress=False)
    assert index.ids == ["s0", "s1", "s2"] and {r["split"] for r in index.rows} == {"train"}
    with pytest.raises(RetrievalError, match="no rows of split 'val'"):
        build_index(manifest, tmp_path / "ix2", CountingEmbedder(), split="val", progress=False)
    with pytest.raises(RetrievalError, match="holds split 'train'"):
        build_index(manifest, tmp_path / "ix", CountingEmbedder(), split="test", progress=False)


def test_extending_with_another_model_fails_loudly(tmp_path, make_wav):
    manifest = write_manifest(tmp_path, make_wav, FREQS[:2])
    build_index(manifest, tmp_path / "ix", CountingEmbedder(), progress=False)
    with pytest.raises(FingerprintMismatch, match="rebuild"):
        build_index(manifest, tmp_path / "ix", CountingEmbedder(bands=16), progress=False)
    with pytest.raises(FingerprintMismatch):
        retrieve(AudioIndex.load(tmp_path / "ix"), CountingEmbedder(bands=16), [str(tmp_path / "s0.wav")])


def test_read_manifest_resolves_paths_and_rejects_bad_rows(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "m.jsonl").write_text(json.dumps({"id": 1, "audio": "x/a.wav", "answer": "y"}) + "\n")
    (row,) = read_manifest(tmp_path / "sub" / "m.jsonl", split=None)
    assert row["audio"] == str((tmp_path / "sub" / "x" / "a.wav").resolve()) and row["id"] == "1"
    (tmp_path / "bad.jsonl").write_text(json.dumps({"id": "1", "audio": "a.wav"}) + "\n")
    with pytest.raises(ManifestError, match=r"bad.jsonl:1: missing required key 'answer'"):
        read_manifest(tmp_path / "bad.jsonl", split=None)
    (tmp_path / "dup.jsonl").write_text(2 * (json.dumps({"id": "1", "audio": "a.wav", "answer": "b"}) + "\n"))
    with pytest.raises(RetrievalError, match="more than once"):
        read_manifest(tmp_path / "dup.jsonl", split=None)


def test_spectral_embedder_is_deterministic_and_normalised(tmp_path, make_wav):
    p = make_wav("a.wav", seconds=0.5, freq=440)
    e = SpectralEmbedder()
    a, b = e.embed_audio([str(p)]), e.embed_audio([str(p)])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
