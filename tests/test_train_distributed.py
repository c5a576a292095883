"""Two gloo processes (DDP) give the same training as one process with the same global batch."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from audioflamingo.train import train
from audioflamingo.train.checkpoint import latest_checkpoint, load_checkpoint
from train_fixtures import tiny_config, write_corpus


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, corpus, out, overrides, result_file):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    res = train(tiny_config(corpus, out, **overrides))
    if rank == 0:
        torch.save(res["losses"], result_file)


@pytest.mark.parametrize("stage", ["sft", "pretrain"])
def test_two_gloo_processes_equal_one_process(tmp_path, stage):
    corpus = write_corpus(tmp_path / "corpus")
    over = {"stage": stage, "max_steps": 3, "save_every": 3, "batch_size": 4, "micro_batch_size": 2}
    one = train(tiny_config(corpus, tmp_path / "one", **over))  # 1 process: 2 micro-batches accumulated
    mp.spawn(_worker, args=(2, _free_port(), corpus, tmp_path / "two", over, tmp_path / "losses.pt"), nprocs=2, join=True)
    two_losses = torch.load(tmp_path / "losses.pt")
    assert two_losses == pytest.approx(one["losses"], rel=1e-5, abs=1e-6)
    wa, _ = load_checkpoint(latest_checkpoint(tmp_path / "one"))
    wb, _ = load_checkpoint(latest_checkpoint(tmp_path / "two"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5, msg=lambda m: f"{k}: {m}")
    # and training did move the weights (the comparison is not between two untouched models)
    assert one["losses"][-1] != one["losses"][0]
