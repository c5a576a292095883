"""Score a model on a corpus test split, for the af-mini model card.

    python scripts/eval_af_mini.py --model audioflamingo/assets/af-mini --corpus data/corpus-small \
        [--cache runs/af-mini/encoder_cache.pt] --out runs/af-mini/scores.json

- classification: accuracy per label set, by ranking the row's OPTIONS by the log-likelihood of each
  option as the answer (and by greedy generation + exact match), next to chance = mean of 1/len(options);
- captioning (and the other generative tasks): greedy answers scored by exact match and word F1, next to a
  nearest-neighbour baseline that copies the caption of the most similar training clip (cosine of the
  model's own CLAP audio embedding, `embed_audio`).
The test split's audio files never occur in training (the corpus splits by group).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from audioflamingo import load_model
from audioflamingo.model.generate import GenerationConfig, generate
from audioflamingo.text import IGNORE, encode, pad_batch, single_text
from audioflamingo.train.data import ClipStore, FeatureCache, read_manifest


def words(s: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", s.lower())


def word_f1(pred: str, ref: str) -> float:
    p, r = Counter(words(pred)), Counter(words(ref))
    common = sum((p & r).values())
    if not common:
        return 0.0
    prec, rec = common / sum(p.values()), common / sum(r.values())
    return 2 * prec * rec / (prec + rec)


def norm(s: str) -> str:
    return " ".join(words(s))


@torch.no_grad()
def option_scores(model, feats, rows) -> list[list[float]]:
    """Sum of answer-token log-probs of each option (the whole answer chunk: option, end of chunk, EOS)."""
    tok = model.tokenizer
    seqs, labs, owner = [], [], []
    for i, r in enumerate(rows):
        for o in r["options"]:
            ids, lab = encode(tok, single_text(r["prompt"], o, None, 1, tok.bos_token, tok.eos_token))
            seqs.append(ids)
            labs.append(lab)
            owner.append(i)
    audio = model.encode_audio([[r["audio"]] for r in rows], [feats[r["audio"]] for r in rows])
    ids, mask = pad_batch(seqs, tok.pad_token_id, side="right")  # (O, T)
    labels, _ = pad_batch(labs, IGNORE, side="right")  # (O, T)
    logits, _ = model(ids, mask, audio.select(torch.tensor(owner)))  # (O, T, V)
    logp = logits[:, :-1].float().log_softmax(-1)  # (O, T-1, V)
    tgt = labels[:, 1:]  # (O, T-1)
    total = (logp.gather(-1, tgt.clamp(min=0)[..., None])[..., 0] * (tgt != IGNORE)).sum(-1)  # (O,)
    out = [[] for _ in rows]
    for i, s in zip(owner, total.tolist()):
        out[i].append(s)
    return out


@torch.no_grad()
def greedy(model, feats, rows, max_new_tokens=40) -> list[str]:
    tok = model.tokenizer
    seqs = [encode(tok, single_text(r["prompt"], None, None, 1, tok.bos_token, tok.eos_token))[0] for r in rows]
    ids, mask = pad_batch(seqs, tok.pad_token_id, side="left")  # (B, T)
    audio = model.encode_audio([[r["audio"]] for r in rows], [feats[r["audio"]] for r in rows])
    out = generate(model, ids, mask, audio, GenerationConfig(max_new_tokens=max_new_tokens), {model.media.eoc, model.media.eos})
    return [tok.decode(o, skip_special_tokens=True).strip() for o in out]


def embeddings(feats, keys) -> torch.Tensor:
    return torch.stack([F.normalize(feats[k].float().mean(dim=(0, 1)), dim=-1) for k in keys])  # (n, E)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint folder (default: the bundled model)")
    ap.add_argument("--corpus", required=True, help="folder with train.jsonl and test.jsonl")
    ap.add_argument("--split", default="test")
    ap.add_argument("--cache", default=None, help="encoder-output cache of the training run (saves encoding train clips)")
    ap.add_argument("--max-per-task", type=int, default=400)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    model = load_model(args.model).eval()
    corpus = Path(args.corpus)
    test = [r for r in read_manifest(corpus / f"{args.split}.jsonl") if not r.get("dialogue")]
    train = [r for r in read_manifest(corpus / "train.jsonl") if r["task"] == "caption"]
    by_task = defaultdict(list)
    for r in test:
        if len(by_task[r["task"]]) < args.max_per_task:
            by_task[r["task"]].append(r)
    clips = ClipStore(model.config.audio.sample_rate, model.config.audio)
    cache = FeatureCache(model, clips, Path(args.cache) if args.cache else None)
    keys = [r["audio"] for rs in by_task.values() for r in rs] + [r["audio"] for r in train]
    cache.fill(keys, progress=True)
    feats = cache.feats
    results: dict = {"model": str(args.model or "bundled"), "split": args.split, "tasks": {}}

    # classification: per label set
    cls = [r for r in by_task.pop("classification", []) if r.get("options")]
    per_set = defaultdict(lambda: {"n": 0, "rank_correct": 0, "gen_correct": 0, "chance": 0.0})
    for i in tqdm(range(0, len(cls), 8), desc="classification"):
        rows = cls[i : i + 8]
        scores = option_scores(model, feats, rows)
        gen = greedy(model, feats, rows, 16)
        for r, s, g in zip(rows, scores, gen):
            st = per_set[r.get("label_set", "all")]
            st["n"] += 1
            st["rank_correct"] += int(r["options"][max(range(len(s)), key=s.__getitem__)] == r["answer"])
            st["gen_correct"] += int(norm(g) == norm(r["answer"]))
            st["chance"] += 1 / len(r["options"])
    results["classification"] = {
        k: {"n": v["n"], "accuracy_ranked": v["rank_correct"] / v["n"], "accuracy_generated": v["gen_correct"] / v["n"],
            "chance": v["chance"] / v["n"]} for k, v in sorted(per_set.items())}

    # generative tasks, with the nearest-neighbour caption baseline for captioning
    train_keys = list(dict.fromkeys(r["audio"] for r in train))
    train_caption = {}
    for r in train:
        train_caption.setdefault(r["audio"], r["answer"])
    train_emb = embeddings(feats, train_keys)  # (P, E)
    for task, rows in sorted(by_task.items()):
        preds = []
        for i in tqdm(range(0, len(rows), args.batch), desc=task):
            preds += greedy(model, feats, rows[i : i + args.batch])
        res = {"n": len(rows), "exact_match": sum(norm(p) == norm(r["answer"]) for p, r in zip(preds, rows)) / len(rows),
               "word_f1": sum(word_f1(p, r["answer"]) for p, r in zip(preds, rows)) / len(rows),
               "examples": [{"audio": Path(r["audio"]).name, "reference": r["answer"], "prediction": p} for p, r in zip(preds[:5], rows[:5])]}
        if task in ("caption", "caption_long"):
            nn = (embeddings(feats, [r["audio"] for r in rows]) @ train_emb.T).argmax(1)  # (n,)
            copies = [train_caption[train_keys[j]] for j in nn.tolist()]
            res["nn_baseline"] = {"exact_match": sum(norm(c) == norm(r["answer"]) for c, r in zip(copies, rows)) / len(rows),
                                  "word_f1": sum(word_f1(c, r["answer"]) for c, r in zip(copies, rows)) / len(rows)}
        results["tasks"][task] = res
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "tasks"}, indent=1))
    for t, v in results["tasks"].items():
        print(t, {k: v[k] for k in v if k != "examples"})


if __name__ == "__main__":
    main()
