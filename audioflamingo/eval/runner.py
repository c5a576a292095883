"""The evaluation runner: one loop for every task; no per-dataset code path.

It talks to a *predictor*, any object with some of these batched methods (the AudioFlamingo model
offers them; the baselines in `baselines.py` too):

    ask(audios: list[str], prompts: list[str], *, examples=None, task=None, **generation) -> list[str]
    score_options(audios, prompts, options: list[list[str]], *, examples=None, task=None) -> list[list[float]]
    embed_audio(audios: list[str]) -> array (n, d)      embed_text(texts: list[str]) -> array (n, d)

`examples` (only passed for k > 0) holds, per item, its in-context shots as dicts
{"audio", "prompt", "answer"}; `task` (only passed when the task sets `task_prefix`) is the text of
AF1's "The task is <task>." prefix. Optional: `prepare_task(task_config, pool_items)` is called
before each task (baselines fit on the pool there), `supports_icl = False` limits a predictor to
0-shot, and `fingerprint() -> str` names the exact weights in the report.
Same config + same predictor => same numbers: example selection uses seeded generators keyed by
(seed, item id), never global random state.
"""

from __future__ import annotations

import hashlib
import math
import warnings
import weakref
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from audioflamingo.config import to_dict
from audioflamingo.eval.metrics import get_metric, mean_average_precision, multilabel_f1, normalize_label, retrieval_metrics
from audioflamingo.eval.parsers import get_parser
from audioflamingo.eval.tasks import EvalConfig, Item, TaskConfig, build_items, build_pool


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])


def unit_rows(x) -> np.ndarray:
    """Embeddings (tensor or array, (n, d)) -> float64 numpy rows of unit length."""
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)  # cosine similarity from here on


_EMBEDDINGS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # predictor -> {audio path: unit vector}


def embed_audio_cached(predictor, audios: list[str], batch_size: int) -> np.ndarray:
    """Unit embeddings of audio files; each file is embedded once per predictor (runs over k and seeds reuse them)."""
    if not hasattr(predictor, "embed_audio"):
        raise TypeError(f"{type(predictor).__name__} has no embed_audio(): needed for retrieved shots and retrieval tasks")
    try:
        cache = _EMBEDDINGS.setdefault(predictor, {})
    except TypeError:  # a predictor that cannot be weakly referenced: no cache
        cache = {}
    todo = list(dict.fromkeys(a for a in audios if a not in cache))
    for i in range(0, len(todo), batch_size):
        for a, v in zip(todo[i : i + batch_size], unit_rows(predictor.embed_audio(todo[i : i + batch_size]))):
            cache[a] = v
    return np.stack([cache[a] for a in audios]) if audios else np.zeros((0, 1))


def select_shots(task: TaskConfig, items: list[Item], pool: list[Item], k: int, seed: int, predictor, batch_size: int) -> list[list[Item]]:
    """k in-context examples per item, never from the item's own audio file.

    random: k distinct pool items, seeded by (seed, item id). retrieved: the nearest by the predictor's
    audio embedding, by the rule retrieval uses at training and inference time, ordered by `shot_order`.
    """
    if k == 0:
        return [[] for _ in items]
    if task.shot_selection == "random":
        out = []
        for it in items:
            candidates = [p for p in pool if p.audio != it.audio]
            if len(candidates) < k:
                raise ValueError(f"task {task.name}: pool has {len(candidates)} usable examples, {k} shots asked")
            idx = _rng(seed, it.id).choice(len(candidates), size=k, replace=False)
            out.append([candidates[i] for i in idx])
        return out
    # retrieved: the AF1 neighbour rule (audioflamingo/retrieval/neighbours.py) over an in-memory index of the
    # pool: nearest first, one example per distinct file, never the item's own file or id; then `shot_order`
    from audioflamingo.retrieval.index import AudioIndex
    from audioflamingo.retrieval.neighbours import NeighbourConfig, audio_identity, select_neighbours

    by_file: dict[str, int] = {}
    for j, p in enumerate(pool):
        by_file.setdefault(p.audio, j)  # a file is represented by its first pool item (its other items are never shown)
    first = list(by_file.values())
    pool_emb = embed_audio_cached(predictor, [pool[j].audio for j in first], batch_size)  # (F, d) one row per file
    item_emb = embed_audio_cached(predictor, [it.audio for it in items], batch_size)  # (N, d)
    rows = [{"audio": audio_identity(pool[j].audio), "prompt": pool[j].prompt, "answer": pool[j].refs[0], "pool": j} for j in first]
    index = AudioIndex.build([pool[j].id for j in first], pool_emb, rows, fingerprint=f"eval-pool:{task.name}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # too few distinct files is an error here, raised below
        chosen = select_neighbours(index, item_emb, [it.audio for it in items], NeighbourConfig(k=k, order=task.shot_order, seed=seed),
                                   [it.id for it in items])
    for it, shots in zip(items, chosen):
        if len(shots) < k:
            raise ValueError(f"task {task.name}: pool has only {len(shots)} distinct other files for item {it.id}, {k} shots asked")
    return [[pool[s.row["pool"]] for s in shots] for shots in chosen]


def _extra_kwargs(task: TaskConfig, shots: list[list[Item]]) -> dict:
    kw = {}
    if any(shots):
        kw["examples"] = [[{"audio": s.audio, "prompt": s.prompt, "answer": s.refs[0]} for s in ss] for ss in shots]
    if task.task_prefix:
        kw["task"] = task.task_prefix
    return kw


def _loglik_kwargs(task: TaskConfig, predictor) -> dict:
    """`calibrate` for predictors that support it (the model); baselines rank without it."""
    if not task.calibrate:
        return {}
    import inspect

    return {"calibrate": True} if "calibrate" in inspect.signature(predictor.score_options).parameters else {}


def _batches(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


def _softmax(x: list[float]) -> list[float]:
    m = max(x)
    if m == -math.inf:  # every option impossible: no preference
        return [1.0 / len(x)] * len(x)
    e = [math.exp(v - m) for v in x]
    return [v / sum(e) for v in e]


def run_task(task: TaskConfig, items: list[Item], pool: list[Item], predictor, k: int, seed: int,
             batch_size: int = 8, progress: bool = True) -> dict:
    """One (task, shots, seed) run: predictions, per-item results and the corpus score."""
    if task.mode == "retrieval":
        return _run_retrieval(task, items, predictor, batch_size)
    mode = task.mode
    if mode == "generate" and getattr(predictor, "ranks_only", False):
        if not all(it.options for it in items):
            raise ValueError(f"task {task.name}: {type(predictor).__name__} only ranks options and this task has none")
        mode = "loglik"
    shots = select_shots(task, items, pool, k, seed, predictor, batch_size)
    parser = get_parser(task.parser)
    rank_kw = _loglik_kwargs(task, predictor) if mode == "loglik" else {}  # once per run, not per batch
    raw, scores = [], []
    bar = tqdm(total=len(items), desc=f"{task.name} k={k} seed={seed}", disable=not progress, leave=False)
    for sl in _batches(len(items), batch_size):
        batch = items[sl]
        audios, prompts = [it.audio for it in batch], [it.prompt for it in batch]
        kw = _extra_kwargs(task, shots[sl])
        if mode == "generate":
            out = predictor.ask(audios, prompts, **to_dict(task.generation), **kw)
        else:
            opts = [it.options or [] for it in batch]
            sc = predictor.score_options(audios, prompts, opts, **kw, **rank_kw)
            scores.extend([list(map(float, s)) for s in sc])
            out = [o[int(np.argmax(s))] for o, s in zip(opts, sc)]
        if len(out) != len(batch):
            raise RuntimeError(f"predictor returned {len(out)} answers for a batch of {len(batch)}")
        raw.extend(out)
        bar.update(len(batch))
    bar.close()

    parsed = [parser.fn(r, it.options) for r, it in zip(raw, items)]
    preds = [p.answer for p in parsed]
    refs = [[parser.fn(r, it.options).answer for r in it.refs] if parser.canonical else it.refs for it in items]
    extra: dict = {"format_failures": sum(not p.matched for p in parsed)}
    if task.metric == "map":
        if any(it.options != items[0].options for it in items):
            raise ValueError(f"task {task.name}: metric map needs one option list shared by every item")
        labels = [normalize_label(o) for o in items[0].options]
        targets = np.array([[lab in {normalize_label(x) for x in it.labels} for lab in labels] for it in items], dtype=int)
        score, per_item = mean_average_precision(np.array(scores), targets), [None] * len(items)
    elif task.metric == "multilabel_f1":
        pred_sets = [set(filter(None, p.split(", "))) for p in preds]
        gold_sets = [set(it.labels) for it in items]
        score = multilabel_f1(pred_sets, gold_sets, "micro")
        extra["macro_f1"] = multilabel_f1(pred_sets, gold_sets, "macro")
        per_item = [float({normalize_label(x) for x in p} == {normalize_label(x) for x in g}) for p, g in zip(pred_sets, gold_sets)]
    else:
        score, per_item = get_metric(task.metric)(preds, refs)
    for name in task.extra_metrics:
        extra[name] = float(get_metric(name)(preds, refs)[0])
    results = []
    for i, it in enumerate(items):
        row = {"id": it.id, "audio": it.audio, "prompt": it.prompt, "raw": raw[i], "prediction": preds[i],
               "refs": refs[i], "score": per_item[i]}
        if shots[i]:
            row["shots"] = [s.id for s in shots[i]]
        if scores:
            row["confidence"] = max(_softmax(scores[i])) if scores[i] else None
        results.append(row)
    return {"shots": k, "seed": seed, "score": float(score), "extra": extra, "items": results}


def _run_retrieval(task: TaskConfig, items: list[Item], predictor, batch_size: int) -> dict:
    """CLAP protocol: each item is a clip with its captions (group_refs: true)."""
    audio = embed_audio_cached(predictor, [it.audio for it in items], batch_size)  # (n_audio, d)
    texts = [r for it in items for r in it.refs]
    owner = [i for i, it in enumerate(items) for _ in it.refs]
    if not hasattr(predictor, "embed_text"):
        raise TypeError(f"{type(predictor).__name__} has no embed_text(): needed for retrieval tasks")
    text = np.concatenate([unit_rows(predictor.embed_text(texts[sl])) for sl in _batches(len(texts), batch_size)])  # (n_text, d)
    m = retrieval_metrics(audio @ text.T, owner)  # similarities (n_audio, n_text)
    score = (m["a2t_mAP@10"] + m["t2a_mAP@10"]) / 2
    return {"shots": 0, "seed": None, "score": score, "extra": m,
            "items": [{"id": it.id, "audio": it.audio, "refs": it.refs} for it in items]}


def summarize(runs: list[dict]) -> list[dict]:
    """Mean and spread over seeds for each number of shots (std with ddof=1; 0 for one run)."""
    out = []
    for k in sorted({r["shots"] for r in runs}):
        s = np.array([r["score"] for r in runs if r["shots"] == k])
        out.append({"shots": k, "mean": float(s.mean()), "std": float(s.std(ddof=1)) if len(s) > 1 else 0.0,
                    "min": float(s.min()), "max": float(s.max()), "n_runs": int(len(s))})
    return out


def model_fingerprint(predictor, model_path: str | None = None) -> str:
    """predictor.fingerprint() if offered, else a hash of the model files, else the class name."""
    if hasattr(predictor, "fingerprint"):
        return str(predictor.fingerprint())
    if model_path and Path(model_path).exists():
        p = Path(model_path)
        files = sorted(f for f in (p.rglob("*") if p.is_dir() else [p]) if f.is_file())
        h = hashlib.sha256()
        for f in files:
            h.update(f.name.encode())
            h.update(f.read_bytes())
        return "sha256:" + h.hexdigest()[:16]
    return f"unversioned:{type(predictor).__name__}"


def _baseline_runs(task: TaskConfig, items, pool, baselines: dict, cfg: EvalConfig, progress: bool) -> dict:
    """The task's `baselines`, each run 0-shot on the same items: {name: run + fingerprint, or {"skipped": why}}."""
    out = {}
    for name in task.baselines:
        b, why = baselines[name]
        if why is not None:
            out[name] = {"skipped": why}
            continue
        if hasattr(b, "prepare_task"):
            b.prepare_task(task, pool)
        out[name] = {"fingerprint": b.fingerprint(), **run_task(task, items, pool, b, 0, cfg.seeds[0], cfg.batch_size, progress)}
    return out


def evaluate(cfg: EvalConfig, predictor, model_path: str | None = None, progress: bool = True, baselines: bool = True) -> dict:
    """Run every task of `cfg` with `predictor`; returns the results document (see report.py).

    With `baselines`, each task's `baselines` (baselines.py) also run, 0-shot, with `predictor` as their
    embedder; one that this predictor cannot serve (a model without a CLAP text head for clap_zeroshot)
    is reported as skipped, with the reason, and a warning.
    """
    from audioflamingo.eval.baselines import BASELINES  # baselines.py imports this module

    made: dict = {}
    if baselines:
        for name in dict.fromkeys(n for t in cfg.tasks for n in t.baselines):
            b = BASELINES[name](predictor)
            why = b.unavailable_reason()
            if why is not None:
                warnings.warn(f"baseline {name} skipped: {why}", stacklevel=2)
            made[name] = (b, why)
    tasks_out = []
    icl = getattr(predictor, "supports_icl", True)
    for task in cfg.tasks:
        items = build_items(task, cfg.data_root, cfg.limit)
        pool = build_pool(task, cfg.data_root)
        if hasattr(predictor, "prepare_task"):
            predictor.prepare_task(task, pool)
        runs = []
        for k in task.shots if icl else [0]:
            # zero-shot and retrieval have no randomness: one run; k-shot repeats per seed
            seeds = cfg.seeds if k > 0 else cfg.seeds[:1]
            for seed in seeds:
                runs.append(run_task(task, items, pool, predictor, k, seed, cfg.batch_size, progress))
        entry = {"name": task.name, "metric": task.metric, "mode": task.mode, "n_items": len(items),
                 "summary": summarize(runs), "runs": runs}
        if baselines and task.baselines:
            entry["baselines"] = _baseline_runs(task, items, pool, made, cfg, progress)
        tasks_out.append(entry)
    model = {"path": model_path, "fingerprint": model_fingerprint(predictor, model_path)}
    copy_cfg = getattr(getattr(predictor, "config", None), "shot_copy", None)
    if copy_cfg is not None:  # inference setting, not a weight: the fingerprint does not cover it
        model["shot_copy"] = to_dict(copy_cfg)
    return {"config": to_dict(cfg), "model": model, "tasks": tasks_out}
