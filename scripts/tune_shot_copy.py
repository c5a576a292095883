"""Choose `shot_copy.weight` (λ) and `shot_copy.temperature` (τ) on a validation few-shot set.

The copy component (audioflamingo/model/shot_copy.py) is a function of the LM's option log-likelihoods and
the CLAP similarities of the query to its examples, so one pass of the model with copying off gives every
(λ, τ) of the grid: log p(o) = log[(1 - λ) p_LM(o) + λ Σ_{i: a_i = o} softmax(sim / τ)_i]. The chosen
setting is then confirmed with the model itself (`audioflamingo eval ... --model-set shot_copy.weight=λ`).

    .venv/bin/python scripts/tune_shot_copy.py --model audioflamingo/assets/af-mini \
        -c configs/eval/fewshot-val.yaml data_root=data/corpus-standard

Use labels the model was trained on (the val split): the held-out labels of fewshot-heldout.yaml are the
test of the chosen setting, never its tuning set.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def _shots_by_group(task, items, pool, k, args, model, batch_size, select_shots):
    """Retrieved shots per item; with --same FIELD only from pool rows whose FIELD equals the query's (as the
    SFT k-shot manifest keeps shots of the query's own dataset and task)."""
    if not args.same:
        return select_shots(task, items, pool, k, args.seed, model, batch_size)
    out: list = [None] * len(items)
    for value in dict.fromkeys(it.row.get(args.same) for it in items):
        idx = [i for i, it in enumerate(items) if it.row.get(args.same) == value]
        sub = [p for p in pool if p.row.get(args.same) == value]
        for i, sh in zip(idx, select_shots(task, [items[i] for i in idx], sub, k, args.seed, model, batch_size)):
            out[i] = sh
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-c", "--config", required=True, help="eval config whose loglik tasks are the tuning set")
    ap.add_argument("--model", default=None, help="model folder (default: the bundled af-mini)")
    ap.add_argument("--shots", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--weights", type=_floats, default=[0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9])
    ap.add_argument("--temperatures", type=_floats, default=[0.01, 0.02, 0.05, 0.1, 0.2, 0.5])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--same", default="label_set", help="retrieve shots only among pool rows with the query's value of "
                    "this manifest field ('' for the whole pool)")
    ap.add_argument("--sample", type=int, default=300, help="a seeded random sample of this many items per task (0: all)")
    ap.add_argument("--out", default=None, help="also write the grid as JSON here")
    ap.add_argument("--show", type=lambda t: [tuple(map(float, x.split("|"))) for x in t.split(",")], default=None,
                    metavar="W|T,W|T", help="also print the accuracy per group (--same) at these grid points (each must be in the grid)")
    ap.add_argument("overrides", nargs="*", help="eval config overrides, e.g. data_root=data/corpus-standard")
    args = ap.parse_args(argv)

    import torch

    import audioflamingo
    from audioflamingo.eval.metrics import normalize_label
    from audioflamingo.eval.runner import embed_audio_cached, select_shots
    from audioflamingo.eval.tasks import build_items, build_pool, load_eval_config
    from audioflamingo.model.shot_copy import mix_sequence

    torch.set_num_threads(2)
    cfg = load_eval_config(args.config, list(args.overrides))
    model = audioflamingo.load_model(args.model, overrides=["shot_copy.weight=0"])  # the LM alone; mixed below
    grid: dict = {"config": args.config, "model": args.model or "af-mini (bundled)", "tasks": {}}
    for task in cfg.tasks:
        if task.mode != "loglik":
            continue
        if args.same:  # rows without their own option list are ranked over the answers of their label set
            task = dataclasses.replace(task, options=None)
        items, pool = build_items(task, cfg.data_root, cfg.limit), build_pool(task, cfg.data_root)
        answers = defaultdict(set)
        for it in items + pool:
            answers[it.row.get(args.same)].update(it.refs)
        for it in items:
            it.options = it.options or sorted(answers[it.row.get(args.same)])
        if args.sample and len(items) > args.sample:
            keep = np.random.default_rng(args.seed).choice(len(items), size=args.sample, replace=False)
            items = [items[i] for i in sorted(keep)]
        gold = [{normalize_label(r) for r in it.refs} for it in items]
        for k in args.shots:
            shots = _shots_by_group(task, items, pool, k, args, model, cfg.batch_size, select_shots)
            lm, sims = [], []
            for i in tqdm(range(0, len(items), cfg.batch_size), desc=f"{task.name} k={k}", leave=False):
                batch, bshots = items[i : i + cfg.batch_size], shots[i : i + cfg.batch_size]
                ex = [[{"audio": s.audio, "prompt": s.prompt, "answer": s.refs[0]} for s in ss] for ss in bshots]
                lm += model.score_options([it.audio for it in batch], [it.prompt for it in batch],
                                          [it.options for it in batch], examples=ex if k else None)
            q = embed_audio_cached(model, [it.audio for it in items], cfg.batch_size)  # (N, E)
            for n, ss in enumerate(shots):
                s = embed_audio_cached(model, [x.audio for x in ss], cfg.batch_size) if ss else np.zeros((0, q.shape[1]))  # (k, E)
                sims.append(s @ q[n])  # (k,)
            table, by_group = {}, {}
            for tau in args.temperatures:
                for lam in args.weights:
                    right: dict = defaultdict(list)  # group -> [0/1 per item]
                    for it, lp, sim, ss, g in zip(items, lm, sims, shots, gold):
                        w = (torch.as_tensor(sim) / tau).softmax(-1)  # (k,) as shot_weights
                        held = [x.refs[0] for x in ss]  # compared as strings: the same text encodes to the same tokens
                        scores = [float(mix_sequence(torch.tensor(l), held, o, w, lam)) for o, l in zip(it.options, lp)]
                        right[str(it.row.get(args.same))].append(normalize_label(it.options[int(np.argmax(scores))]) in g)
                    table[f"{lam}|{tau}"] = sum(map(sum, right.values())) / len(items)
                    by_group[f"{lam}|{tau}"] = {grp: [sum(v) / len(v), len(v)] for grp, v in sorted(right.items())}
            grid["tasks"][f"{task.name}/k={k}"] = {"n_items": len(items), "accuracy": table, "by_group": by_group}
            if args.show:
                rows = [f"{w}|{t}" for w, t in args.show]
                print(f"\n{task.name}, {k} shots: accuracy per {args.same} (items) at weight|temperature " + ", ".join(rows))
                for grp in by_group[rows[0]]:
                    print(f"  {grp} ({by_group[rows[0]][grp][1]}): " + " / ".join(f"{by_group[r][grp][0]:.3f}" for r in rows))
            print(f"\n{task.name}, {k} retrieved shots, {len(items)} items: accuracy by weight (rows) and temperature (columns)")
            print("| λ \\ τ | " + " | ".join(map(str, args.temperatures)) + " |")
            print("|---|" + "---:|" * len(args.temperatures))
            for lam in args.weights:
                print(f"| {lam} | " + " | ".join(f"{table[f'{lam}|{t}']:.3f}" for t in args.temperatures) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps(grid, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
