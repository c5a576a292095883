import os

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tiny test models gain nothing from a second thread, and on a shared 2-core machine OpenMP spinning
# made steps up to 20x slower: one thread per test process (subprocesses inherit it).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def make_wav(tmp_path):
    """Write a synthetic clip (sine + a little noise) and return its path."""

    def _make(name="clip.wav", seconds=2.0, rate=16000, channels=1, freq=440.0, seed=0, subtype=None):
        rng = np.random.default_rng(seed)
        t = np.arange(int(round(seconds * rate))) / rate
        x = 0.5 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.shape)
        x = np.stack([x * (1 - 0.2 * c) for c in range(channels)], axis=1) if channels > 1 else x
        path = tmp_path / name
        sf.write(path, x.astype(np.float32), rate, subtype=subtype)
        return path

    return _make


FAMILIES = {
    "gpt2": {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 512,
             "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0},
    "opt": {"model_type": "opt", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "ffn_dim": 64,
            "max_position_embeddings": 512, "word_embed_proj_dim": 32, "dropout": 0.0, "attention_dropout": 0.0},
    "llama": {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": 512},
    "qwen2": {"model_type": "qwen2", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": 512},
    "gpt_neox": {"model_type": "gpt_neox", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "intermediate_size": 64, "max_position_embeddings": 512, "rotary_pct": 1.0, "use_parallel_residual": False,
                 "hidden_dropout": 0.0, "attention_dropout": 0.0, "tie_word_embeddings": True},
}


def tiny_model(family="gpt2", gates=None, seed=0, **overrides):
    """The `tiny` preset on a given LM family; `gates` sets every tanh gate's raw value (None = zero init)."""
    import torch

    from audioflamingo.config import load_model_config
    from audioflamingo.model.loading import build_model

    cfg = load_model_config("tiny", overrides)
    cfg.lm.hf_config = dict(FAMILIES[family])
    model = build_model(cfg, seed=seed).eval()
    if gates is not None:
        with torch.no_grad():
            for blk in model.xattn_blocks():
                blk.attn_gate.fill_(gates)
                blk.ff_gate.fill_(gates)
    return model


def tone_index(folder, make_wav, model, rows_of, freqs=(300, 310, 2900, 3000, 3100)):
    """Five 0.6 s tones c0..c4.wav (two low, three high) in `folder`, their manifest rows (`rows_of(i, freq)` -> a
    list of rows for c{i}.wav) in folder/train.jsonl, and a retrieval index of them built with `model` in folder/index."""
    import json

    from audioflamingo.retrieval.build import build_index

    rows = []
    for i, f in enumerate(freqs):
        make_wav(f"c{i}.wav", seconds=0.6, freq=f, seed=i)
        rows += rows_of(i, f)
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    build_index(folder / "train.jsonl", folder / "index", model, progress=False)
    return folder / "index"


def sine(seconds=1.0, freq=440.0, rate=16000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return ((0.5 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(t.shape)).astype(np.float32), rate)


def load_script(name: str):
    """Import scripts/<name>.py as a module (scripts are not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
