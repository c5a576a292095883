"""model.ask / `audioflamingo ask` with retrieved (--rag) and user-given (--example) in-context examples."""

import json

import pytest

from audioflamingo.cli import main
from audioflamingo.model.loading import save_pretrained
from conftest import tiny_model, tone_index


@pytest.fixture
def setup(tmp_path, make_wav):
    model = tiny_model(gates=1.0)
    tone_index(tmp_path, make_wav, model, lambda i, f: [{"id": f"c{i}", "audio": f"c{i}.wav", "answer": "low" if f < 1000 else "high",
                                                         "prompt": "Pitch?", "dataset": "tones", "task": "classification", "split": "train"}])
    return model, tmp_path


def test_ask_with_rag_reports_the_examples_and_never_the_query_itself(setup):
    model, d = setup
    ans = model.answer(str(d / "c3.wav"), "Pitch?", rag=d / "index", shots=2, max_new_tokens=3)[0]
    ids = [e["id"] for e in ans.examples]
    assert len(ids) == 2 and "c3" not in ids
    assert all(isinstance(e["score"], float) for e in ans.examples)
    assert ans.prompt.count("<audio>") == 3 and ans.prompt.startswith("</s>Here are similar examples. ")
    # nearest last: the closest tone (c4 or c2, both high) sits right before the query
    assert ids[-1] in {"c2", "c4"}


def test_shared_examples_are_encoded_once_per_batch(setup, monkeypatch):
    model, d = setup
    seen = []
    orig = model.encoder.forward
    monkeypatch.setattr(model.encoder, "forward", lambda w: (seen.append(w.shape[0]), orig(w))[1])
    examples = [(str(d / "c0.wav"), "low"), (str(d / "c3.wav"), "high")]
    model.ask([str(d / "c1.wav"), str(d / "c4.wav"), str(d / "c2.wav")], ["Pitch?"] * 3, examples=examples, max_new_tokens=2)
    # 5 distinct clips of 0.6 s (one 1 s window each): 2 shared examples + 3 queries, ONE encoder call
    assert seen == [5]


def test_rag_with_another_model_fails_loudly(setup):
    _, d = setup
    other = tiny_model(seed=5)
    with pytest.raises(Exception, match="was built with embedding weights"):
        other.ask(str(d / "c3.wav"), "Pitch?", rag=d / "index", shots=2)


def test_cli_ask_rag_and_examples_json(setup, capsys):
    model, d = setup
    save_pretrained(model, d / "ckpt")
    rc = main(["ask", str(d / "c0.wav"), "-p", "Pitch?", "--model", str(d / "ckpt"), "--rag", str(d / "index"),
               "--shots", "2", "--example", f"{d / 'c4.wav'}=high", "--json", "--max-new-tokens", "2"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["examples"]) == 3 and out["examples"][0]["answer"] == "high" and out["examples"][0]["id"] is None
    assert "c0" not in [e["id"] for e in out["examples"]]
