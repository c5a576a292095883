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
