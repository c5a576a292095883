"""`audioflamingo index ...`: the commands parse, call the library, and load the model only through load_model."""

import argparse
import importlib.util
import json

import pytest

import audioflamingo
from audioflamingo import cli as main_cli
from audioflamingo.retrieval import AudioIndex
from audioflamingo.retrieval import cli as index_cli
from audioflamingo.retrieval.spectral import SpectralEmbedder


def importable(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def run(argv):
    parser = argparse.ArgumentParser(prog="audioflamingo")
    index_cli.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def fake_model(monkeypatch):
    """audioflamingo.load_model replaced by the spectral embedder; records the paths it was asked for."""
    loaded = []

    def load_model(path=None, **kw):
        loaded.append(path)
        return SpectralEmbedder()

    monkeypatch.setattr(audioflamingo, "load_model", load_model)
    return loaded


@pytest.fixture
def manifest(tmp_path, make_wav):
    rows = []
    for i, f in enumerate([300, 320, 3000, 3200]):
        make_wav(f"c{i}.wav", seconds=0.3, freq=f, seed=i)
        rows.append({"id": f"c{i}", "audio": f"c{i}.wav", "answer": f"{f} Hz", "prompt": "p", "dataset": "d", "split": "train"})
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_registered_in_the_main_cli():
    assert "audioflamingo.retrieval.cli" in main_cli.COMMAND_MODULES


def test_build_info_search_icl(tmp_path, manifest, make_wav, fake_model, capsys):
    assert run(["index", "build", str(manifest), "--out", str(tmp_path / "ix"), "--model", "ckpt", "--quiet"]) == 0
    assert fake_model == ["ckpt"]
    index = AudioIndex.load(tmp_path / "ix", fingerprint=SpectralEmbedder().embedding_fingerprint())
    assert index.ids == ["c0", "c1", "c2", "c3"] and index.config.kind == "flat"
    capsys.readouterr()

    assert run(["index", "info", str(tmp_path / "ix")]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 4
    assert fake_model == ["ckpt"]  # info never loads the model

    query = make_wav("q.wav", seconds=0.3, freq=3100, seed=9)
    assert run(["index", "search", str(tmp_path / "ix"), str(query), "-k", "2", "--model", "ckpt"]) == 0
    (hit,) = json.loads(capsys.readouterr().out)
    assert hit["query"] == str(query) and {n["id"] for n in hit["neighbours"]} == {"c2", "c3"}
    assert hit["neighbours"][0]["score"] >= hit["neighbours"][1]["score"]

    assert run(["index", "icl", str(manifest), "--index", str(tmp_path / "ix"), "--out", str(tmp_path / "icl.jsonl"),
                "-k", "2", "--quiet"]) == 0  # fmt: skip
    rows = [json.loads(line) for line in open(tmp_path / "icl.jsonl")]
    assert len(rows) == 4 and all(len(r["shots"]) == 2 for r in rows)
    assert fake_model == ["ckpt", "ckpt"]  # icl: all queries are in the index; search loaded once more


def test_build_approximate_kind(tmp_path, manifest, fake_model):
    assert run(["index", "build", str(manifest), "--out", str(tmp_path / "ix"), "--kind", "hnsw", "--quiet"]) == 0
    assert AudioIndex.load(tmp_path / "ix").config.kind == "hnsw"


@pytest.mark.skipif(
    not all(importable(m) for m in ("audioflamingo.commands.core", "audioflamingo.model.loading")),
    reason="the main CLI's other commands or the model are not in this checkout yet",
)
def test_through_the_console_script(tmp_path, manifest, fake_model):
    assert main_cli.main(["index", "build", str(manifest), "--out", str(tmp_path / "ix"), "--quiet"]) == 0
    assert main_cli.main(["index", "info", str(tmp_path / "ix")]) == 0


@pytest.mark.skipif(not importable("audioflamingo.model.loading"), reason="the model is not in this checkout yet")
def test_real_model_builds_and_finds_its_own_neighbours(tmp_path, manifest):
    """A real (tiny, random) model as the embedder: build, fingerprint, and the neighbour rule."""
    model = audioflamingo.load_model("tiny")
    from audioflamingo.retrieval import NeighbourConfig, build_index, retrieve

    index = build_index(manifest, tmp_path / "ix", model, progress=False)
    assert index.fingerprint == model.embedding_fingerprint()
    (shots,) = retrieve(index, model, [str(tmp_path / "c0.wav")], NeighbourConfig(k=2))
    assert "c0" not in {s.id for s in shots} and len(shots) == 2


def test_registering_the_commands_does_not_import_faiss():
    import subprocess
    import sys

    code = "import sys, audioflamingo.retrieval.cli; assert 'faiss' not in sys.modules, 'faiss imported'"
    subprocess.run([sys.executable, "-c", code], check=True)  # a fresh interpreter: nothing imported yet


def test_rag_arguments_for_ask(tmp_path, make_wav):
    ex = make_wav("dog.wav", seconds=0.2)
    parser = argparse.ArgumentParser()
    index_cli.add_rag_arguments(parser)
    args = parser.parse_args(["--rag", "ix", "--shots", "2", "--example", f"{ex}=a dog", "--example", f"{ex}=b=c"])
    assert index_cli.rag_kwargs(args) == {"rag": "ix", "shots": 2, "order": "nearest_last",
                                          "examples": [(str(ex), "a dog"), (str(ex), "b=c")]}  # fmt: skip
    assert index_cli.rag_kwargs(parser.parse_args([])) == {"rag": None, "shots": 0, "order": "nearest_last", "examples": None}


def test_rag_arguments_join_a_parser_that_has_example_already():
    parser = argparse.ArgumentParser()
    parser.add_argument("--example", action="append", default=[])
    index_cli.add_rag_arguments(parser)
    assert parser.parse_args(["--rag", "ix", "--example", "a=b"]).example == ["a=b"]


def test_encoder_cache_embedder_equals_the_model_and_checks_the_fingerprint(tmp_path, manifest):
    """An index built from a training run's encoder cache equals one built by encoding the audio."""
    import numpy as np

    from audioflamingo.retrieval import build_index
    from audioflamingo.retrieval.build import EncoderCacheEmbedder
    from audioflamingo.retrieval.index import RetrievalError
    from audioflamingo.train.data import ClipStore, FeatureCache

    model = audioflamingo.load_model("tiny").eval()
    wavs = [str(tmp_path / f"c{i}.wav") for i in range(4)]
    cache = FeatureCache(model, ClipStore(model.config.audio.sample_rate, model.config.audio), tmp_path / "enc.pt")
    cache.fill(wavs[:3])  # the last file is not cached: the model embeds it

    class Counting:
        calls = []

        def embed_audio(self, paths):
            self.calls.append(list(paths))
            return model.embed_audio(paths)

        def embedding_fingerprint(self):
            return model.embedding_fingerprint()

    inner = Counting()
    cached = EncoderCacheEmbedder(inner, tmp_path / "enc.pt")
    a = build_index(manifest, tmp_path / "a", cached, progress=False)
    b = build_index(manifest, tmp_path / "b", model, progress=False)
    assert cached.hits == 3 and inner.calls == [[wavs[3]]]
    np.testing.assert_allclose(a.vectors(list(range(4))), b.vectors(list(range(4))), atol=1e-5)

    torch_ = pytest.importorskip("torch")
    saved = torch_.load(tmp_path / "enc.pt", weights_only=True)
    saved["fingerprint"] = "0000"
    torch_.save(saved, tmp_path / "bad.pt")
    with pytest.raises(RetrievalError, match="bad.pt.*another encoder"):
        build_index(manifest, tmp_path / "c", EncoderCacheEmbedder(model, tmp_path / "bad.pt"), progress=False)
    with pytest.raises(RetrievalError, match="no such file"):
        EncoderCacheEmbedder(model, tmp_path / "missing.pt")
