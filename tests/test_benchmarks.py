import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_benchmark_suite_writes_its_headline_keys(tmp_path):
    r = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["generation"]["cached_vs_recompute_speedup"] > 0
    assert 0 < res["training"]["fraction_of_peak"] < 1.5
    assert (tmp_path / "results.md").read_text().startswith("# Benchmark results")


def test_benchmark_sections_import():
    for name in ("common", "generation", "encoder", "training", "pipeline", "memory"):
        __import__(f"benchmarks.{name}")
