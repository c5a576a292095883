"""`audioflamingo data ...` subcommands: parse, call the library, exit codes."""

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile as sf

from audioflamingo.data.cli import add_commands

FIX = Path(__file__).parent / "fixtures"


def run(argv):
    parser = argparse.ArgumentParser(prog="audioflamingo")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_convert_check_stats_and_shards(tmp_path, capsys):
    m = tmp_path / "esc.jsonl"
    assert run(["data", "convert", "esc50", str(FIX / "esc50"), "--audio-dir", str(tmp_path / "a"), "--out", str(m)]) == 0
    assert run(["data", "check", str(m)]) == 1  # no audio yet
    out = capsys.readouterr().out
    assert "esc.jsonl:1: missing audio" in out and "4 missing audio" in out
    rng = np.random.default_rng(0)
    (tmp_path / "a").mkdir()
    for r in map(json.loads, m.read_text().splitlines()):
        sf.write(r["audio"], (0.1 * rng.standard_normal(800)).astype(np.float32), 16000)
    assert run(["data", "check", str(m)]) == 0
    assert run(["data", "stats", str(m), "--png", str(tmp_path / "s.png")]) == 0
    out = capsys.readouterr().out
    assert "per split: train 2, val 1, test 1" in out and (tmp_path / "s.png").exists()
    assert run(["data", "export-shards", str(m), "--out", str(tmp_path / "sh"), "--max-items", "2"]) == 0
    assert sorted(p.name for p in (tmp_path / "sh").iterdir()) == ["shard-000000.tar", "shard-000001.tar"]
