"""The AF1 neighbour rule: one hit per distinct file, never the query's own file, nearest k, then ordered."""

import numpy as np
import pytest

from audioflamingo.retrieval.index import AudioIndex, RetrievalError
from audioflamingo.retrieval.neighbours import NeighbourConfig, select_neighbours


def line_index(items, split="train"):
    """Items on a half circle: item (id, file, angle_deg[, dataset]); cosine falls with the angle gap."""
    ids = [it[0] for it in items]
    ang = np.radians([it[2] for it in items])
    vecs = np.stack([np.cos(ang), np.sin(ang)], axis=1)  # (n, 2)
    rows = [{"id": it[0], "audio": f"/data/{it[1]}", "answer": it[0], "prompt": "p", "split": split,
             "dataset": it[3] if len(it) > 3 else "d"} for it in items]  # fmt: skip
    return AudioIndex.build(ids, vecs, rows, "fp", split=split)


def at(deg):
    return np.array([[np.cos(np.radians(deg)), np.sin(np.radians(deg))]])  # (1, 2)


ITEMS = [("a", "A.wav", 0), ("b", "B.wav", 10), ("c", "C.wav", 20), ("d", "D.wav", 30), ("e", "E.wav", 40)]


def ids_of(shots):
    return [s.id for s in shots]


def test_nearest_k_in_the_requested_order():
    index = line_index(ITEMS)
    first = select_neighbours(index, at(12), ["/q.wav"], NeighbourConfig(k=3, order="nearest_first"))[0]
    assert ids_of(first) == ["b", "c", "a"]
    np.testing.assert_allclose([s.score for s in first], np.cos(np.radians([2, 8, 12])), rtol=1e-5)
    last = select_neighbours(index, at(12), ["/q.wav"], NeighbourConfig(k=3))[0]  # default: nearest last
    assert ids_of(last) == ["a", "c", "b"]


def test_own_file_and_own_id_are_never_returned():
    index = line_index(ITEMS + [("b2", "B.wav", 11)])  # a second item (another question) on file B
    shots = select_neighbours(index, at(10), ["/data/B.wav"], NeighbourConfig(k=3, order="nearest_first"))[0]
    assert ids_of(shots) == ["c", "a", "d"]  # neither b nor b2: same file as the query
    shots = select_neighbours(index, at(0), [None], NeighbourConfig(k=2, order="nearest_first"), query_ids=["a"])[0]
    assert ids_of(shots) == ["b", "c"]  # in-memory query: only its id is excluded; b2 shares b's file


def test_one_hit_per_distinct_file_and_search_widens():
    # ten items share file X right next to the query, so the first k * oversample hits are all X
    items = [(f"x{i}", "X.wav", 1 + 0.1 * i) for i in range(10)] + [("y", "Y.wav", 20), ("z", "Z.wav", 30)]
    index = line_index(items)
    shots = select_neighbours(index, at(0), ["/q.wav"], NeighbourConfig(k=3, oversample=1, order="nearest_first"))[0]
    assert ids_of(shots) == ["x0", "y", "z"]
    assert len({s.audio for s in shots}) == 3


def test_fewer_files_than_k_warns_and_returns_what_exists():
    index = line_index(ITEMS[:2])
    with pytest.warns(UserWarning, match="fewer than 4"):
        shots = select_neighbours(index, at(0), ["/q.wav"], NeighbourConfig(k=4))[0]
    assert sorted(ids_of(shots)) == ["a", "b"]


def test_shuffle_is_seeded_per_query_and_keeps_the_nearest_k():
    items = [(f"i{j}", f"F{j}.wav", j) for j in range(40)]
    index = line_index(items)
    queries = np.concatenate([at(d) for d in (5, 15, 25)])  # (3, 2)
    audios, qids = ["/q1.wav", "/q2.wav", "/q3.wav"], ["q1", "q2", "q3"]

    def run(seed):
        return [ids_of(s) for s in select_neighbours(index, queries, audios, NeighbourConfig(k=8, order="shuffle", seed=seed), qids)]

    nearest = [ids_of(s) for s in select_neighbours(index, queries, audios, NeighbourConfig(k=8, order="nearest_first"), qids)]
    a, b, c = run(0), run(0), run(1)
    assert a == b
    assert a != c
    assert all(sorted(x) == sorted(n) for x, n in zip(a, nearest))
    assert a != nearest
    # the order of a query does not depend on the batch it came in
    alone = select_neighbours(index, queries[1:2], audios[1:2], NeighbourConfig(k=8, order="shuffle", seed=0), qids[1:2])
    assert ids_of(alone[0]) == a[1]


def test_same_dataset_and_task_only_when_asked():
    index = line_index([("a", "A.wav", 0, "cats"), ("b", "B.wav", 5, "dogs"), ("c", "C.wav", 50, "cats")])
    index.rows[0]["task"], index.rows[2]["task"] = "caption", "aqa"
    cfg = NeighbourConfig(k=1, order="nearest_first")
    assert ids_of(select_neighbours(index, at(4), ["/q.wav"], cfg)[0]) == ["b"]
    assert ids_of(select_neighbours(index, at(4), ["/q.wav"], cfg, query_rows=[{"dataset": "cats"}])[0]) == ["a"]
    query = {"dataset": "cats", "task": "aqa"}  # a's task differs: c, further away, is the one
    assert ids_of(select_neighbours(index, at(4), ["/q.wav"], cfg, query_rows=[query])[0]) == ["c"]


def test_an_item_from_another_split_is_refused():
    index = line_index(ITEMS)
    index.rows[1]["split"] = "test"  # a corrupted index: a test item among train items
    with pytest.raises(RetrievalError, match="split 'test'"):
        select_neighbours(index, at(10), ["/q.wav"], NeighbourConfig(k=2))


def test_bad_config_is_rejected():
    with pytest.raises(RetrievalError, match="order"):
        NeighbourConfig(order="random")


def test_near_duplicates_can_be_dropped():
    index = line_index([("copy", "COPY.wav", 0), ("b", "B.wav", 10), ("c", "C.wav", 20)])
    cfg = NeighbourConfig(k=1, order="nearest_first", max_score=0.999)
    assert ids_of(select_neighbours(index, at(0), ["/q.wav"], cfg)[0]) == ["b"]
    assert ids_of(select_neighbours(index, at(0), ["/q.wav"], NeighbourConfig(k=1))[0]) == ["copy"]
