"""Streamed WebDataset shards (data.stream): shard patterns, every item once per epoch over processes and
workers, exact resume mid-epoch, and the same training as the manifest when the order is the same."""

from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from audioflamingo.config import ConfigError
from audioflamingo.data.shards import export_shards
from audioflamingo.train import train
from audioflamingo.train.blend import Blend
from audioflamingo.train.checkpoint import latest_checkpoint, load_checkpoint
from audioflamingo.train.config import DataConfig
from audioflamingo.train.data import ClipStore, DataError, RowFilter, read_manifest, shard_paths
from audioflamingo.train.stream import StreamSource
from train_fixtures import free_port, join_process_group, tiny_config, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = write_corpus(tmp_path_factory.mktemp("corpus"))
    export_shards(root / "train.jsonl", root / "shards", max_items=7)  # 39 rows (3 per tone clip) -> 7 shards
    return root


def _source(corpus, rank=0, world=1, batch_size=4, keep=None, blend=None, **data):
    cfg = DataConfig(train=[str(corpus / "shards")], stream=True, **data)
    clips = ClipStore(16000, None)
    return StreamSource(cfg, keep or RowFilter("chat"), blend or Blend(), 0, batch_size, rank, world, clips), clips


def _epoch(source, epoch):
    return [(p, row["id"]) for pos in range(source.steps_per_epoch) for p, row in source.take(epoch, pos)]


def test_shard_patterns(corpus, tmp_path):
    shards = sorted(str(p) for p in (corpus / "shards").glob("*.tar"))
    assert len(shards) == 7
    assert shard_paths(str(corpus / "shards")) == shards
    assert shard_paths(str(corpus / "shards/shard-{000001..000003}.tar")) == shards[1:4]
    assert shard_paths(str(corpus / "shards/shard-*.tar")) == shards
    with pytest.raises(DataError, match="000009"):
        shard_paths(str(corpus / "shards/shard-{000004..000009}.tar"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .tar"):
        shard_paths(str(tmp_path / "empty"))


@pytest.mark.parametrize("workers", [0, 2])
def test_every_item_once_per_epoch_across_two_processes(corpus, workers):
    """chat rows: 12, batch 4 over 2 processes -> 3 steps; each process reads only its half of the shards."""
    want = sorted(r["id"] for r in read_manifest(corpus / "train.jsonl") if r.get("dialogue"))
    for epoch in (0, 1):
        seen = []
        for rank in (0, 1):
            source, clips = _source(corpus, rank, 2, workers=workers, shuffle_buffer=5)
            got = _epoch(source, epoch)
            assert [p for p, _ in got] == list(range(rank * 6, rank * 6 + 6))  # positions: its contiguous range
            assert len(clips.clips) <= 2  # only the last step's clips are held
            seen += [i for _, i in got]
        assert sorted(seen) == want  # every item exactly once
    s0, _ = _source(corpus, 0, 2, workers=workers, shuffle_buffer=5)
    assert _epoch(s0, 0) != _epoch(s0, 1)  # a new shard order and shuffle each epoch
    w0, _ = _source(corpus, 0, 2, workers=0, shuffle_buffer=5)
    assert (workers == 0) == (_epoch(w0, 0) == _epoch(s0, 0))  # workers read their own parts: another order


def test_blend_weights_repeat_rows_in_the_stream(corpus):
    source, _ = _source(corpus, keep=RowFilter("clap", ["caption"]), blend=Blend({"tones": 2.0, "noise": 0.5}), batch_size=5)
    counts = Counter(i for _, i in _epoch(source, 0))
    tones = [r["id"] for r in read_manifest(corpus / "train.jsonl") if r["task"] == "caption" and r["dataset"] == "tones"]
    noise = {i: n for i, n in counts.items() if i not in tones}
    assert all(counts[i] == 2 for i in tones) and all(n == 1 for n in noise.values())
    assert source.counts(0) == {"noise": len(noise), "tones": 24} and 0 < len(noise) < 3  # a seeded part of the 3
    assert source.size == sum(source.counts(1).values()) == 24 + len(noise) == 25  # the same size every epoch (5 steps of 5)


def test_resume_mid_epoch_skips_exactly(corpus):
    for workers in (0, 2):
        full, _ = _source(corpus, 1, 2, workers=workers, shuffle_buffer=4)
        whole = _epoch(full, 1)
        resumed, _ = _source(corpus, 1, 2, workers=workers, shuffle_buffer=4)
        assert [(p, r["id"]) for pos in (1, 2) for p, r in resumed.take(1, pos)] == whole[2:]


def test_streamed_run_equals_manifest_run_in_the_same_order(corpus, tmp_path):
    """No shuffling: the manifest's rows and the exporter's shards come in the same order (its rows are grouped by
    clip already), so the samples, positions and losses are the same."""
    common = {"max_steps": 3, "data.shuffle": False}
    a = train(tiny_config(corpus, tmp_path / "m", "sft", **common))["losses"]
    b = train(tiny_config(corpus, tmp_path / "s", "sft", **common, **{"data.train": [str(corpus / "shards")], "data.stream": True}))
    assert a == pytest.approx(b["losses"], rel=1e-6)
    c = train(tiny_config(corpus, tmp_path / "c", "sft", max_steps=3))["losses"]
    assert c != pytest.approx(a, rel=1e-6)  # (the order does matter: the default shuffle gives other losses)


@pytest.mark.parametrize("stage", ["sft", "clap"])
def test_streamed_resume_after_kill_equals_uninterrupted(corpus, tmp_path, stage):
    over = {"max_steps": 5, "save_every": 2, "data.train": [str(corpus / "shards")], "data.stream": True,
            "data.shuffle_buffer": 6, "model_overrides": {"transform.dropout": 0.3}}
    full = train(tiny_config(corpus, tmp_path / "full", stage, **over))
    train(tiny_config(corpus, tmp_path / "cut", stage, stop_after_steps=3, **over))  # killed after step 3, mid-epoch
    resumed = train(tiny_config(corpus, tmp_path / "cut", stage, **over), resume=True)
    assert resumed["losses"] == full["losses"]  # bit-identical: steps 3..5 recomputed from step 2's checkpoint
    wa, _ = load_checkpoint(latest_checkpoint(tmp_path / "full"))
    wb, state = load_checkpoint(latest_checkpoint(tmp_path / "cut"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert state["data_position"]["stream"]["processes"] == 1
    with pytest.raises(ConfigError, match="data.workers"):  # another reader layout cannot resume exactly
        train(tiny_config(corpus, tmp_path / "cut", stage, **{**over, "max_steps": 6, "data.workers": 1}), resume=True)


def _recording_worker(rank, world, port, corpus, out, overrides, result_dir):
    """A DDP training run on streamed shards that records the row ids each process trained on."""
    import audioflamingo.train.stream as stream

    join_process_group(rank, world, port)
    seen, take = [], stream.StreamSource.take

    def recording_take(self, epoch, pos):
        items = take(self, epoch, pos)
        seen.extend((epoch, row["id"]) for _, row in items)
        return items

    stream.StreamSource.take = recording_take
    train(tiny_config(corpus, out, **overrides))
    torch.save(seen, Path(result_dir) / f"seen{rank}.pt")


def test_two_processes_train_on_every_streamed_item_once_per_epoch(corpus, tmp_path):
    over = {"stage": "chat", "max_steps": None, "epochs": 2, "batch_size": 4, "micro_batch_size": 2, "data.train": [str(corpus / "shards")],
            "data.stream": True, "data.shuffle_buffer": 3, "data.val": []}
    mp.spawn(_recording_worker, args=(2, free_port(), corpus, tmp_path / "run", over, tmp_path), nprocs=2, join=True)
    seen = torch.load(tmp_path / "seen0.pt") + torch.load(tmp_path / "seen1.pt")
    want = sorted(r["id"] for r in read_manifest(corpus / "train.jsonl") if r.get("dialogue"))
    for epoch in (0, 1):
        assert sorted(i for e, i in seen if e == epoch) == want
    r0 = {i for e, i in torch.load(tmp_path / "seen0.pt") if e == 0}
    assert 0 < len(r0) < len(want)  # each process had its own share
