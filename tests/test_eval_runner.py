"""The runner with small fake predictors: protocols (k-shot random/retrieved, seeds), loglik ranking,
baselines, retrieval tasks, reports, config errors and the `eval` command."""

import json
from pathlib import Path

import numpy as np
import pytest

import audioflamingo.cli as cli
from audioflamingo.config import ConfigError
from audioflamingo.eval.baselines import ClapZeroShot, MajorityClass, NearestCaptionCopy
from audioflamingo.eval.report import markdown_table, write_report
from audioflamingo.eval.runner import evaluate, summarize
from audioflamingo.eval.tasks import build_items, load_eval_config

FIXTURES = Path(__file__).parent / "fixtures" / "eval" / "manifests"
ESC_TASK = {"name": "esc", "manifest": "esc50.jsonl", "dataset": "esc50", "split": "test", "prompt": "classify this sound.{options}",
            "options": "manifest", "parser": "option", "metric": "accuracy", "shot_manifest": "esc50.jsonl"}
LABELS = ["crying baby", "dog", "rain", "rooster", "siren"]


def _label_of(audio: str, rows={}) -> str:
    if not rows:
        for line in (FIXTURES / "esc50.jsonl").read_text().splitlines():
            r = json.loads(line)
            rows[Path(r["audio"]).name] = r["answer"]
    return rows[Path(audio).name]


class ShotCopier:
    """Answers with the label of its first in-context example (0-shot: 'dog'); embeds audio as one-hot label."""

    def __init__(self):
        self.seen_examples = []

    def ask(self, audios, prompts, examples=None, **kw):
        self.seen_examples.append(examples)
        if examples is None:
            return ["It is a dog."] * len(audios)
        return [f"{ex[0]['answer']}." for ex in examples]

    def score_options(self, audios, prompts, options, **kw):
        return [[2.0 if o == _label_of(a) else 0.0 for o in opts] for a, opts in zip(audios, options)]

    def embed_audio(self, audios):
        return np.array([np.eye(len(LABELS))[LABELS.index(_label_of(a))] + 0.01 for a in audios])

    def embed_text(self, texts):
        return np.array([np.eye(len(LABELS))[[lab in t for lab in LABELS].index(True)] for t in texts])


def _cfg(task_overrides=None, **top):
    data = {"name": "t", "data_root": str(FIXTURES), "batch_size": 3, "tasks": [{**ESC_TASK, **(task_overrides or {})}], **top}
    return load_eval_config(data)


def test_zero_shot_and_format_failures():
    res = evaluate(_cfg(), ShotCopier(), progress=False)
    run = res["tasks"][0]["runs"][0]
    # 4 test items (dog, rain, siren, crying baby); always "dog" -> 1/4
    assert run["score"] == pytest.approx(0.25)
    assert [it["prediction"] for it in run["items"]] == ["dog"] * 4
    assert run["extra"]["format_failures"] == 0


def test_random_shots_exclude_own_audio_are_seeded_and_summarised():
    cfg = _cfg({"shots": [0, 1, 2]}, seeds=[0, 1, 2, 3])
    fake = ShotCopier()
    res = evaluate(cfg, fake, progress=False)
    task = res["tasks"][0]
    assert [(r["shots"], r["seed"]) for r in task["runs"]][:3] == [(0, 0), (1, 0), (1, 1)]  # 0-shot runs once
    ids_by_audio = {it.id: it.audio for it in build_items(cfg.tasks[0], cfg.data_root)}
    for run in task["runs"]:
        for it in run["items"]:
            assert len(it.get("shots", [])) == run["shots"]
            assert all(Path(ids_by_audio.get(s, "x")).name != Path(it["audio"]).name for s in it.get("shots", []))
    one_shot = [r["score"] for r in task["runs"] if r["shots"] == 1]
    s1 = next(s for s in task["summary"] if s["shots"] == 1)
    assert s1["mean"] == pytest.approx(np.mean(one_shot)) and s1["std"] == pytest.approx(np.std(one_shot, ddof=1))
    assert s1["n_runs"] == 4
    again = evaluate(cfg, ShotCopier(), progress=False)
    assert json.dumps(again, sort_keys=True) == json.dumps(res, sort_keys=True)  # same inputs => same numbers
    shots_by_seed = {r["seed"]: [it["shots"] for it in r["items"]] for r in task["runs"] if r["shots"] == 2}
    assert len({json.dumps(v) for v in shots_by_seed.values()}) > 1  # seeds change the examples


def test_retrieved_shots_are_nearest_neighbours():
    # pool (train): dog x2, rain, siren, rooster. Embeddings = one-hot label, so 1 retrieved shot has the
    # query's label whenever the pool has it: dog, rain, siren right; crying baby has no neighbour of its class
    res = evaluate(_cfg({"shots": [1], "shot_selection": "retrieved"}), ShotCopier(), progress=False)
    assert res["tasks"][0]["runs"][0]["score"] == pytest.approx(3 / 4)


def test_retrieved_shots_follow_the_neighbour_rule_and_shot_order():
    # k=2. Nearest first, the first shot is the query's own class when the pool has it (dog, rain, siren: 3/4);
    # nearest last, it is the runner-up, which only "dog" (two dog files in the pool) still gets right
    score = {}
    for order in ("nearest_first", "nearest_last", "shuffle"):
        res = evaluate(_cfg({"shots": [2], "shot_selection": "retrieved", "shot_order": order}), ShotCopier(), progress=False)
        run = res["tasks"][0]["runs"][0]
        score[order] = run["score"]
        if order == "nearest_first":
            first = [it["shots"] for it in run["items"]]
        else:  # the same two examples per item, in another order
            assert [sorted(s) for s in first] == [sorted(it["shots"]) for it in run["items"]]
    assert score["nearest_first"] == pytest.approx(3 / 4) and score["nearest_last"] == pytest.approx(1 / 4)
    with pytest.raises(ConfigError, match="shot_order 'random' must be one of nearest_last, nearest_first, shuffle"):
        _cfg({"shot_selection": "retrieved", "shot_order": "random"})


def test_retrieved_shots_one_per_file_never_the_own_file(tmp_path):
    # pool: the query's own file (nearest of all), a file with two rows, and two far files; k=2
    rows = [("own", "q.wav", "train", 1.0), ("a1", "a.wav", "train", 0.9), ("a2", "a.wav", "train", 0.9),
            ("b", "b.wav", "train", 0.5), ("c", "c.wav", "train", 0.1), ("query", "q.wav", "test", 1.0)]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"id": i, "audio": a, "prompt": "p", "answer": i, "split": sp}) + "\n"
                                              for i, a, sp, _ in rows))
    closeness = {a: c for _, a, _, c in rows}

    class Emb(ShotCopier):
        def embed_audio(self, audios):  # cosine to the query's (1, 0) = closeness
            return np.array([[closeness[Path(a).name], np.sqrt(1 - closeness[Path(a).name] ** 2)] for a in audios])

    task = {"name": "t", "manifest": "m.jsonl", "metric": "accuracy", "shots": [2], "shot_selection": "retrieved",
            "shot_manifest": "m.jsonl", "shot_order": "nearest_first"}
    res = evaluate(load_eval_config({"data_root": str(tmp_path), "tasks": [task]}), Emb(), progress=False)
    assert res["tasks"][0]["runs"][0]["items"][0]["shots"] == ["a1", "b"]
    with pytest.raises(ValueError, match="only 3 distinct other files for item query, 4 shots asked"):
        evaluate(load_eval_config({"data_root": str(tmp_path), "tasks": [{**task, "shots": [4]}]}), Emb(), progress=False)


def test_loglik_ranking_gives_answers_and_confidences():
    res = evaluate(_cfg({"mode": "loglik"}), ShotCopier(), progress=False)
    run = res["tasks"][0]["runs"][0]
    assert run["score"] == 1.0
    # softmax of [2, 0, 0, 0, 0] -> e^2 / (e^2 + 4)
    assert run["items"][0]["confidence"] == pytest.approx(np.exp(2) / (np.exp(2) + 4))


def test_majority_and_clap_baselines():
    # train labels: dog, dog, rain, siren, rooster -> majority "dog" -> 1/4 of the test items
    res = evaluate(_cfg({"shots": [0, 4]}), MajorityClass(), progress=False)
    assert [r["shots"] for r in res["tasks"][0]["runs"]] == [0]  # no ICL for baselines
    assert res["tasks"][0]["runs"][0]["score"] == pytest.approx(0.25)
    assert res["model"]["fingerprint"] == "baseline:majority"
    # CLAP zero-shot ranks "This is a sound of <label>." texts; one-hot embeddings make it exact
    res = evaluate(_cfg(), ClapZeroShot(ShotCopier()), progress=False)
    assert res["tasks"][0]["runs"][0]["score"] == 1.0


def test_baselines_run_beside_the_model_and_are_reported(tmp_path):
    texts = []

    class Model(ShotCopier):
        def embed_text(self, t):
            texts.extend(t)
            return super().embed_text(t)

    cfg = _cfg({"shots": [0, 1], "baselines": ["clap_zeroshot", "majority"]})
    res = evaluate(cfg, Model(), progress=False)
    task = res["tasks"][0]
    assert task["summary"][0]["mean"] == pytest.approx(0.25)  # the model itself: always "dog"
    base = task["baselines"]
    # one-hot embeddings: CLAP zero-shot is exact; majority ("dog" in the pool) gets 1 of 4
    assert base["clap_zeroshot"]["score"] == 1.0 and base["majority"]["score"] == pytest.approx(0.25)
    assert base["clap_zeroshot"]["shots"] == 0 and len(base["clap_zeroshot"]["items"]) == 4
    assert base["majority"]["fingerprint"] == "baseline:majority"
    assert sorted(set(texts)) == [f"A {lab}." for lab in LABELS]  # the documented template, each label once
    md = markdown_table(res)
    assert "| task | metric | model | clap_zeroshot | majority |" in md
    assert "| esc | accuracy | 0.2500 | 1.0000 | 0.2500 |" in md
    # with baselines=False (the CLI's --baseline) only the predictor runs
    assert "baselines" not in evaluate(cfg, Model(), progress=False, baselines=False)["tasks"][0]


def test_baseline_the_model_cannot_serve_is_skipped_with_the_reason():
    class NoTextHead(ShotCopier):
        def embed_text(self, texts):
            raise RuntimeError("m/: no CLAP text head (clap_text_head.safetensors is missing)")

    with pytest.warns(UserWarning, match="baseline clap_zeroshot skipped: m/: no CLAP text head"):
        res = evaluate(_cfg({"baselines": ["clap_zeroshot"]}), NoTextHead(), progress=False)
    task = res["tasks"][0]
    assert task["summary"][0]["mean"] == pytest.approx(0.25)  # the model's own results are kept
    assert task["baselines"] == {"clap_zeroshot": {"skipped": "m/: no CLAP text head (clap_text_head.safetensors is missing)"}}
    md = markdown_table(res)
    assert "| esc | accuracy | 0.2500 | - |" in md and "Skipped clap_zeroshot: m/: no CLAP text head" in md


def test_nearest_caption_copy_and_retrieval_task(tmp_path):
    keys = ["train", "dog", "rain", "car", "bird"]  # "train" first: it contains "rain"

    def vec(audio):  # clip embedding: one-hot of the sound named in the file name
        names = keys
        return np.eye(5)[[n in Path(audio).name for n in names].index(True)]

    class Emb:
        def embed_audio(self, audios):
            return np.array([vec(a) for a in audios])

        def embed_text(self, texts):
            return np.array([np.eye(5)[[k in t.lower() for k in keys].index(True)] for t in texts])

    cap = {"name": "cap", "manifest": "clotho.jsonl", "group_refs": True, "metric": "bleu_1", "shot_manifest": "clotho.jsonl"}
    cfg = load_eval_config({"data_root": str(FIXTURES), "tasks": [cap]})
    res = evaluate(cfg, NearestCaptionCopy(Emb()), progress=False)
    preds = [it["prediction"] for it in res["tasks"][0]["runs"][0]["items"]]
    # dog -> the train dog caption; rain -> the train rain caption; "train.wav" (a train!) matches no train clip
    assert preds[:2] == ["A dog growls and barks.", "Rain patters on leaves."]
    ret = {"name": "ret", "manifest": "clotho.jsonl", "group_refs": True, "mode": "retrieval", "metric": "retrieval"}
    res = evaluate(load_eval_config({"data_root": str(FIXTURES), "tasks": [ret]}), Emb(), progress=False)
    extra = res["tasks"][0]["runs"][0]["extra"]
    assert extra["a2t_R@1"] == 1.0 and extra["t2a_R@1"] == 1.0 and res["tasks"][0]["summary"][0]["mean"] == 1.0


def test_config_errors_name_the_problem():
    with pytest.raises(ConfigError, match="tasks\\[0\\].promt"):
        _cfg({"promt": "x"})
    with pytest.raises(ConfigError, match="mode: loglik"):
        _cfg({"metric": "map"})
    with pytest.raises(ConfigError, match="shot_manifest"):
        load_eval_config({"tasks": [{"name": "a", "manifest": "m.jsonl", "shots": [0, 2]}]})
    cfg = load_eval_config({"data_root": str(FIXTURES), "tasks": [ESC_TASK]}, ["tasks.esc.shots=[0,8]", "batch_size=2"])
    assert cfg.tasks[0].shots == [0, 8] and cfg.batch_size == 2
    with pytest.raises(ConfigError, match="no task named"):
        load_eval_config({"tasks": [ESC_TASK]}, ["tasks.nope.shots=[1]"])
    with pytest.raises(ConfigError, match="baseline 'clap' must be one of majority, nn_caption, clap_zeroshot"):
        _cfg({"baselines": ["clap"]})
    with pytest.raises(ConfigError, match="clap_zeroshot ranks options: set `options`"):
        _cfg({"baselines": ["clap_zeroshot"], "options": None})
    with pytest.raises(ConfigError, match="majority learns from the pool: set `shot_manifest`"):
        _cfg({"baselines": ["majority"], "shot_manifest": None})
    with pytest.raises(ConfigError, match="nn_caption copies answers"):
        _cfg({"baselines": ["nn_caption"], "mode": "loglik"})


def test_summary_and_report(tmp_path):
    runs = [{"shots": 0, "score": 0.5}, {"shots": 4, "score": 0.6}, {"shots": 4, "score": 0.8}]
    s = summarize(runs)
    assert s[1]["mean"] == pytest.approx(0.7) and s[1]["std"] == pytest.approx(np.std([0.6, 0.8], ddof=1))
    res = evaluate(_cfg({"shots": [0, 1]}, seeds=[0, 1]), ShotCopier(), progress=False)
    paths = write_report(res, tmp_path, plot=True)
    assert json.loads(paths["json"].read_text()) == json.loads(json.dumps(res))
    md = paths["markdown"].read_text()
    assert "| esc | accuracy | 0 | 0.2500 |" in md and md == markdown_table(res)
    png = paths["plot"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000


def test_eval_command_with_majority_baseline(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["audioflamingo.eval.cli"])  # only this subsystem's commands
    cfg = Path(__file__).resolve().parents[1] / "configs" / "eval" / "esc50.yaml"
    rc = cli.main(["eval", "-c", str(cfg), "--baseline", "majority", "--out", str(tmp_path), "--plot", "--quiet",
                   f"data_root={FIXTURES}", "tasks.*.shots=[0]"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| esc50 | accuracy | 0 | 0.2500 |" in out and "| esc50_loglik | accuracy | 0 | 0.2500 |" in out
    assert (tmp_path / "results.json").is_file() and (tmp_path / "shots_vs_score.png").is_file()
    # the preset's own baselines are not run around a baseline
    assert all("baselines" not in t for t in json.loads((tmp_path / "results.json").read_text())["tasks"])


def test_eval_command_loads_the_model_given_by_path(tmp_path, monkeypatch, capsys):
    import audioflamingo

    loaded = []

    class FakeModel(ShotCopier):
        def fingerprint(self):
            return "fake-weights-123"

    def fake_load(path=None, **kw):
        loaded.append(path)
        return FakeModel()

    monkeypatch.setattr(audioflamingo, "load_model", fake_load)
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["audioflamingo.eval.cli"])
    cfg = Path(__file__).resolve().parents[1] / "configs" / "eval" / "esc50.yaml"
    rc = cli.main(["eval", "-c", str(cfg), "--model", "some/ckpt", "--out", str(tmp_path), "--quiet", "--limit", "2",
                   f"data_root={FIXTURES}", "seeds=[0]", "tasks.*.baselines=[majority]"])
    assert rc == 0 and loaded == ["some/ckpt"]
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["model"] == {"path": "some/ckpt", "fingerprint": "fake-weights-123"}
    assert [t["n_items"] for t in res["tasks"]] == [2, 2]
    # the model always says "dog" 0-shot; loglik ranks the gold label first: 1/2 and 2/2 on the first two items
    assert [t["summary"][0]["mean"] for t in res["tasks"]] == [0.5, 1.0]
    # the baseline asked for runs beside the model (majority of the fixture pool: "dog")
    assert [t["baselines"]["majority"]["score"] for t in res["tasks"]] == [0.5, 0.5]
    assert "Baselines beside the model" in capsys.readouterr().out


def test_manifest_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"id": "a", "audio": "a.wav", "prompt": "p", "answer": "x", "split": "test"}\n{"id": "b", "audio": "b.wav"}\n')
    cfg = load_eval_config({"data_root": str(tmp_path), "tasks": [{"name": "t", "manifest": "m.jsonl", "metric": "accuracy"}]})
    with pytest.raises(ConfigError, match=r"m\.jsonl:2: missing required key 'prompt'; missing required key 'answer'"):
        build_items(cfg.tasks[0], cfg.data_root)
    bad.write_text("[1]\n")
    with pytest.raises(ConfigError, match=r"m\.jsonl:1: row is a list, expected a JSON object"):
        build_items(cfg.tasks[0], cfg.data_root)


def test_label_options_are_the_answers_of_the_items_kept():
    """options: labels + answers_in ranks only the kept labels (a filtered-out label is never a candidate)."""
    cfg = _cfg({"options": "labels", "answers_in": ["dog", "rain"], "mode": "loglik"})
    items = build_items(cfg.tasks[0], FIXTURES)
    assert items and {tuple(it.options) for it in items} == {("dog", "rain")}
    assert {r for it in items for r in it.refs} <= {"dog", "rain"}
    every = build_items(_cfg({"options": "labels", "mode": "loglik"}).tasks[0], FIXTURES)
    assert set(every[0].options) > {"dog", "rain"}


def test_calibrated_loglik_subtracts_the_silent_query_score():
    """Contextual calibration: a silent query scores 0 for every option; otherwise the score is the
    plain log-likelihood minus that of the same prompt with the query audio silenced."""
    import torch

    from conftest import sine, tiny_model

    model = tiny_model("gpt2", gates=1.5, seed=3)
    opts = ["dog", "rain", "a siren"]
    loud = sine(1.0, 440)  # (samples, rate)
    silent = (np.zeros_like(loud[0]), loud[1])
    with torch.no_grad():
        zero = model.score_options(silent, "Which?", opts, calibrate=True)[0]
        plain = model.score_options(loud, "Which?", opts)[0]
        null = model.score_options(silent, "Which?", opts)[0]
        cal = model.score_options(loud, "Which?", opts, calibrate=True)[0]
    assert zero == pytest.approx([0.0] * 3, abs=1e-5)
    assert cal == pytest.approx([p - n for p, n in zip(plain, null)], abs=1e-4)
    assert len(set(np.round(null, 3))) > 1  # the prior that calibration removes is not flat


def test_calibrate_needs_loglik_and_reaches_the_predictor():
    with pytest.raises(ConfigError, match="calibrate"):
        _cfg({"calibrate": True})  # mode generate

    seen = []

    class Calibrating(ShotCopier):
        def score_options(self, audios, prompts, options, calibrate=False, **kw):
            seen.append(calibrate)
            return super().score_options(audios, prompts, options)

    evaluate(_cfg({"mode": "loglik", "calibrate": True}), Calibrating(), progress=False)
    assert seen and all(seen)
    evaluate(_cfg({"mode": "loglik", "calibrate": True}), ShotCopier(), progress=False)  # no calibrate argument: ranks without
