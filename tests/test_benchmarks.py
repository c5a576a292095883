import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_benchmark_suite_writes_its_headline_keys(tmp_path):
    r = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--device", "cpu", "--out", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["generation"]["cached_vs_recompute_speedup"] > 0
    assert 0 < res["training"]["fraction_of_peak"] < 1.5
    assert [r["rule"] for r in res["decoding"]["rows"]] == ["greedy", "beam 3", "mbr 8", "mbr 16"]
    assert res["decoding"]["mbr16_vs_greedy_one_clip"] > 0
    assert (tmp_path / "results.md").read_text().startswith("# Benchmark results")


def test_benchmark_sections_import():
    for name in ("common", "generation", "decoding", "encoder", "training", "pipeline", "memory"):
        __import__(f"benchmarks.{name}")


def _tiny():
    from audioflamingo.config import load_model_config
    from audioflamingo.model.loading import build_model

    return build_model(load_model_config("tiny")).eval()


def test_generation_row_cached_equals_recompute_and_counts_tokens():
    from audioflamingo.text import encode, pad_batch, single_text
    from benchmarks.generation import PrefixLM, _row

    model = _tiny()
    ids, _ = encode(model.tokenizer, single_text("Describe the sound.", None))
    ids, mask = pad_batch([ids], model.media.pad)  # (1, T)
    rate = model.config.audio.sample_rate
    clips = [model.load_clip((torch.randn(rate).numpy() * 0.1, rate))]
    row = _row("tiny", "short", 1, model, PrefixLM(model.lm), ids, mask, clips, torch.device("cpu"), 3, long=False)
    assert row["same_tokens"] == 1.0  # fp32 on CPU: the KV cache changes nothing
    assert row["lm_seq_c"] == ids.shape[1] + 25 and row["lm_seq_a"] == ids.shape[1]
    assert row["a_dec_ttft_s"] <= row["a_dec_total_s"] and row["c_dec_ttft_s"] <= row["c_dec_total_s"]
    assert row["a_e2e_tok_s"] < row["a_dec_tok_s"]  # adding the encoding can only slow it down
    assert row["cached_vs_recompute"] == pytest.approx((row["b_dec_total_s"] + row["encode_s"]) / (row["a_dec_total_s"] + row["encode_s"]))


def test_training_measure_counts_flops_and_time():
    from benchmarks.training import _batch, _measure, sft_optimizer

    model = _tiny().train()
    opt = sft_optimizer(model)
    batch = _batch(model, torch.device("cpu"), batch_size=2, seconds=1.0)
    row = _measure("tiny", model, opt, batch, torch.device("cpu"), steps=1, peak=1e9)
    assert row["gflop_per_step"] > 0 and row["step_s"] > 0
    assert row["fraction_of_peak"] == pytest.approx(row["achieved_gflop_s"] / 1.0)
    assert row["tokens_per_step"] == int(batch[1].sum()) and row["gpu_peak_mb"] is None


def test_device_helpers_on_cpu():
    from benchmarks.common import autocast, compute_dtype, decode_attention, peak_memory_mb, resolve_device

    dev = resolve_device("cpu")
    assert dev.type == "cpu" and compute_dtype(dev) == "fp32" and peak_memory_mb(dev) is None
    with autocast(dev), decode_attention(dev):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA"):
            resolve_device("cuda")


def test_missing_package_skips_section_and_failure_is_recorded(monkeypatch):
    import importlib

    from benchmarks import __main__ as suite

    def fake_import(name):
        if name == "benchmarks.pipeline":
            raise ModuleNotFoundError("No module named 'soundfile'", name="soundfile")
        raise RuntimeError("boom")

    monkeypatch.setattr(importlib, "import_module", fake_import)
    skipped = suite._run_section("pipeline", True, torch.device("cpu"), {})
    assert "soundfile" in skipped["skipped"] and "wheels" in skipped["skipped"]
    failed = suite._run_section("encoder", True, torch.device("cpu"), {})
    assert failed["error"] == "RuntimeError: boom"


def test_interleaved_flatness_check_reports_medians_and_ratio():
    from audioflamingo.text import encode, pad_batch, single_text
    from benchmarks.generation import _interleaved

    model = _tiny()
    ids, _ = encode(model.tokenizer, single_text("Describe the sound.", None))
    ids, mask = pad_batch([ids], model.media.pad)  # (1, T)
    rate = model.config.audio.sample_rate
    clips = {sec: [model.load_clip((torch.randn(sec * rate).numpy() * 0.1, rate))] for sec in (2, 1)}
    out = _interleaved("tiny", model, ids, mask, clips, torch.device("cpu"), 2, rounds=2)
    assert (out["short_audio_s"], out["long_audio_s"]) == (1, 2)
    assert out["long_over_short"] == pytest.approx(out["a_dec_total_s_long"] / out["a_dec_total_s_short"])
