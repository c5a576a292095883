"""benchmarks/retrieval.py runs end to end at a toy size and reports what `python -m benchmarks` reads."""

import json

from benchmarks import retrieval as bench


def test_benchmark_runs_small_and_is_json(monkeypatch, capsys):
    monkeypatch.setattr(bench, "QUERIES", 10)
    out = bench.run(quick=True, sizes=[600], data=("lowrank",))
    json.dumps(out)  # JSON-able
    kinds = [r["kind"] for r in out["results"]]
    assert kinds.count("flat") == 1 and kinds.count("ivf") == 3 and kinds.count("hnsw") == 4
    flat = out["results"][0]
    assert flat["recall@10"] == 1.0 and out["flat_600_p50_ms"] == flat["p50_ms"]
    assert all(0.0 <= r["recall@10"] <= 1.0 and r["p99_ms"] >= r["p50_ms"] for r in out["results"])
    assert out["target_met"] == {"lowrank": None}  # 1 M not run
    assert out["table"].count("\n") == len(out["results"]) + 1
    assert "target at 1 M" in capsys.readouterr().out


def test_plans():
    assert ("lowrank", 1_000_000) not in bench.plan(quick=True)
    assert ("lowrank", 1_000_000) in bench.plan(quick=False)


def test_brute_force_ground_truth_equals_the_flat_index():
    import numpy as np

    from audioflamingo.retrieval.index import AudioIndex

    rng = np.random.default_rng(0)
    base, queries = bench.random_unit(rng, 2000, "lowrank"), bench.random_unit(rng, 20, "lowrank")
    flat = AudioIndex.build([str(i) for i in range(2000)], base, None, "fp").search(queries, bench.K)[1]
    np.testing.assert_array_equal(bench.exact_top(base, queries, chunk=300), flat)


def test_normalize_does_not_copy_unit_rows():
    import numpy as np

    from audioflamingo.retrieval.index import normalize

    x = bench.random_unit(np.random.default_rng(1), 10, "iid")
    assert normalize(x) is x or np.shares_memory(normalize(x), x)
