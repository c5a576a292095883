"""AudioIndex: exact search finds planted vectors, approximate kinds agree with it, disk round trip, fingerprints."""

import json

import numpy as np
import pytest
import torch

from audioflamingo.retrieval.index import AudioIndex, FingerprintMismatch, IndexConfig, RetrievalError, normalize


def unit(rng, n, c):
    x = rng.standard_normal((n, c)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def rows_for(ids, split="train"):
    return [{"id": i, "audio": f"/a/{i}.wav", "answer": f"ans {i}", "split": split} for i in ids]


def test_normalize_unit_rows_zero_rows_and_torch():
    x = normalize(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)
    with pytest.raises(RetrievalError, match="NaN"):
        normalize(np.array([[np.nan, 1.0]]))
    with pytest.raises(RetrievalError, match="2-d"):
        normalize(np.ones(3))


def test_flat_finds_planted_neighbours_with_cosine_scores():
    rng = np.random.default_rng(0)
    base = unit(rng, 200, 16)
    ids = [f"x{i}" for i in range(200)]
    index = AudioIndex.build(ids, base * 7.0, rows_for(ids), "fp")  # scale must not matter: stored normalised
    queries = base[[3, 50, 199]] + 0.05 * unit(rng, 3, 16)  # (3, 16): each near one planted item
    scores, pos = index.search(queries, 5)
    assert pos.shape == (3, 5) and list(pos[:, 0]) == [3, 50, 199]
    q = normalize(queries)
    np.testing.assert_allclose(scores[:, 0], (q * base[[3, 50, 199]]).sum(1), rtol=1e-5)  # cosine by hand
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # nearest first


def test_add_skips_present_ids_and_checks_width_and_split():
    rng = np.random.default_rng(1)
    index = AudioIndex.build(["a", "b"], unit(rng, 2, 8), rows_for(["a", "b"]), "fp", split="train")
    assert index.add(["b", "c", "c"], unit(rng, 3, 8), rows_for(["b", "c", "c"])) == 1
    assert index.ids == ["a", "b", "c"] and len(index) == 3 and index._index.ntotal == 3
    with pytest.raises(RetrievalError, match="width 4"):
        index.add(["d"], unit(rng, 1, 4), rows_for(["d"]))
    with pytest.raises(RetrievalError, match="split 'test'"):
        index.add(["e"], unit(rng, 1, 8), rows_for(["e"], split="test"))


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_save_load_round_trip(tmp_path, kind):
    rng = np.random.default_rng(2)
    ids = [f"x{i}" for i in range(400)]
    cfg = IndexConfig(kind=kind, nlist=8 if kind == "ivf" else None)
    index = AudioIndex.build(ids, unit(rng, 400, 16), rows_for(ids), "fp-123", cfg, split="train")
    queries = unit(rng, 5, 16)
    before = index.search(queries, 4)
    index.save(tmp_path / "ix")
    meta = json.loads((tmp_path / "ix" / "meta.json").read_text())
    assert meta["fingerprint"] == "fp-123" and meta["count"] == 400 and meta["dim"] == 16 and meta["kind"] == kind
    loaded = AudioIndex.load(tmp_path / "ix", fingerprint="fp-123")
    assert loaded.ids == ids and loaded.rows == index.rows and loaded.split == "train"
    after = loaded.search(queries, 4)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_allclose(before[0], after[0], rtol=1e-6)
    np.testing.assert_allclose(loaded.vectors([7]), normalize(index.vectors([7])), atol=1e-6)


def test_fingerprint_mismatch_names_both_and_the_folder(tmp_path):
    index = AudioIndex.build(["a"], np.ones((1, 4)), rows_for(["a"]), "weights-A")
    index.save(tmp_path / "ix")
    index.check_fingerprint("weights-A")
    with pytest.raises(FingerprintMismatch) as err:
        AudioIndex.load(tmp_path / "ix", fingerprint="weights-B")
    msg = str(err.value)
    assert "weights-A" in msg and "weights-B" in msg and str(tmp_path / "ix") in msg


def test_load_of_a_folder_that_is_not_an_index(tmp_path):
    with pytest.raises(RetrievalError, match="not a retrieval index"):
        AudioIndex.load(tmp_path)


@pytest.mark.parametrize("kind,params", [("ivf", {"nlist": 16, "nprobe": 8}), ("hnsw", {"ef_search": 64})])
def test_approximate_recall_against_flat(kind, params):
    rng = np.random.default_rng(3)
    # clustered data, like real embeddings: 40 centres, points scattered around them
    centres = unit(rng, 40, 32)
    x = centres[rng.integers(0, 40, 3000)] + 0.3 * unit(rng, 3000, 32) * rng.random((3000, 1))  # (3000, 32)
    ids = [str(i) for i in range(3000)]
    q = centres[rng.integers(0, 40, 100)] + 0.3 * unit(rng, 100, 32)  # (100, 32)
    exact = AudioIndex.build(ids, x, None, "fp").search(q, 10)[1]
    approx = AudioIndex.build(ids, x, None, "fp", IndexConfig(kind=kind, **params)).search(q, 10)[1]
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.9, recall


def test_search_on_more_hits_than_items_pads_with_minus_one():
    index = AudioIndex.build(["a", "b"], np.eye(2), None, "fp")
    scores, pos = index.search(np.array([[1.0, 0.0]]), 4)
    assert list(pos[0]) == [0, 1, -1, -1]
    np.testing.assert_allclose(scores[0, :2], [1.0, 0.0], atol=1e-6)


def test_single_queries_run_on_one_thread_and_restore_the_setting():
    import faiss

    before = faiss.omp_get_max_threads()
    index = AudioIndex.build(["a", "b"], np.eye(2), None, "fp")
    index.search(np.array([[1.0, 0.0]]), 1)
    assert faiss.omp_get_max_threads() == before


def test_stored_vectors_are_readable_after_extending_an_ivf_index():
    rng = np.random.default_rng(4)
    x = unit(rng, 500, 8)
    index = AudioIndex.build([str(i) for i in range(400)], x[:400], None, "fp", IndexConfig(kind="ivf", nlist=4))
    np.testing.assert_allclose(index.vectors([3]), x[3:4], atol=1e-6)
    index.add([str(i) for i in range(400, 500)], x[400:])
    np.testing.assert_allclose(index.vectors([3, 450]), x[[3, 450]], atol=1e-6)
