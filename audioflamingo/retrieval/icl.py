"""Interleaved k-shot items: retrieved (or user-given) examples followed by the query.

This module builds the data structure only; the one template module turns it into tokens. The AF1
text is ICL_PREFIX, then per shot `<audio>` + prompt + "\\nAnswer:" + `<SEP>` + answer +
`<|endofchunk|>`, and the query last in the same form.

For the SFT blend (about 80 % plain items, 20 % k-shot items, set by the blend weights),
`build_icl_manifest` writes a JSONL manifest whose rows are the query's own manifest row plus
`shots: [{"audio", "prompt", "answer", "id", "score"}, ...]` (training order: seeded shuffle). Shots
come from an index of the train split only and from the query's own dataset and task, so no
validation or test item can leak into training.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from audioflamingo.retrieval.build import embed_files, read_manifest
from audioflamingo.retrieval.cache import EmbeddingCache
from audioflamingo.retrieval.index import AudioIndex, RetrievalError, normalize
from audioflamingo.retrieval.neighbours import NeighbourConfig, Shot, order_shots, retrieve, select_neighbours

ICL_PREFIX = "Here are similar examples. "


@dataclass
class IclPrompt:
    """Shots (in display order) then the query: what the template module renders."""

    shots: list[Shot]
    query_audio: Any  # a path, or (samples, rate)
    query_prompt: str
    prefix: str = ICL_PREFIX

    @property
    def audios(self) -> list:
        """Every audio in prompt order: shots first, the query last."""
        return [s.audio for s in self.shots] + [self.query_audio]

    def used(self) -> list[dict]:
        """Which examples were shown, for the user: id (None for user-given ones), score, audio, answer."""
        return [{"id": s.id, "score": s.score, "audio": str(s.audio), "answer": s.answer} for s in self.shots]


def user_examples(examples: Sequence, prompt: str) -> list[Shot]:
    """User-given examples -> shots. Each is (audio, answer), (audio, prompt, answer) or a dict."""
    shots = []
    for i, ex in enumerate(examples):
        if isinstance(ex, dict):
            if "audio" not in ex or "answer" not in ex:
                raise RetrievalError(f"example {i}: a dict example needs 'audio' and 'answer', got keys {sorted(ex)}")
            shots.append(Shot(ex["audio"], ex.get("prompt", prompt), str(ex["answer"]), ex.get("id")))
        elif isinstance(ex, (tuple, list)) and len(ex) in (2, 3):
            audio, answer = ex[0], ex[-1]
            shots.append(Shot(audio, ex[1] if len(ex) == 3 else prompt, str(answer)))
        else:
            raise RetrievalError(f"example {i}: expected (audio, answer) or (audio, prompt, answer), got {ex!r}")
    return shots


def parse_example(text: str) -> tuple[str, str]:
    """'AUDIO=ANSWER' (the CLI's --example) -> (audio, answer); the audio is the longest prefix that is a file."""
    cuts = [i for i, ch in enumerate(text) if ch == "="]
    for i in reversed(cuts):
        if Path(text[:i]).is_file():
            return text[:i], text[i + 1 :]
    if not cuts:
        raise RetrievalError(f"--example {text!r} must look like AUDIO=ANSWER")
    raise RetrievalError(f"--example {text!r}: audio file {text[:cuts[0]]!r} does not exist")


def icl_prompts(
    audios: Sequence,
    prompts: str | Sequence[str],
    *,
    rag: AudioIndex | str | Path | None = None,
    embedder=None,
    shots: int = 4,
    examples: Sequence | None = None,
    order: str = "nearest_last",
    oversample: int = 4,
    max_score: float | None = None,
) -> list[IclPrompt]:
    """Inference: one IclPrompt per query audio, for `model.ask(audio, prompt, rag=..., shots=k, examples=...)`.

    rag: an index (or its folder) searched with `embedder`'s embeddings, whose fingerprint must match;
    examples: user-given (audio, answer) pairs shown before the retrieved ones, the same Shot objects
    for every query of the batch (so a model can encode them once). Retrieved shots keep `order`;
    max_score drops near-copies of the query (see NeighbourConfig).
    """
    prompts = [prompts] * len(audios) if isinstance(prompts, str) else list(prompts)
    if len(prompts) != len(audios):
        raise RetrievalError(f"{len(audios)} audios but {len(prompts)} prompts")
    if not examples:
        given_per = [[] for _ in audios]
    elif len(set(prompts)) == 1:
        given_per = [user_examples(examples, prompts[0])] * len(audios)  # the same objects for every query
    else:  # an example without its own prompt takes its query's prompt
        given_per = [user_examples(examples, p) for p in prompts]
    retrieved = [[] for _ in audios]
    if rag is not None and shots > 0:
        if embedder is None:
            raise RetrievalError("retrieval needs the model (embedder) that built the index")
        index = rag if isinstance(rag, AudioIndex) else AudioIndex.load(rag)
        retrieved = retrieve(index, embedder, list(audios), NeighbourConfig(shots, oversample, order, max_score=max_score))
    return [IclPrompt(g + r, a, p) for g, r, a, p in zip(given_per, retrieved, audios, prompts)]


def query_vectors(index: AudioIndex, rows: list[dict], embedder=None, batch_size: int = 32) -> np.ndarray:
    """Embeddings of manifest rows (q, c): stored vectors for items in the index, else the embedder's."""
    out = np.zeros((len(rows), index.dim), np.float32)  # (q, c)
    known = [i for i, r in enumerate(rows) if r["id"] in index.position]
    if known:
        out[known] = index.vectors([index.position[rows[i]["id"]] for i in known])  # (q', c)
    unknown = [i for i in range(len(rows)) if rows[i]["id"] not in index.position]
    if unknown:
        if embedder is None:
            raise RetrievalError(f"{len(unknown)} query items are not in index {index.where}: pass an embedder for them")
        index.check_fingerprint(embedder.embedding_fingerprint())
        cache = EmbeddingCache(index.path / "embed_cache" if index.path else None, index.fingerprint)
        out[unknown] = normalize(embed_files([rows[i]["audio"] for i in unknown], embedder, cache, batch_size))
    return out


def build_icl_manifest(
    manifest: str | Path,
    index: AudioIndex,
    out: str | Path,
    k: int | Sequence[int] = 4,
    seed: int = 0,
    fraction: float = 1.0,
    oversample: int = 4,
    embedder=None,
    split: str = "train",
    progress: bool = True,
) -> dict:
    """Write the interleaved k-shot manifest for the `split` rows of `manifest`; return counts.

    k: shots per item, or a list to draw from per item (AF1: 4 or 8). fraction: share of the rows
    that get a k-shot twin (seeded). Shots are shuffled per item, seeded by (seed, item id).
    """
    if index.split != split:
        raise RetrievalError(
            f"index {index.where} holds split {index.split!r}; k-shot training items need an index of the "
            f"{split!r} split only, or test items could leak into training"
        )
    ks = [int(k)] if isinstance(k, int) else [int(x) for x in k]
    rows = read_manifest(manifest, split)
    if fraction < 1.0:
        keep = np.random.default_rng(seed).choice(len(rows), int(round(fraction * len(rows))), replace=False)
        rows = [rows[i] for i in sorted(keep)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = NeighbourConfig(k=max(ks), oversample=oversample, order="nearest_first", seed=seed)
    written, short = 0, 0
    with open(out, "w") as f, tqdm(total=len(rows), desc="k-shot items", unit="item", disable=not progress) as bar:
        for start in range(0, len(rows), 512):
            chunk = rows[start : start + 512]
            vecs = query_vectors(index, chunk, embedder)  # (q, c)
            picks = select_neighbours(
                index, vecs, [r["audio"] for r in chunk], cfg, [r["id"] for r in chunk], chunk
            )
            for row, nearest in zip(chunk, picks):
                rng = np.random.default_rng([seed, zlib.crc32(row["id"].encode())])
                want = ks[rng.integers(len(ks))] if len(ks) > 1 else ks[0]
                shots = order_shots(nearest[:want], "shuffle", seed, row["id"])  # nearest `want`, then shuffled
                short += len(shots) < want
                item = {**row, "id": f"{row['id']}#icl", "query_id": row["id"], "shots": [s.to_dict() for s in shots]}
                f.write(json.dumps(item, ensure_ascii=False) + "\n")
                written += 1
            bar.update(len(chunk))
    return {"rows": written, "short": short, "out": str(out)}
