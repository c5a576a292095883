"""`audioflamingo score` on JSONL files, its error messages, and the answer parsers."""

import json
from pathlib import Path

import pytest

import audioflamingo.cli as cli
from audioflamingo.eval.metrics import cider_d
from audioflamingo.eval.parsers import get_parser
from audioflamingo.eval.score import ScoreInputError, score_files

FIX = Path(__file__).parent / "fixtures" / "eval"


@pytest.fixture
def run(monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["audioflamingo.eval.cli"])

    def _run(*argv):
        rc = cli.main(list(map(str, argv)))
        out = capsys.readouterr()
        return rc, out.out, out.err

    return _run


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_score_prints_corpus_json(run):
    rc, out, _ = run("score", "--metric", "cider_d", FIX / "captions_pred.jsonl", FIX / "captions_refs.jsonl")
    assert rc == 0
    result = json.loads(out)
    assert set(result) == {"metric", "score"} and result["metric"] == "cider_d"
    preds = [json.loads(x)["text"] for x in (FIX / "captions_pred.jsonl").read_text().splitlines()]
    refs = [json.loads(x)["refs"] for x in (FIX / "captions_refs.jsonl").read_text().splitlines()]
    assert result["score"] == pytest.approx(cider_d(preds, refs)[0])


def test_score_every_metric_name_and_order_independence(run, tmp_path):
    # predictions in another order than the references: aligned by id
    pred = _write(tmp_path / "p.jsonl", [{"id": "b", "text": "the cat sat"}, {"id": "a", "text": "hello world"}])
    refs = _write(tmp_path / "r.jsonl", [{"id": "a", "refs": ["hello world"]}, {"id": "b", "refs": ["the cat sat down"]}])
    for metric in ["cider_d", "bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "accuracy", "macro_f1", "wer", "cer"]:
        rc, out, err = run("score", "--metric", metric, pred, refs)
        assert rc == 0, err
        assert json.loads(out)["metric"] == metric
    rc, out, _ = run("score", "--metric", "wer", pred, refs, "--per-item", tmp_path / "items.jsonl")
    assert json.loads(out)["score"] == pytest.approx(1 / 6)  # one deleted word of 6 reference words
    items = [json.loads(x) for x in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert items == [{"id": "a", "score": 0.0}, {"id": "b", "score": 0.25}]


@pytest.mark.parametrize(
    "pred_rows, ref_rows, match",
    [
        (['{"id": "a", "text": "x"', ], [{"id": "a", "refs": ["x"]}], r"p\.jsonl:1: not valid JSON"),
        ([{"id": "a", "text": "x"}, {"text": "y"}], [{"id": "a", "refs": ["x"]}], r"p\.jsonl:2: missing key 'id'"),
        ([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}], [{"id": "a", "refs": ["x"]}], r"p\.jsonl:2: duplicate id 'a' \(first on line 1\)"),
        ([{"id": "a", "text": 3}], [{"id": "a", "refs": ["x"]}], r"p\.jsonl:1: 'text' must be a string"),
        ([{"id": "a", "text": "x"}], [{"id": "a", "refs": "x"}], r"r\.jsonl:1: 'refs' must be a list of strings"),
        ([{"id": "a", "text": "x"}], [{"id": "a", "refs": []}], r"r\.jsonl:1: 'refs' is empty"),
        ([{"id": "a", "text": "x"}], [{"id": "a", "refs": ["x"]}, {"id": "b", "refs": ["y"]}], r"p\.jsonl: no prediction for 1 id\(s\) of .*r\.jsonl: 'b'"),
        ([{"id": "a", "text": "x"}, {"id": "z", "text": "y"}], [{"id": "a", "refs": ["x"]}], r"p\.jsonl: 1 id\(s\) not in .*r\.jsonl: 'z'"),
        (["[1, 2]"], [{"id": "a", "refs": ["x"]}], r"p\.jsonl:1: expected a JSON object"),
    ],
)
def test_score_errors_name_file_and_line(tmp_path, pred_rows, ref_rows, match):
    pred, refs = _write(tmp_path / "p.jsonl", pred_rows), _write(tmp_path / "r.jsonl", ref_rows)
    with pytest.raises(ScoreInputError, match=match):
        score_files("accuracy", pred, refs)


def test_score_cli_errors_are_one_line_with_exit_1(run, tmp_path):
    refs = _write(tmp_path / "r.jsonl", [{"id": "a", "refs": ["x"]}])
    rc, out, err = run("score", "--metric", "accuracy", refs, refs)
    assert rc == 1 and out == ""
    assert "r.jsonl:1: missing key 'text' (this looks like a references file)" in err
    rc, _, err = run("score", "--metric", "accuracy", tmp_path / "nope.jsonl", refs)
    assert rc == 1 and "nope.jsonl: file not found" in err


# ---------------------------------------------------------------------------------------- parsers


def test_option_parser():
    p = get_parser("option").fn
    opts = ["dog", "hot dog", "rain", "crying baby", "siren"]
    assert p("Dog.", opts).answer == "dog"
    assert p("I think it is a hot dog<|endofchunk|>garbage", opts).answer == "hot dog"  # longest contained option
    assert p("crying", opts).answer == "crying baby"  # the only option containing the text
    assert p("sirens", opts).answer == "siren"  # close spelling (ratio 10/11 >= 0.8)
    r = p("a ukulele", opts)
    assert r.answer == "a ukulele" and not r.matched


def test_yes_no_number_labels_parsers():
    yn, num, labels = get_parser("yes_no"), get_parser("number"), get_parser("labels")
    assert yn.fn("Yes, it is.").answer == "yes" and yn.fn("No dog here").answer == "no"
    assert not yn.fn("maybe").matched and yn.canonical
    assert num.fn("It rings three times").answer == "3" and num.fn("about 2.0 seconds, then 5").answer == "2"
    assert num.fn("twice").answer == "2" and not num.fn("many").matched
    assert labels.fn("Dog, Bark; animal and dog").answer == "animal, bark, dog"
    assert labels.fn("dog, guitar", ["dog", "cat"]).answer == "dog"
