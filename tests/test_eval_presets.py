"""Every public benchmark preset in configs/eval/ loads and runs end to end on fixture manifests.

An oracle predictor (told the gold answers) must get a perfect score on every classification /
tagging / QA task and CIDEr-D > 0 on captioning; a predictor that always says the same wrong thing
must not. This checks the plumbing each preset relies on: filters, grouping, answer fields, prompt
templates, option lists, parsers, metrics and AF1's decoding settings.
"""

from pathlib import Path

import numpy as np
import pytest

from audioflamingo.eval.runner import evaluate
from audioflamingo.eval.tasks import build_items, load_eval_config

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = {"clotho", "clotho_aqa", "audiocaps", "esc50", "fsd50k", "nsynth", "musiccaps"}
PRESETS = sorted(p for p in (ROOT / "configs" / "eval").glob("*.yaml") if p.stem in EXPECTED)  # public benchmarks
FIXTURES = Path(__file__).parent / "fixtures" / "eval" / "manifests"


def test_every_eval_config_loads():
    for path in (ROOT / "configs" / "eval").glob("*.yaml"):
        assert load_eval_config(str(path)).tasks


class Oracle:
    """Answers with the first reference (and scores gold options highest); records the calls."""

    def __init__(self, cfg, wrong: str | None = None):
        self.gold = {}
        for task in cfg.tasks:
            for it in build_items(task, cfg.data_root):
                self.gold[(it.audio, it.prompt)] = it
        self.wrong = wrong
        self.calls = []
        # CLAP-style embeddings for the presets' baselines: one axis per label; an audio points at its gold
        # labels, "A <label>." at its label. clap_zeroshot must then score perfectly too.
        self.axes = {x.lower(): None for task in cfg.tasks if isinstance(task.options, list) for x in task.options}
        self.audio_labels = {}
        for it in self.gold.values():
            self.audio_labels.setdefault(it.audio, set()).update(x.lower() for x in it.labels + it.refs)
            self.axes.update({x.lower(): None for x in it.labels + it.refs})
        self.axes = {lab: i for i, lab in enumerate(self.axes)}

    def embed_audio(self, audios):
        out = np.zeros((len(audios), len(self.axes)))
        for row, a in zip(out, audios):
            row[[self.axes[lab] for lab in self.audio_labels[a]]] = 1.0
        return out

    def embed_text(self, texts):
        assert all(t.startswith("A ") and t.endswith(".") for t in texts), texts  # the documented template
        return np.eye(len(self.axes))[[self.axes[t[2:-1].lower()] for t in texts]]

    def ask(self, audios, prompts, **kw):
        self.calls.append(kw)
        out = []
        for a, p in zip(audios, prompts):
            it = self.gold[(a, p)]
            answer = ", ".join(it.labels) if it.row.get("task") == "tagging" else it.refs[0]
            out.append((self.wrong or answer) + "<|endofchunk|>")
        return out

    def score_options(self, audios, prompts, options, **kw):
        self.calls.append(kw)
        out = []
        for a, p, opts in zip(audios, prompts, options):
            it = self.gold[(a, p)]
            gold = {x.lower() for x in it.labels + it.refs}
            out.append([0.0 if (o.lower() in gold and not self.wrong) else -1.0 - i / 100 for i, o in enumerate(opts)])
        return out


def test_every_benchmark_has_a_preset():
    assert {p.stem for p in PRESETS} >= EXPECTED


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_runs_on_fixtures(preset):
    cfg = load_eval_config(preset, [f"data_root={FIXTURES}", "seeds=[0]"])
    for task in cfg.tasks:  # AF1's decoding preset everywhere
        assert (task.generation.num_beams, task.generation.max_new_tokens) == (3, 128)
        assert task.task_prefix
    oracle = Oracle(cfg)
    results = evaluate(cfg, oracle, progress=False)
    assert [t["name"] for t in results["tasks"]] == [t.name for t in cfg.tasks]
    for task_cfg, task in zip(cfg.tasks, results["tasks"]):
        score = task["summary"][0]["mean"]
        if task["metric"] == "cider_d":
            assert score > 0.5, task["name"]
        else:
            assert score == pytest.approx(1.0), task["name"]
        run = task["runs"][0]
        assert len(run["items"]) == task["n_items"] > 0
        assert all(it["prediction"] is not None for it in run["items"])
    for task_cfg, task in zip(cfg.tasks, results["tasks"]):  # baselines beside the model, on the same items
        base = task.get("baselines", {})
        assert set(base) == set(task_cfg.baselines), task["name"]
        for name, b in base.items():
            assert len(b["items"]) == task["n_items"], (task["name"], name)
        if "clap_zeroshot" in base:
            assert base["clap_zeroshot"]["score"] == pytest.approx(1.0), task["name"]
    gen_calls = [c for c in oracle.calls if "num_beams" in c]
    assert all(c["num_beams"] == 3 and c["max_new_tokens"] == 128 and c["task"] for c in gen_calls)

    wrong = evaluate(cfg, Oracle(cfg, wrong="a ukulele"), progress=False)
    for task, bad in zip(results["tasks"], wrong["tasks"]):
        assert bad["summary"][0]["mean"] < task["summary"][0]["mean"], task["name"]


def test_clotho_aqa_filters_and_prompt():
    cfg = load_eval_config(ROOT / "configs" / "eval" / "clotho_aqa.yaml", [f"data_root={FIXTURES}"])
    yes_no, open_ = (build_items(t, cfg.data_root) for t in cfg.tasks)
    # fixture: 6 questions; "Is it raining?" (no, yes, no) and "What animal" (bird/birds) are not unanimous
    assert [it.row["prompt"] for it in yes_no] == ["Is there a dog barking?", "Is a car passing?"]
    assert [it.refs for it in open_] == [["three"] * 3, ["a car"] * 3]
    assert yes_no[0].prompt == "please answer this question: Is there a dog barking?\nOPTIONS:\nyes.\nno."


def test_nsynth_source_reads_nested_answer_and_esc50_renders_options():
    cfg = load_eval_config(ROOT / "configs" / "eval" / "nsynth.yaml", [f"data_root={FIXTURES}"])
    source = build_items(cfg.tasks[1], cfg.data_root)
    assert [it.refs[0] for it in source] == ["acoustic", "synthetic", "electronic", "synthetic"]
    assert source[0].prompt == "what is the source of this music?\nOPTIONS:\n - acoustic.\n - electronic.\n - synthetic."
    esc = load_eval_config(ROOT / "configs" / "eval" / "esc50.yaml", [f"data_root={FIXTURES}"])
    assert len(esc.tasks[0].options) == 50 and esc.tasks[1].mode == "loglik"
    assert build_items(esc.tasks[0], esc.data_root)[0].prompt.startswith("classify this sound.\nOPTIONS:\n - airplane.\n")
