"""Does the frozen audio encoder carry a label set? A linear probe and a 1-nearest-neighbour classifier on
the encoder outputs cached by training (`encoder_cache`), per closed label set of a corpus.

    python scripts/probe_label_sets.py --corpus data/corpus-standard --cache runs/af-mini/encoder_cache.pt

Features per clip: the mean over windows and tokens of the cached encoder output (W, T, D) -> (D,).
Trained on the train split's clips, scored on val + test clips (audio never in train), next to the
majority class. A label set the probe separates but the model does not is a training problem (too few
items, too little weight), not an encoder problem; one the probe cannot separate needs a better encoder.

    python scripts/probe_label_sets.py --corpus data/corpus-standard --pitch [--label-sets chord_quality,key]

`--pitch` probes the parameter-free pitch-class features of the encoder's pitch branch (`encoder.pitch`,
`PitchClassFeatures`: chroma, interval and triad profiles per frame) computed from the audio, mean over
frames, instead of a cache: what the pitch branch can give the encoder head.

    python scripts/probe_label_sets.py --corpus data/corpus-standard --summary [--preset af-mini]

`--summary` probes the window summaries that `transform.pitch` / `transform.rhythm` add to the audio tokens
(`WindowSummary`: 146 pitch-class values + a 48-bin onset periodicity profile per window of the preset's
windowing), mean over windows: what the LM can read besides the encoder.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F


def clip_labels(corpus: Path) -> dict[str, dict[str, tuple[str, str]]]:
    """label set -> {audio path as the cache keys it: (label, split)} from the corpus' train/val/test manifests."""
    out: dict[str, dict[str, tuple[str, str]]] = defaultdict(dict)
    for split in ("train", "val", "test"):
        for line in (corpus / f"{split}.jsonl").read_text().splitlines():
            row = json.loads(line)
            if row.get("label_set") and row.get("label"):
                out[row["label_set"]][str(corpus / row["audio"])] = (row["label"], split)
    return out


def probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, classes: int, l2: float = 1e-3,
          steps: int = 100) -> torch.Tensor:
    """L2-regularised multinomial logistic regression (L-BFGS) on standardised features -> predicted classes
    of test_x. (Adam would move the weights of noise features as fast as the informative ones.)"""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-5
    x = (train_x - mu) / sd  # (n, D)
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def loss():
        opt.zero_grad()
        out = F.cross_entropy(x @ w + b, train_y) + l2 * (w**2).sum()
        out.backward()
        return out

    opt.step(loss)
    with torch.no_grad():
        return (((test_x - mu) / sd) @ w + b).argmax(1)


def nearest(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor) -> torch.Tensor:
    sims = F.normalize(test_x, dim=1) @ F.normalize(train_x, dim=1).T  # (n_test, n_train)
    return train_y[sims.argmax(1)]


def score(feats: dict[str, torch.Tensor], labels: dict[str, tuple[str, str]]) -> dict | None:
    items = [(a, lab, split) for a, (lab, split) in sorted(labels.items()) if a in feats]
    names = sorted({lab for _, lab, _ in items})
    train = [(a, lab) for a, lab, s in items if s == "train"]
    held = [(a, lab) for a, lab, s in items if s != "train"]
    if len(names) < 2 or not train or not held:
        return None
    pooled = lambda rows: torch.stack([feats[a].float().mean(dim=tuple(range(feats[a].dim() - 1))) for a, _ in rows])  # (n, D)
    x, y = pooled(train), torch.tensor([names.index(lab) for _, lab in train])
    xt, yt = pooled(held), torch.tensor([names.index(lab) for _, lab in held])
    return {"labels": len(names), "train_clips": len(train), "eval_clips": len(held),
            "probe": float((probe(x, y, xt, len(names)) == yt).float().mean()),
            "nearest": float((nearest(x, y, xt) == yt).float().mean()),
            "majority": float((yt == y.mode().values).float().mean())}


def pitch_features(corpus: Path, audios, sample_rate: int = 16000) -> dict[str, torch.Tensor]:
    """{audio path: (73,) mean over frames of PitchClassFeatures} for the clips `audios`, read from `corpus`."""
    from tqdm import tqdm

    from audioflamingo.audio import load_audio
    from audioflamingo.config import PitchConfig
    from audioflamingo.model.encoder import PitchClassFeatures

    branch = PitchClassFeatures(PitchConfig(enabled=True), sample_rate, hop=320)
    out = {}
    with torch.no_grad():
        for a in tqdm(sorted(audios), desc="pitch features", unit="clip"):
            wave = torch.from_numpy(load_audio(a, sample_rate).samples).float()[None]  # (1, S)
            out[a] = branch(wave, wave.shape[1] // 320 + 1)[0]  # (F', 73)
    return out


def summary_features(corpus: Path, audios, preset: str = "af-mini") -> dict[str, torch.Tensor]:
    """{audio path: (W, D) WindowSummary (pitch + rhythm) of each window} for the clips `audios`, windowed as
    `preset` windows them."""
    from tqdm import tqdm

    from audioflamingo.audio import load_audio, make_windows, window_lengths
    from audioflamingo.config import load_model_config
    from audioflamingo.model.encoder import WindowSummary

    cfg = load_model_config(preset, {"transform.pitch.enabled": True, "transform.rhythm.enabled": True})
    summary = WindowSummary(cfg.transform, cfg.audio.sample_rate, cfg.audio.hop_seconds)
    out = {}
    with torch.no_grad():
        for a in tqdm(sorted(audios), desc="window summaries", unit="clip"):
            clip = load_audio(a, cfg.audio.sample_rate, cfg.audio)
            out[a] = summary(make_windows(clip, cfg.audio), window_lengths(clip, cfg.audio))  # (W, D)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", required=True, help="corpus folder (train/val/test.jsonl)")
    ap.add_argument("--cache", default=None, help="encoder cache of a training run (encoder_cache.pt)")
    ap.add_argument("--pitch", action="store_true", help="probe the pitch branch's features (from the audio) instead of a cache")
    ap.add_argument("--summary", action="store_true", help="probe the window summaries (transform.pitch + rhythm) instead of a cache")
    ap.add_argument("--preset", default="af-mini", help="with --summary: whose windowing (default af-mini)")
    ap.add_argument("--label-sets", default=None, help="comma-separated label sets to probe (default: all)")
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    if bool(args.cache) + args.pitch + args.summary != 1:
        ap.error("give one of --cache, --pitch, --summary")
    sets = clip_labels(Path(args.corpus))
    if args.label_sets:
        sets = {k: v for k, v in sets.items() if k in args.label_sets.split(",")}
    if args.pitch:
        cache = {"fingerprint": "pitch-class features", "feats": pitch_features(Path(args.corpus), {a for v in sets.values() for a in v})}
    elif args.summary:
        cache = {"fingerprint": f"window summaries ({args.preset} windows)",
                 "feats": summary_features(Path(args.corpus), {a for v in sets.values() for a in v}, args.preset)}
    else:
        cache = torch.load(args.cache, weights_only=False)  # our own file: {"fingerprint", "feats": {path: (W, T, D)}}
    feats = cache["feats"]
    results = {}
    print(f"{'label set':18s} {'labels':>6s} {'train':>6s} {'eval':>5s} {'probe':>6s} {'1-NN':>6s} {'majority':>8s}")
    for name, labels in sorted(sets.items()):
        r = score(feats, labels)
        if r is None:
            continue
        results[name] = r
        print(f"{name:18s} {r['labels']:6d} {r['train_clips']:6d} {r['eval_clips']:5d} {r['probe']:6.2f} {r['nearest']:6.2f} {r['majority']:8.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"corpus": args.corpus, "cache": args.cache, "fingerprint": cache.get("fingerprint"),
                                              "label_sets": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
