import json

import pytest
import torch

from audioflamingo import load_model
from audioflamingo.model.loading import CheckpointError, save_pretrained
from audioflamingo.text import encode, single_text
from conftest import sine, tiny_model


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_save_load_identical_logits(tmp_path, family):
    model = tiny_model(family, gates=0.8)
    save_pretrained(model, tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt")
    ids, _ = encode(model.tokenizer, single_text("What?", "x"))
    clip = model.load_clip(sine(1.3))
    with torch.no_grad():
        a, _ = model(ids[None], None, model.encode_audio([[clip]]))
        b, _ = loaded(ids[None], None, loaded.encode_audio([[clip]]))
    assert torch.equal(a, b)
    assert loaded.embedding_fingerprint() == model.embedding_fingerprint()
    assert model.ask(sine(1.0), "Q", max_new_tokens=6) == loaded.ask(sine(1.0), "Q", max_new_tokens=6)


def _saved_with_config_change(folder, section, key, value):
    """A saved tiny checkpoint whose config.json then says something its weights don't match."""
    save_pretrained(tiny_model(), folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model"][section][key] = value
    (folder / "config.json").write_text(json.dumps(cfg))


def test_mismatched_checkpoint_names_keys_and_shapes(tmp_path):
    _saved_with_config_change(tmp_path / "a", "xattn", "head_dim", 8)
    with pytest.raises(CheckpointError, match=r"shape mismatch.*to_q.weight: checkpoint \(32, 32\) vs model \(16, 32\)"):
        load_model(tmp_path / "a")


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    _saved_with_config_change(tmp_path / "a", "transform", "layers", 2)
    with pytest.raises(CheckpointError, match=r"missing \(\d+\): transform.layers.layers.1"):
        load_model(tmp_path / "a")


def test_corrupt_or_absent_checkpoint(tmp_path):
    save_pretrained(tiny_model(), tmp_path / "a")
    w = tmp_path / "a/model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(tmp_path / "a")
    (tmp_path / "b").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(tmp_path / "b")
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        load_model("no-such-preset-or-folder")
