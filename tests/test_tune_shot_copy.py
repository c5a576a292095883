"""scripts/tune_shot_copy.py: its offline grid is the model's own copy mixture, not an approximation of it."""

import json
from pathlib import Path

from audioflamingo.model.loading import save_pretrained
from conftest import load_script, tiny_model

ROOT = Path(__file__).resolve().parents[1]


def test_grid_equals_the_model_ranking_with_that_setting(tmp_path, make_wav):
    rows = []
    for split, n in (("train", 6), ("val", 4)):
        for i in range(n):
            freq = 300 + 40 * i if i % 2 else 2900 + 40 * i
            make_wav(f"{split}{i}.wav", seconds=0.6, freq=freq, seed=i + (100 if split == "val" else 0))
            label = "low" if freq < 1000 else "high"
            rows.append({"id": f"{split}{i}", "audio": f"{split}{i}.wav", "prompt": "Pitch?", "answer": label, "task": "classification",
                         "label_set": "pitch", "split": split, **({"options": ["low", "high"]} if i % 3 else {})})
    for split in ("train", "val"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r["split"] == split))
    config = (ROOT / "configs/eval/fewshot-val.yaml").read_text()
    (tmp_path / "val.yaml").write_text(config)
    model = tiny_model(gates=1.0)
    save_pretrained(model, tmp_path / "ckpt")
    mod = load_script("tune_shot_copy")
    mod.main(["-c", str(tmp_path / "val.yaml"), "--model", str(tmp_path / "ckpt"), "--shots", "2", "--weights", "0,0.5",
              "--temperatures", "0.001", "--sample", "0", "--out", str(tmp_path / "grid.json"), f"data_root={tmp_path}"])
    grid = json.loads((tmp_path / "grid.json").read_text())["tasks"]["val_retrieved/k=2"]
    assert grid["n_items"] == 4

    # the same items, shots and options through the model itself with each setting
    import dataclasses
    from types import SimpleNamespace

    from audioflamingo.eval.metrics import normalize_label
    from audioflamingo.eval.runner import select_shots
    from audioflamingo.eval.tasks import build_items, build_pool, load_eval_config

    cfg = load_eval_config(str(tmp_path / "val.yaml"), [f"data_root={tmp_path}"])
    task = dataclasses.replace(cfg.tasks[0], options=None)
    items, pool = build_items(task, cfg.data_root), build_pool(task, cfg.data_root)
    shots = mod._shots_by_group(task, items, pool, 2, SimpleNamespace(same="label_set", seed=0), model, 8, select_shots)
    for lam in (0.0, 0.5):
        model.config.shot_copy.weight, model.config.shot_copy.temperature = lam, 0.001
        right = 0
        for it, ss in zip(items, shots):
            opts = it.options or ["high", "low"]
            sc = model.score_options(it.audio, it.prompt, opts, examples=[(s.audio, s.refs[0]) for s in ss])[0]
            right += normalize_label(opts[max(range(len(opts)), key=sc.__getitem__)]) == normalize_label(it.refs[0])
        assert grid["accuracy"][f"{lam}|0.001"] == right / len(items), lam
