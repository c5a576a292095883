"""Score a model on a corpus test split, for the af-mini model card.

    python scripts/eval_af_mini.py --model audioflamingo/assets/af-mini --corpus data/corpus-standard \
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
import math
from collections import Counter, defaultdict
from pathlib import Path

import torch
from tqdm import tqdm

from audioflamingo import load_model
from audioflamingo.model.generate import GenerationConfig, generate
from audioflamingo.model.mbr import draw_samples, mbr_choose, word_f1, words
from audioflamingo.model.shot_copy import CopyMixture, answer_spans, shot_weights
from audioflamingo.text import IGNORE, encode, icl_text, pad_batch, single_text
from audioflamingo.train.data import ClipStore, FeatureCache, read_manifest


def norm(s: str) -> str:
    return " ".join(words(s))


def text_scores(preds: list[str], rows: list[dict]) -> dict:
    """Exact match (after lowercasing and dropping punctuation) and word F1 of answers against the rows' references."""
    return {"exact_match": sum(norm(p) == norm(r["answer"]) for p, r in zip(preds, rows)) / len(rows),
            "word_f1": sum(word_f1(p, r["answer"]) for p, r in zip(preds, rows)) / len(rows)}


def record(res: dict, name: str, got: list[str], rows: list[dict], baselines: dict[str, list[str]], dump: bool) -> None:
    """res[name] = the scores of answers `got`, with their paired gain over each baseline ('gain_over_<key>');
    with `dump`, each answer also goes into its item of res['all']."""
    res[name] = {**text_scores(got, rows), **{f"gain_over_{k}": paired_gain(got, b, rows) for k, b in baselines.items()}}
    if dump:
        for d, c in zip(res["all"], got):
            d[name] = c


def chance_p_value(correct: int, chances: list[float]) -> float:
    """P(at least `correct` right answers) for a guesser that gets item i right with probability chances[i]
    (exact: the Poisson-binomial distribution, by convolution). Small = clearly above chance; on a few items
    even a perfect score is not small (2 items at 1/4: 0.0625)."""
    dist = [1.0]  # dist[j] = P(j right so far)
    for q in chances:
        dist = [(dist[j] if j < len(dist) else 0.0) * (1 - q) + (dist[j - 1] * q if j else 0.0) for j in range(len(dist) + 1)]
    return float(sum(dist[correct:]))


def paired_gain(preds: list[str], baseline: list[str], rows: list[dict], samples: int = 2000, seed: int = 0) -> dict:
    """Mean per-item word-F1 gain of `preds` over `baseline` on the same rows, with a 95 % paired bootstrap
    interval (items resampled with replacement, `samples` times, seeded): an interval above 0 = clearly better."""
    gain = torch.tensor([word_f1(p, r["answer"]) - word_f1(b, r["answer"]) for p, b, r in zip(preds, baseline, rows)], dtype=torch.float64)  # (n,)
    idx = torch.randint(len(gain), (samples, len(gain)), generator=torch.Generator().manual_seed(seed))  # (samples, n)
    lo, hi = torch.quantile(gain[idx].mean(1), torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return {"mean": gain.mean().item(), "ci95": [lo, hi], "wins": int((gain > 0).sum()), "losses": int((gain < 0).sum())}


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


def _prompts(model, feats, rows, task_prefix=False):
    """The rows' plain prompts (no examples), left-padded, and their audio tokens from cached features."""
    tok = model.tokenizer
    seqs = [encode(tok, single_text(r["prompt"], None, r["task"] if task_prefix else None, 1, tok.bos_token, tok.eos_token))[0]
            for r in rows]
    ids, mask = pad_batch(seqs, tok.pad_token_id, side="left")  # (B, T)
    return ids, mask, model.encode_audio([[r["audio"]] for r in rows], [feats[r["audio"]] for r in rows])


@torch.no_grad()
def greedy(model, feats, rows, max_new_tokens=128, num_beams=1, task_prefix=False, copy=None) -> list[str]:
    """Answers to the rows' prompts (no examples); `copy`: a CopyMixture to decode from instead of the LM alone."""
    ids, mask, audio = _prompts(model, feats, rows, task_prefix)
    out = generate(model, ids, mask, audio, GenerationConfig(max_new_tokens=max_new_tokens, num_beams=num_beams),
                   {model.media.eoc, model.media.eos}, copy=copy)
    return [model.tokenizer.decode(o, skip_special_tokens=True).strip() for o in out]


@torch.no_grad()
def sample_answers(model, feats, rows, n, temperature, max_new_tokens=128, seed=0) -> list[list[str]]:
    """n samples of each row's answer (the library's MBR sampling, model/mbr.py: full vocabulary, `temperature`, seeded)."""
    ids, mask, audio = _prompts(model, feats, rows)
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, mbr_samples=n, mbr_temperature=temperature, seed=seed)
    got = draw_samples(model, ids, mask, audio, cfg, {model.media.eoc, model.media.eos})
    return [[model.tokenizer.decode(o, skip_special_tokens=True).strip() for o in row] for row in got]


@torch.no_grad()
def greedy_rag(model, feats, rows, shots, max_new_tokens=128, num_beams=1) -> list[str]:
    """Like `greedy`, with in-context examples: shots[i] = [(audio, prompt, answer)], nearest last."""
    tok = model.tokenizer
    seqs = [encode(tok, icl_text([(p, a) for _, p, a in sh], r["prompt"], None, tok.bos_token, tok.eos_token, 1))[0]
            for r, sh in zip(rows, shots)]
    ids, mask = pad_batch(seqs, tok.pad_token_id, side="left")  # (B, T)
    audios = [[a for a, _, _ in sh] + [r["audio"]] for r, sh in zip(rows, shots)]
    audio = model.encode_audio(audios, [feats[a] for sample in audios for a in sample])
    copy, sc = None, model.config.shot_copy
    if sc.weight > 0:  # mixed with the examples' captions, weighted by CLAP similarity (model/shot_copy.py)
        w = shot_weights(audio.embedding, [len(sh) for sh in shots], [1] * len(rows), sc.temperature)
        copy = CopyMixture.from_prompts([s.tolist() for s in seqs], w, sc.weight, model.media.sep, model.media.eoc)
    out = generate(model, ids, mask, audio, GenerationConfig(max_new_tokens=max_new_tokens, num_beams=num_beams),
                   {model.media.eoc, model.media.eos}, copy=copy)
    return [tok.decode(o, skip_special_tokens=True).strip() for o in out]


@torch.no_grad()
def greedy_knn(model, feats, rows, neighbours, weight, temperature, max_new_tokens=128, num_beams=1) -> list[str]:
    """Like `greedy` (the plain prompt, no examples in it), decoding from the LM mixed with the captions of the
    row's nearest training clips: neighbours[i] = [(caption, cosine)], weighted softmax(cosine / temperature),
    mixture weight `weight` (kNN-LM, model/shot_copy.py's CopyMixture with the neighbours as the copy sources)."""
    tok = model.tokenizer
    answers, weights = [], []
    for r, near in zip(rows, neighbours):  # each caption tokenised as it stands in a training sample
        full = [encode(tok, single_text(r["prompt"], c, None, 1, tok.bos_token, tok.eos_token))[0].tolist() for c, _ in near]
        answers.append([answer_spans(f, model.media.sep, model.media.eoc)[-1] for f in full])
        weights.append((torch.tensor([s for _, s in near]) / temperature).softmax(-1))  # (K,)
    return greedy(model, feats, rows, max_new_tokens, num_beams, copy=CopyMixture(answers, weights, weight))


def embeddings(model, feats, keys) -> torch.Tensor:
    return torch.stack([model.audio_embedding(feats[k]) for k in keys])  # (n, E)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint folder (default: the bundled model)")
    ap.add_argument("--corpus", required=True, help="folder with train.jsonl and test.jsonl")
    ap.add_argument("--split", default="test")
    ap.add_argument("--cache", default=None, help="encoder-output cache of the training run (saves encoding train clips)")
    ap.add_argument("--exclude-seen", default=None,
                    help="an encoder-output cache file: test items whose audio is a key in it are dropped (clips an earlier stage saw)")
    ap.add_argument("--max-per-task", type=int, default=400, help="a seeded random sample of at most this many items per generative task (classification: all)")
    ap.add_argument("--rag", type=int, default=0, metavar="K",
                    help="also caption with the K nearest training clips' captions as in-context examples (nearest last)")
    ap.add_argument("--shot-copy", type=float, nargs="+", default=None, metavar="WEIGHT",
                    help="with --rag: shot_copy.weight values (copying the examples' captions), one rag_K_copyW score each "
                         "(default: the model's own setting, one rag_K score)")
    ap.add_argument("--shot-copy-temperature", type=float, default=None, metavar="TAU",
                    help="with --rag: shot_copy.temperature (default: the model's own setting)")
    ap.add_argument("--knn", type=int, default=0, metavar="K",
                    help="also caption with the LM mixed with the captions of the K nearest training clips, kept out of the prompt "
                         "(kNN-LM; weights --knn-weight, temperature --knn-temperature)")
    ap.add_argument("--knn-weight", type=float, nargs="+", default=[0.5], metavar="LAMBDA", help="with --knn: mixture weights, one knn_K_wLAMBDA score each")
    ap.add_argument("--knn-temperature", type=float, default=0.02, metavar="TAU", help="with --knn: softmax temperature over the neighbours' cosines")
    ap.add_argument("--rerank", type=int, default=0, metavar="K",
                    help="also caption by letting the model choose, by its own likelihood, among its answer and the captions of the K nearest training clips")
    ap.add_argument("--mbr", type=int, default=0, metavar="N",
                    help="also caption by minimum Bayes risk: among the greedy answer and N samples of the model, the one with the "
                         "highest expected word F1 against the samples (and, with --mbr-knn-weight, the nearest training captions)")
    ap.add_argument("--mbr-temperature", type=float, default=1.0, help="with --mbr: sampling temperature")
    ap.add_argument("--mbr-knn", type=int, default=8, metavar="K", help="with --mbr-knn-weight: how many nearest training captions")
    ap.add_argument("--mbr-knn-weight", type=float, nargs="+", default=[0.0], metavar="BETA",
                    help="with --mbr: the evidence mass of the K nearest training clips' captions (softmax of cosine / "
                         "--knn-temperature; also candidates), the samples share 1 - BETA; one mbr_N_bBETA score each")
    ap.add_argument("--fuse", type=int, default=0, metavar="K",
                    help="also caption by a product of experts over the greedy answer and the K nearest training clips' captions: "
                         "the model's log-likelihood of each + ALPHA x log(the neighbours' vote for it), --fuse-weight")
    ap.add_argument("--fuse-weight", type=float, nargs="+", default=[1.0], metavar="ALPHA", help="with --fuse: one fuse_K_aALPHA score each")
    ap.add_argument("--pool-val", type=int, default=0, metavar="N",
                    help="label sets with fewer than N scored items are also scored on val + test together (val audio is never trained on either), reported as '<set>+val'")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=128,
                    help="answer length limit for the generative tasks (long captions reach 97 tokens; a limit of 40 cut a third of them)")
    ap.add_argument("--num-beams", type=int, default=1, help="beam search for the generative tasks (AF1 used 3)")
    ap.add_argument("--task-prefix", action="store_true", help='prompts start "The task is <task>. " (as in half of training)')
    ap.add_argument("--tasks", nargs="*", default=None, help="score only these tasks (e.g. caption caption_long; default: all)")
    ap.add_argument("--dump", action="store_true", help="keep every prediction in the output file")
    ap.add_argument("--no-baselines", action="store_true",
                    help="skip the nearest-neighbour caption copy and --rag (no train clip is encoded: another model's scores on the same items, fast)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a shared machine)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model).eval()
    if args.shot_copy_temperature is not None:
        model.config.shot_copy.temperature = args.shot_copy_temperature
    corpus = Path(args.corpus)
    test = [r for r in read_manifest(corpus / f"{args.split}.jsonl") if not r.get("dialogue")]
    if args.tasks:
        test = [r for r in test if r["task"] in args.tasks]
    train = [r for r in read_manifest(corpus / "train.jsonl") if r["task"] in ("caption", "caption_long")]
    dropped = 0
    if args.exclude_seen:
        seen = set(torch.load(args.exclude_seen, weights_only=True)["feats"])
        dropped = sum(r["audio"] in seen for r in test)
        test = [r for r in test if r["audio"] not in seen]
        print(f"dropped {dropped} {args.split} items whose audio {args.exclude_seen} holds")
    by_task = defaultdict(list)
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(0)).tolist()  # not the manifest's order
    for r in [test[i] for i in order]:
        if r["task"] == "classification" or len(by_task[r["task"]]) < args.max_per_task:  # every label set whole
            by_task[r["task"]].append(r)
    clips = ClipStore(model.config.audio.sample_rate, model.config.audio)
    cache = FeatureCache(model, clips, Path(args.cache) if args.cache else None)
    if args.no_baselines:
        train, args.rag = [], 0
    keys = [r["audio"] for rs in by_task.values() for r in rs] + [r["audio"] for r in train]
    cache.fill(keys, progress=True)
    feats = cache.feats
    results: dict = {"model": str(args.model or "bundled"), "split": args.split, "dropped_seen": dropped,
                     "items": sum(map(len, by_task.values())), "tasks": {}}

    # classification: per label set
    cls = [r for r in by_task.pop("classification", []) if r.get("options")]
    if args.pool_val:  # tiny label sets: their val items too, counted in a separate '<set>+val' row
        sizes = Counter(r.get("label_set", "all") for r in cls)
        val = [r for r in read_manifest(corpus / "val.jsonl") if r["task"] == "classification" and r.get("options")]
        # (not filtered by --exclude-seen: the CLAP stage encodes val clips for its validation recall only)
        small = {r.get("label_set", "all") for r in val} | set(sizes)
        small = {k for k in small if sizes.get(k, 0) < args.pool_val}
        pooled = [{**r, "label_set": r.get("label_set", "all") + "+val"} for r in cls + val if r.get("label_set", "all") in small]
        cache.fill([r["audio"] for r in pooled], progress=True)
        cls += pooled
    per_set = defaultdict(lambda: {"n": 0, "rank_correct": 0, "gen_correct": 0, "p": []})  # p: each item's chance
    for i in tqdm(range(0, len(cls), 8), desc="classification"):
        rows = cls[i : i + 8]
        scores = option_scores(model, feats, rows)
        gen = greedy(model, feats, rows, 16)
        for r, s, g in zip(rows, scores, gen):
            st = per_set[r.get("label_set", "all")]
            st["n"] += 1
            st["rank_correct"] += int(r["options"][max(range(len(s)), key=s.__getitem__)] == r["answer"])
            st["gen_correct"] += int(norm(g) == norm(r["answer"]))
            st["p"].append(1 / len(r["options"]))
    results["classification"] = {
        k: {"n": v["n"], "accuracy_ranked": v["rank_correct"] / v["n"], "accuracy_generated": v["gen_correct"] / v["n"],
            "chance": sum(v["p"]) / v["n"], "p_chance_ranked": chance_p_value(v["rank_correct"], v["p"])}
        for k, v in sorted(per_set.items())}

    # generative tasks, with the nearest-neighbour caption baseline for captioning
    pools = {}  # task -> (train clips, their answer for that task, (P, E) embeddings)
    for task in ("caption", "caption_long") if train else ():  # none with --no-baselines
        answer = {}
        for r in train:
            if r["task"] == task:
                answer.setdefault(r["audio"], (r["answer"], r["prompt"]))
        keys = list(answer)
        pools[task] = (keys, answer, embeddings(model, feats, keys))
    for task, rows in sorted(by_task.items()):
        preds = []
        for i in tqdm(range(0, len(rows), args.batch), desc=task):
            preds += greedy(model, feats, rows[i : i + args.batch], args.max_new_tokens, num_beams=args.num_beams, task_prefix=args.task_prefix)
        res = {"n": len(rows), **text_scores(preds, rows),
               "examples": [{"audio": Path(r["audio"]).name, "reference": r["answer"], "prediction": p} for p, r in zip(preds[:5], rows[:5])]}
        if args.dump:
            res["all"] = [{"audio": r["audio"], "reference": r["answer"], "prediction": p} for p, r in zip(preds, rows)]
        if task in pools:  # copy the same task's answer of the nearest training clip
            keys, answer, emb = pools[task]
            sims = embeddings(model, feats, [r["audio"] for r in rows]) @ emb.T  # (n, P)
            copies = [answer[keys[j]][0] for j in sims.argmax(1).tolist()]
            if args.dump:
                for d, c in zip(res["all"], copies):
                    d["nn_copy"] = c
            res["nn_baseline"] = text_scores(copies, rows)
            res["gain_over_nn"] = paired_gain(preds, copies, rows)  # the model alone vs the copy, item by item
            # a stronger copy: among the 8 nearest training captions, the one that agrees most (word F1) with all 8,
            # each weighted softmax(cosine / --knn-temperature): MBR over the neighbours alone, no model
            top = sims.topk(8, dim=1)
            consensus = []
            for js, vs in zip(top.indices.tolist(), top.values.tolist()):
                near = [(answer[keys[j]][0], v) for j, v in zip(js, vs)]  # the nearest first: ties go to it
                consensus.append(([near[0][0]] + [a for a, _ in near])[mbr_choose(near[0][0], [], near, 1.0, args.knn_temperature)])
            record(res, "nn_consensus_8", consensus, rows, {"nn": copies}, args.dump)
            if args.rag:  # the model with its K nearest training clips as examples (one per file; nearest last)
                near = sims.topk(args.rag, dim=1).indices.flip(1).tolist()  # (n, K) farthest first
                shots = [[(keys[j], answer[keys[j]][1], answer[keys[j]][0]) for j in js] for js in near]
                for weight in args.shot_copy or [None]:
                    if weight is not None:
                        model.config.shot_copy.weight = weight
                    rag = []
                    for i in tqdm(range(0, len(rows), args.batch), desc=f"{task} rag"):
                        rag += greedy_rag(model, feats, rows[i : i + args.batch], shots[i : i + args.batch], args.max_new_tokens, num_beams=args.num_beams)
                    record(res, f"rag_{args.rag}" + (f"_copy{weight}" if weight is not None else ""), rag, rows, {"nn": copies}, args.dump)
            if args.knn:  # the LM mixed with the K nearest training clips' captions (none in the prompt)
                top = sims.topk(args.knn, dim=1)
                near = [[(answer[keys[j]][0], v) for j, v in zip(js, vs)] for js, vs in zip(top.indices.tolist(), top.values.tolist())]
                for weight in args.knn_weight:
                    got = []
                    for i in tqdm(range(0, len(rows), args.batch), desc=f"{task} knn {weight}"):
                        got += greedy_knn(model, feats, rows[i : i + args.batch], near[i : i + args.batch], weight,
                                          args.knn_temperature, args.max_new_tokens, args.num_beams)
                    record(res, f"knn_{args.knn}_w{weight}", got, rows, {"nn": copies, "model": preds}, args.dump)
            if args.mbr:  # minimum Bayes risk over the model's samples (+ the neighbours' captions)
                samples = []
                for i in tqdm(range(0, len(rows), args.batch), desc=f"{task} mbr samples"):
                    samples += sample_answers(model, feats, rows[i : i + args.batch], args.mbr, args.mbr_temperature, args.max_new_tokens, seed=i)
                top = sims.topk(args.mbr_knn, dim=1)
                for beta in args.mbr_knn_weight:  # the library's choice (model/mbr.py), as `ask --preset mbr [--mbr-rag]`
                    got = []
                    for p, ss, js, vs in zip(preds, samples, top.indices.tolist(), top.values.tolist()):
                        near = [(answer[keys[j]][0], v) for j, v in zip(js, vs)]
                        got.append(([p] + ss + [a for a, _ in near])[mbr_choose(p, ss, near, beta, args.knn_temperature)])
                    record(res, f"mbr_{args.mbr}_b{beta}", got, rows, {"nn": copies, "model": preds, "nn_consensus_8": consensus}, args.dump)
            if args.fuse:  # product of experts: model likelihood x neighbours' vote (softmax of cosine / --knn-temperature)
                top = sims.topk(args.fuse, dim=1)
                cand_rows, votes = [], []
                for r, p, js, vs in zip(rows, preds, top.indices.tolist(), top.values):
                    vote = Counter()
                    for j, w in zip(js, (vs / args.knn_temperature).softmax(-1).tolist()):
                        vote[answer[keys[j]][0]] += w
                    cand_rows.append({**r, "options": list(dict.fromkeys([p] + list(vote)))})
                    votes.append(vote)
                lik = []
                for i in tqdm(range(0, len(cand_rows), 8), desc=f"{task} fuse"):
                    lik += option_scores(model, feats, cand_rows[i : i + 8])
                for alpha in args.fuse_weight:
                    got = []
                    for r, v, ls in zip(cand_rows, votes, lik):
                        sc = [l + alpha * math.log(1e-3 + v.get(o, 0.0)) for o, l in zip(r["options"], ls)]
                        got.append(r["options"][max(range(len(sc)), key=sc.__getitem__)])
                    record(res, f"fuse_{args.fuse}_a{alpha}", got, rows, {"nn": copies, "model": preds}, args.dump)
            if args.rerank:  # the model picks among its own answer and the K nearest training clips' captions
                near = sims.topk(args.rerank, dim=1).indices.tolist()  # (n, K)
                picked, picked_mean = [], []
                for i in tqdm(range(0, len(rows), 8), desc=f"{task} rerank"):
                    chunk = []
                    for r, js, p in zip(rows[i : i + 8], near[i : i + 8], preds[i : i + 8]):
                        cands = list(dict.fromkeys([p] + [answer[keys[j]][0] for j in js]))
                        chunk.append({**r, "options": cands})
                    for r, sc in zip(chunk, option_scores(model, feats, chunk)):
                        lens = [len(model.tokenizer(o, add_special_tokens=False)["input_ids"]) + 1 for o in r["options"]]
                        picked.append(r["options"][max(range(len(sc)), key=sc.__getitem__)])
                        picked_mean.append(r["options"][max(range(len(sc)), key=lambda k: sc[k] / lens[k])])
                for name, got in (("rerank", picked), ("rerank_mean", picked_mean)):
                    res[f"{name}_{args.rerank}"] = text_scores(got, rows)
        results["tasks"][task] = res
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "tasks"}, indent=1))
    for t, v in results["tasks"].items():
        print(t, {k: v[k] for k in v if k != "examples"})


if __name__ == "__main__":
    main()
