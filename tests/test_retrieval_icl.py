"""Interleaved k-shot items: the SFT manifest (no leaks, seeded) and user-given examples."""

import json

import pytest

from audioflamingo.retrieval import (
    ICL_PREFIX,
    FingerprintMismatch,
    IclPrompt,
    NeighbourConfig,
    RetrievalError,
    Shot,
    build_icl_manifest,
    build_index,
    icl_prompts,
    parse_example,
    random_neighbours,
    user_examples,
)
from audioflamingo.retrieval.spectral import SpectralEmbedder


@pytest.fixture
def corpus(tmp_path, make_wav):
    """Two datasets of sines (train) plus test items that must never appear as shots."""
    rows = []
    for i in range(12):
        ds = "low" if i < 6 else "high"
        f = (200 + 40 * i) if ds == "low" else (2000 + 300 * i)
        make_wav(f"t{i}.wav", seconds=0.3, freq=f, seed=i)
        rows.append({"id": f"t{i}", "audio": f"t{i}.wav", "answer": f"{f}", "prompt": f"q{i}", "dataset": ds, "split": "train"})
    rows.append({"id": "t0-b", "audio": "t0.wav", "answer": "other question", "prompt": "q", "dataset": "low", "split": "train"})
    for i in range(3):
        make_wav(f"x{i}.wav", seconds=0.3, freq=230 + 40 * i, seed=50 + i)
        rows.append({"id": f"x{i}", "audio": f"x{i}.wav", "answer": "T", "prompt": "q", "dataset": "low", "split": "test"})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    index = build_index(tmp_path / "m.jsonl", tmp_path / "ix", SpectralEmbedder(), progress=False)
    return tmp_path / "m.jsonl", index


def read_jsonl(path):
    return [json.loads(line) for line in open(path)]


def test_icl_manifest_rows_follow_the_rules(tmp_path, corpus):
    manifest, index = corpus
    stats = build_icl_manifest(manifest, index, tmp_path / "icl.jsonl", k=3, seed=0, progress=False)
    rows = read_jsonl(tmp_path / "icl.jsonl")
    assert stats["rows"] == len(rows) == 13 and stats["short"] == 0
    by_id = {r["id"]: r for r in index.rows}
    for row in rows:
        assert row["id"] == row["query_id"] + "#icl" and row["split"] == "train"
        shots = row["shots"]
        assert len(shots) == 3
        files = [s["audio"] for s in shots]
        assert len(set(files)) == 3 and row["audio"] not in files  # distinct files, never its own
        for s in shots:
            assert s["id"] in by_id and by_id[s["id"]]["split"] == "train"  # never a test item
            assert by_id[s["id"]]["dataset"] == row["dataset"]  # same dataset only
            assert s["answer"] == by_id[s["id"]]["answer"] and s["prompt"] == by_id[s["id"]]["prompt"]


def test_icl_manifest_is_seeded(tmp_path, corpus):
    manifest, index = corpus
    for name, seed in (("a", 0), ("b", 0), ("c", 7)):
        build_icl_manifest(manifest, index, tmp_path / f"{name}.jsonl", k=4, seed=seed, progress=False)
    a, b, c = (read_jsonl(tmp_path / f"{n}.jsonl") for n in "abc")
    assert a == b
    assert [r["shots"] for r in a] != [r["shots"] for r in c]
    assert all({s["id"] for s in x["shots"]} == {s["id"] for s in y["shots"]} for x, y in zip(a, c))  # same set


def test_k_choices_and_fraction(tmp_path, corpus):
    manifest, index = corpus
    build_icl_manifest(manifest, index, tmp_path / "k.jsonl", k=[1, 4], seed=3, fraction=0.5, progress=False)
    rows = read_jsonl(tmp_path / "k.jsonl")
    assert len(rows) == round(0.5 * 13)
    assert {len(r["shots"]) for r in rows} == {1, 4}


def test_an_index_of_another_split_is_refused(tmp_path, corpus, make_wav):
    manifest, _ = corpus
    test_index = build_index(manifest, tmp_path / "ix-test", SpectralEmbedder(), split="test", progress=False)
    with pytest.raises(RetrievalError, match="leak"):
        build_icl_manifest(manifest, test_index, tmp_path / "bad.jsonl", progress=False)


def test_query_rows_missing_from_the_index_need_the_embedder(tmp_path, corpus, make_wav):
    manifest, index = corpus
    make_wav("new.wav", seconds=0.3, freq=260)
    extra = {"id": "new", "audio": "new.wav", "answer": "260", "prompt": "q", "dataset": "low", "split": "train"}
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps(extra) + "\n")
    with pytest.raises(RetrievalError, match="pass an embedder"):
        build_icl_manifest(other, index, tmp_path / "o.jsonl", k=2, progress=False)
    build_icl_manifest(other, index, tmp_path / "o.jsonl", k=2, embedder=SpectralEmbedder(), progress=False)
    (row,) = read_jsonl(tmp_path / "o.jsonl")
    assert len(row["shots"]) == 2 and all(s["id"].startswith("t") for s in row["shots"])


def test_user_examples_and_the_prompt_structure(tmp_path):
    shots = user_examples([("a.wav", "dog"), ("b.wav", "Which?", "cat"), {"audio": "c.wav", "answer": 3}], "What is it?")
    assert [(s.audio, s.prompt, s.answer, s.id, s.score) for s in shots] == [
        ("a.wav", "What is it?", "dog", None, None),
        ("b.wav", "Which?", "cat", None, None),
        ("c.wav", "What is it?", "3", None, None),
    ]
    with pytest.raises(RetrievalError, match="example 0"):
        user_examples([("only-audio.wav",)], "p")
    p = IclPrompt(shots[:2] + [Shot("/r.wav", "p", "bird", "r1", 0.9)], "query.wav", "What is it?")
    assert p.prefix == ICL_PREFIX == "Here are similar examples. "
    assert p.audios == ["a.wav", "b.wav", "/r.wav", "query.wav"]
    assert p.used()[2] == {"id": "r1", "score": 0.9, "audio": "/r.wav", "answer": "bird"}


def test_parse_example(tmp_path):
    (tmp_path / "a=b.wav").write_bytes(b"x")
    assert parse_example(f"{tmp_path}/a=b.wav=dog = 2") == (f"{tmp_path}/a=b.wav", "dog = 2")
    with pytest.raises(RetrievalError, match="AUDIO=ANSWER"):
        parse_example("nothing")
    with pytest.raises(RetrievalError, match="does not exist"):
        parse_example("missing.wav=dog")


def test_icl_prompts_for_inference(tmp_path, corpus, make_wav):
    _, index = corpus
    q1, q2 = make_wav("q1.wav", seconds=0.3, freq=5000, seed=70), make_wav("q2.wav", seconds=0.3, freq=240, seed=71)
    ex = make_wav("ex.wav", seconds=0.3, freq=1000, seed=72)
    emb = SpectralEmbedder()
    p1, p2 = icl_prompts([str(q1), str(q2)], "Pitch?", rag=tmp_path / "ix", embedder=emb, shots=2, examples=[(str(ex), "1 kHz")])
    assert p1.shots[0] is p2.shots[0] and p1.shots[0].answer == "1 kHz" and p1.shots[0].id is None  # shared user example
    assert len(p1.shots) == 3 and p1.audios[-1] == str(q1) and p1.query_prompt == "Pitch?"
    retrieved = p1.shots[1:]
    assert retrieved[0].score <= retrieved[1].score  # nearest last, just before the query
    assert all(s.score is not None and index.rows[index.position[s.id]]["split"] == "train" for s in retrieved)
    assert [u["id"] for u in p1.used()][1:] == [s.id for s in retrieved]
    with pytest.raises(FingerprintMismatch):
        icl_prompts([str(q1)], "Pitch?", rag=index, embedder=SpectralEmbedder(bands=24), shots=2)
    (plain,) = icl_prompts([str(q1)], "Pitch?")  # neither index nor examples: zero-shot
    assert plain.shots == [] and plain.audios == [str(q1)]


def test_random_neighbours_follow_the_same_rules(corpus):
    _, index = corpus
    row = index.rows[index.position["t0"]]
    cfg = NeighbourConfig(k=4, seed=1)
    (a,) = random_neighbours(index, [row["audio"]], cfg, ["t0"], [{"dataset": "low"}])
    (b,) = random_neighbours(index, [row["audio"]], cfg, ["t0"], [{"dataset": "low"}])
    assert [s.id for s in a] == [s.id for s in b] and len(a) == 4
    assert row["audio"] not in {s.audio for s in a} and len({s.audio for s in a}) == 4
    assert all(s.row["dataset"] == "low" and s.score is None for s in a)
    seeds = {tuple(s.id for s in random_neighbours(index, [row["audio"]], NeighbourConfig(k=4, seed=x), ["t0"])[0]) for x in range(5)}
    assert len(seeds) > 1
