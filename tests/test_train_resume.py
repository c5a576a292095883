"""Checkpoints: atomic saves, and --resume continues exactly (same losses as an uninterrupted run)."""

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from audioflamingo.train import train
from audioflamingo.train.checkpoint import latest_checkpoint, load_checkpoint
from audioflamingo.train.data import AudioBytes, read_manifest, read_shards
from train_fixtures import tiny_config, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize("stage", ["sft", "clap"])
def test_resume_after_kill_equals_uninterrupted(corpus, tmp_path, stage):
    # dropout on and few-shot sampling on, so RNG states and data position both matter
    over = {"max_steps": 7, "save_every": 2, "model_overrides": {"transform.dropout": 0.3},
            "data.icl_fraction": 0.5, "data.icl_shots": [1, 2], "optim.schedule": "cosine", "optim.warmup_steps": 2}
    full = train(tiny_config(corpus, tmp_path / "full", stage, **over))
    first = train(tiny_config(corpus, tmp_path / "cut", stage, stop_after_steps=5, **over))  # "killed" after step 5
    assert first["step"] == 5 and latest_checkpoint(tmp_path / "cut").name == "step-000004"
    resumed = train(tiny_config(corpus, tmp_path / "cut", stage, **over), resume=True)
    assert len(full["losses"]) == len(resumed["losses"]) == 7
    assert resumed["losses"] == full["losses"]  # bit-identical, steps 5..7 recomputed from step 4's state
    assert resumed["losses"][:4] == first["losses"][:4]
    wa, _ = load_checkpoint(latest_checkpoint(tmp_path / "full"))
    wb, _ = load_checkpoint(latest_checkpoint(tmp_path / "cut"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_checkpoint_holds_everything(corpus, tmp_path):
    train(tiny_config(corpus, tmp_path, "pretrain", max_steps=2, save_every=1, keep_checkpoints=1))
    ck = latest_checkpoint(tmp_path)
    assert ck.name == "step-000002" and [p.name for p in (tmp_path / "checkpoints").glob("step-*")] == ["step-000002"]
    weights, state = load_checkpoint(ck)
    assert {"step", "optimizer", "scheduler", "rng", "losses", "data_position"} <= set(state)
    assert all(k.startswith(("model.transform.", "model.lm.")) for k in weights)
    assert not any("encoder" in k for k in weights)  # frozen in pretrain: not stored
    assert "stage: pretrain" in (ck / "config.yaml").read_text()


def test_kill_during_save_leaves_previous_checkpoint_whole(corpus, tmp_path, monkeypatch):
    train(tiny_config(corpus, tmp_path, "sft", max_steps=2, save_every=2))
    good = latest_checkpoint(tmp_path)
    import audioflamingo.train.checkpoint as ckmod

    def dying_save(*a, **k):
        raise KeyboardInterrupt("killed while writing state.pt")

    monkeypatch.setattr(ckmod.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(corpus, tmp_path, "sft", max_steps=4, save_every=2), resume=True)
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path) == good
    weights, state = load_checkpoint(good)
    assert state["step"] == 2
    out = train(tiny_config(corpus, tmp_path, "sft", max_steps=4, save_every=2), resume=True)
    assert out["step"] == 4


def _write_shards(root: Path, rows: list[dict], out: Path) -> None:
    """WebDataset layout: KEY.wav + KEY.json ({"items": rows of that audio}), as the corpus exporter writes."""
    import io

    by_audio: dict = {}
    for r in rows:
        by_audio.setdefault(r["audio"], []).append(r)
    with tarfile.open(out, "w") as tar:
        for i, (audio, items) in enumerate(by_audio.items()):
            key = f"{i:05d}"
            for name, data in ((f"{key}.wav", Path(audio).read_bytes()),
                               (f"{key}.json", json.dumps({"items": [{**r, "audio": f"{key}.wav"} for r in items]}).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_webdataset_shards_train_like_the_manifest(corpus, tmp_path):
    rows = read_manifest(corpus / "train.jsonl")
    _write_shards(corpus, rows[:20], tmp_path / "a.tar")
    _write_shards(corpus, rows[20:], tmp_path / "b.tar")
    store = AudioBytes()
    shard_rows = read_shards(str(tmp_path / "*.tar"), store)
    assert [r["id"] for r in shard_rows] == [r["id"] for r in rows]
    assert len(store) == len({r["audio"] for r in rows[:20]}) + len({r["audio"] for r in rows[20:]})
    a = train(tiny_config(corpus, tmp_path / "m", "sft", max_steps=2))["losses"]
    b = train(tiny_config(corpus, tmp_path / "s", "sft", max_steps=2, **{"data.train": [str(tmp_path / "*.tar")]}))["losses"]
    assert a == pytest.approx(b, rel=1e-6)


def test_cli_train_with_overrides_writes_metrics_and_tensorboard(corpus, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"stage: sft\nmodel: tiny\nout_dir: {tmp_path / 'run'}\nbatch_size: 4\nmicro_batch_size: 2\n"
                   f"data: {{train: [{corpus / 'train.jsonl'}], val: [{corpus / 'val.jsonl'}]}}\n")
    r = subprocess.run([sys.executable, "-m", "audioflamingo", "train", "-c", str(cfg), "--max_steps=2", "--log_every=1",
                        "--progress=false"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines if "loss" in l] == [1, 2]
    assert all(k in lines[-2] or k in lines[-1] for k in ("tokens_per_s", "lr", "grad_norm"))
    assert list((tmp_path / "run/tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "run/model/model.safetensors").is_file()
    from audioflamingo import load_model

    m = load_model(tmp_path / "run/model")
    assert isinstance(m.ask((torch.zeros(8000).numpy(), 16000), "What?", max_new_tokens=3), str)
    bad = subprocess.run([sys.executable, "-m", "audioflamingo", "train", "-c", str(cfg), "--no_such_key=1"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "no_such_key" in bad.stderr
