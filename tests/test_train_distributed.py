"""Two gloo processes (DDP) give the same training as one process with the same global batch."""

import json

import pytest
import torch
import torch.multiprocessing as mp

from audioflamingo.train import train
from audioflamingo.train.checkpoint import latest_checkpoint, load_checkpoint
from train_fixtures import free_port, join_process_group, leave_worker, tiny_config, write_corpus


def _worker(rank, world, port, corpus, out, overrides, result_file):
    join_process_group(rank, world, port)
    res = train(tiny_config(corpus, out, **overrides))
    if rank == 0:
        torch.save(res["losses"], result_file)


@pytest.mark.parametrize("stage", ["sft", "pretrain"])
def test_two_gloo_processes_equal_one_process(tmp_path, stage):
    corpus = write_corpus(tmp_path / "corpus")
    over = {"stage": stage, "max_steps": 3, "save_every": 3, "batch_size": 4, "micro_batch_size": 2}
    one = train(tiny_config(corpus, tmp_path / "one", **over))  # 1 process: 2 micro-batches accumulated
    mp.spawn(_worker, args=(2, free_port(), corpus, tmp_path / "two", over, tmp_path / "losses.pt"), nprocs=2, join=True)
    two_losses = torch.load(tmp_path / "losses.pt")
    assert two_losses == pytest.approx(one["losses"], rel=1e-5, abs=1e-6)
    wa, _ = load_checkpoint(latest_checkpoint(tmp_path / "one"))
    wb, _ = load_checkpoint(latest_checkpoint(tmp_path / "two"))
    assert wa.keys() == wb.keys()
    # atol: the attention key bias has an analytically zero gradient, so Adam turns float noise (which differs
    # with summation order) into steps of up to lr = 3e-3; 1e-4 is still far below one real update
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-4, msg=lambda m: f"{k}: {m}")
    # and training did move the weights (the comparison is not between two untouched models)
    assert one["losses"][-1] != one["losses"][0]


def _fsdp_worker(rank, world, port, corpus, out, overrides, result_file):
    import torch.distributed as dist

    join_process_group(rank, world, port)
    dist.init_process_group("gloo")  # one group for both runs (train() leaves alone a group it did not create)
    try:
        cut = train(tiny_config(corpus, out, stop_after_steps=2, **overrides))  # "killed" after step 2
        res = train(tiny_config(corpus, out, **overrides), resume=True)  # FSDP resumes its own checkpoint
    finally:
        dist.destroy_process_group()
    if rank == 0:
        torch.save({"cut": cut["losses"], "losses": res["losses"]}, result_file)
    leave_worker()  # FSDP2's gloo work can abort interpreter teardown (see leave_worker)


def _assert_close_weights(wa, wb):
    assert wa.keys() == wb.keys()
    for k in wa:  # atol: see the DDP test above; the attention key bias (in in_proj_bias) moves by Adam-scaled noise only
        atol = 1e-3 if k.endswith("in_proj_bias") else 1e-4
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=atol, msg=lambda m: f"{k}: {m}")


def test_fsdp_two_gloo_processes_equal_one_process(tmp_path):
    """FSDP (FSDP2, one unit per decoder layer) on 2 CPU processes: the same losses, checkpoints and exported model
    as one process with the same global batch, with gradient clipping active; its checkpoint resumes under FSDP
    and in a single process. Pretrain: frozen and trained parameters share units, and only the new tokens'
    embedding rows may move (masked by hand under FSDP)."""
    import shutil

    from audioflamingo import load_model

    corpus = write_corpus(tmp_path / "corpus")
    over = {"stage": "pretrain", "max_steps": 3, "save_every": 1, "batch_size": 4, "micro_batch_size": 2, "export": True,
            "distributed.strategy": "fsdp", "optim.clip": 0.05}
    one = train(tiny_config(corpus, tmp_path / "one", **over))
    metrics = [json.loads(l) for l in (tmp_path / "one/metrics.jsonl").read_text().splitlines()]
    assert all(m["grad_norm"] > 0.05 for m in metrics if "grad_norm" in m)  # clipping did act on every step
    mp.spawn(_fsdp_worker, args=(2, free_port(), corpus, tmp_path / "two", over, tmp_path / "losses.pt"), nprocs=2, join=True)
    two = torch.load(tmp_path / "losses.pt")
    assert two["cut"] == pytest.approx(one["losses"][:2], rel=1e-5, abs=1e-6)
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5, abs=1e-6)
    wa, _ = load_checkpoint(latest_checkpoint(tmp_path / "one"))
    wb, sb = load_checkpoint(latest_checkpoint(tmp_path / "two"))
    _assert_close_weights(wa, wb)
    assert not any(isinstance(v, torch.distributed.tensor.DTensor) for s in sb["optimizer"]["state"].values() for v in s.values())
    ma, mb = load_model(tmp_path / "one/model").state_dict(), load_model(tmp_path / "two/model").state_dict()
    _assert_close_weights(ma, mb)
    # the FSDP checkpoint of step 2 resumed by one process gives step 3 of the one-process run
    shutil.copytree(tmp_path / "two", tmp_path / "single", ignore=shutil.ignore_patterns("step-000003", "model"))
    (tmp_path / "single/checkpoints/latest").write_text("step-000002\n")
    single = train(tiny_config(corpus, tmp_path / "single", **{**over, "export": False}), resume=True)
    assert single["losses"] == pytest.approx(one["losses"], rel=1e-5, abs=1e-6)
    _assert_close_weights(wa, load_checkpoint(latest_checkpoint(tmp_path / "single"))[0])
    assert one["losses"][-1] != one["losses"][0]


def _runs_worker(rank, world, port, runs, result_file):
    """Several training runs [(corpus, out, overrides)] in one pair of processes (one process group)."""
    import torch.distributed as dist

    join_process_group(rank, world, port)
    dist.init_process_group("gloo")
    try:
        results = [train(tiny_config(corpus, out, **over))["losses"] for corpus, out, over in runs]
    finally:
        dist.destroy_process_group()
    if rank == 0:
        torch.save(results, result_file)


def test_clap_negatives_come_from_every_process(tmp_path):
    """CLAP on 2 processes with micro-batches of 2 contrasts each clip with all 4 clips of the step, like one process
    with micro-batches of 4: the same losses and weights, under DDP and under FSDP (whose export gathers the
    encoder and the text head)."""
    from safetensors.torch import load_file

    corpus = write_corpus(tmp_path / "corpus")
    over = {"stage": "clap", "max_steps": 3, "save_every": 3, "batch_size": 4, "export": True}
    one = train(tiny_config(corpus, tmp_path / "one", **over, micro_batch_size=4))
    runs = [(corpus, tmp_path / "ddp", {**over, "micro_batch_size": 2}),
            (corpus, tmp_path / "fsdp", {**over, "micro_batch_size": 2, "distributed.strategy": "fsdp"})]
    mp.spawn(_runs_worker, args=(2, free_port(), runs, tmp_path / "losses.pt"), nprocs=2, join=True)
    ddp, fsdp = torch.load(tmp_path / "losses.pt")
    wa, _ = load_checkpoint(latest_checkpoint(tmp_path / "one"))
    for name, losses in (("ddp", ddp), ("fsdp", fsdp)):
        assert losses == pytest.approx(one["losses"], rel=1e-5, abs=1e-6), name
        _assert_close_weights(wa, load_checkpoint(latest_checkpoint(tmp_path / name))[0])
        _assert_close_weights(load_file(tmp_path / "one/model/clap_text_head.safetensors"),
                              load_file(tmp_path / name / "model/clap_text_head.safetensors"))
    assert {k.split(".")[0] for k in wa} == {"encoder", "head"} and one["losses"][-1] != one["losses"][0]


class _CountingCache:
    """A per-clip cache whose 'encoding' is recorded, to count how often each clip is encoded."""

    def __init__(self, store):
        self.store, self.encoded = store, []

    def fill(self, keys, progress=False):
        for k in keys:
            if k not in self.store:
                self.store[k] = torch.full((2, 3), float(ord(k)))  # (W, E)
                self.encoded.append(k)


def _fill_worker(rank, world, port, result_file):
    import torch.distributed as dist

    from audioflamingo.train.distributed import Dist, fill_cache

    join_process_group(rank, world, port)
    dist.init_process_group("gloo")
    try:
        cache = _CountingCache({"a": torch.zeros(2, 3)})  # every process read the same file, which holds "a"
        fill_cache(cache, cache.store, list("abcdefgb"), Dist(rank, world))
    finally:
        dist.destroy_process_group()
    torch.save({"encoded": cache.encoded, "store": cache.store}, f"{result_file}.{rank}")


def test_frozen_encoder_cache_is_filled_once_across_processes(tmp_path):
    """Each missing clip is encoded by exactly one process, and every process ends with every clip (before: every
    process but rank 0 encoded the whole corpus itself, 10 min on the standard corpus, while rank 0 waited)."""
    mp.spawn(_fill_worker, args=(2, free_port(), tmp_path / "r"), nprocs=2, join=True)
    r0, r1 = (torch.load(f"{tmp_path / 'r'}.{i}") for i in (0, 1))
    assert sorted(r0["encoded"] + r1["encoded"]) == list("bcdefg")  # "a" was cached, "b" asked twice
    assert r0["encoded"] and r1["encoded"]  # the work was shared
    for r in (r0, r1):
        assert sorted(r["store"]) == list("abcdefg")
        for k, v in r["store"].items():
            assert torch.equal(v, torch.zeros(2, 3) if k == "a" else torch.full((2, 3), float(ord(k))))


def test_feature_cache_file_written_only_by_the_writer(tmp_path):
    from audioflamingo.model.loading import build_model
    from audioflamingo.config import load_model_config
    from audioflamingo.train.data import ClipStore, FeatureCache

    corpus = write_corpus(tmp_path / "corpus", per_class=1)
    wavs = sorted(str(p) for p in corpus.rglob("*.wav"))[:2]
    model = build_model(load_model_config("tiny")).eval()
    clips = ClipStore(model.config.audio.sample_rate, model.config.audio)
    reader = FeatureCache(model, clips, tmp_path / "enc.pt", write=False)  # a rank other than 0
    reader.fill(wavs)
    assert not (tmp_path / "enc.pt").exists() and len(reader.feats) == 2
    writer = FeatureCache(model, clips, tmp_path / "enc.pt")
    writer.fill(wavs[:1], save=False)
    assert not (tmp_path / "enc.pt").exists()
    writer.save()
    again = FeatureCache(model, clips, tmp_path / "enc.pt", write=False)
    assert list(again.feats) == wavs[:1]
    torch.testing.assert_close(again.feats[wavs[0]], reader.feats[wavs[0]])
    assert not list(tmp_path.glob("*.tmp"))
