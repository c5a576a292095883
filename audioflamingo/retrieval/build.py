"""Build or extend a retrieval index from a manifest with any embedder.

An embedder is any object with
    .embed_audio(list_of_paths) -> torch.Tensor | np.ndarray (n, c)
    .embedding_fingerprint() -> str
The model (`audioflamingo.load_model(...)`) is one: it embeds with its own CLAP audio tower.

A training index holds one split only (default "train"), so the k-shot items built from it can never
show a validation or test item; `AudioIndex.split` records which split it holds.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from audioflamingo.data.manifest import read_manifest as _read_manifest
from audioflamingo.retrieval.cache import EmbeddingCache, file_key
from audioflamingo.retrieval.index import META_FILE, AudioIndex, IndexConfig, RetrievalError, normalize

REQUIRED = ("id", "audio", "answer")


def read_manifest(path: str | Path, split: str | None = None) -> list[dict]:
    """Manifest rows (the project's one reader, absolute `audio` paths) of `split` (None = all), ids unique."""
    every = _read_manifest(path, required=REQUIRED, resolve=True)
    rows = [r for r in every if split is None or r.get("split") == split]
    if not rows:
        splits = sorted({str(r.get("split")) for r in every})
        raise RetrievalError(f"manifest {path} has no rows of split {split!r} (splits present: {splits})")
    seen = set()
    for row in rows:
        if row["id"] in seen:
            raise RetrievalError(f"manifest {path}: id {row['id']!r} occurs more than once")
        seen.add(row["id"])
    return rows


class EncoderCacheEmbedder:
    """An embedder that reads a training run's encoder-output cache (`encoder_cache` of `audioflamingo
    train`: audio key -> encoder outputs (W, N, E) of a frozen encoder) where it has the file, and asks
    `embedder` (the model) for the rest. The CLAP embedding is the same function of those outputs as
    `model.embed_audio` (L2-normalised mean over windows and tokens), so an index built either way is
    the same index; the cache's fingerprint must equal the model's embedding fingerprint."""

    def __init__(self, embedder, path: str | Path):
        import torch

        self.embedder, self.path = embedder, Path(path)
        if not self.path.is_file():
            raise RetrievalError(f"encoder cache {self.path}: no such file")
        saved = torch.load(self.path, weights_only=True)
        if not isinstance(saved, dict) or "feats" not in saved or "fingerprint" not in saved:
            raise RetrievalError(f"encoder cache {self.path}: not an `audioflamingo train` encoder cache")
        self.feats, self.cache_fingerprint, self.checked, self.hits = saved["feats"], saved["fingerprint"], False, 0
        self.summary_slots = int(saved.get("summary_slots", 0))  # rows after the N tokens of each window (transform.pitch / rhythm)

    def embedding_fingerprint(self) -> str:
        return self.embedder.embedding_fingerprint()

    def _lookup(self, path):
        for key in (str(path), str(Path(path).absolute()), str(Path(path).resolve())):
            if key in self.feats:
                return self.feats[key]
        return None

    def embed_audio(self, paths):
        import torch
        import torch.nn.functional as F

        if not self.checked:
            if self.cache_fingerprint != str(self.embedder.embedding_fingerprint()):
                raise RetrievalError(
                    f"encoder cache {self.path} was written by another encoder (fingerprint "
                    f"{self.cache_fingerprint}, the model's is {self.embedder.embedding_fingerprint()})"
                )
            self.checked = True
        found = [self._lookup(p) for p in paths]
        missing = [p for p, f in zip(paths, found) if f is None]
        rest = iter(torch.as_tensor(self.embedder.embed_audio(missing)).float()) if missing else iter(())  # (m, E)
        tokens = slice(0, -self.summary_slots if self.summary_slots else None)  # window-summary rows are not tokens
        vecs = [next(rest) if f is None else F.normalize(f[:, tokens].float().mean(dim=(0, 1)), dim=-1) for f in found]  # (E,) each
        self.hits += len(paths) - len(missing)
        return torch.stack(vecs) if vecs else torch.zeros(0, 0)


def embed_files(paths, embedder, cache: EmbeddingCache, batch_size: int = 32, progress: bool = True) -> np.ndarray:
    """Embeddings of `paths` (n, c), normalised; files already in `cache` are not embedded again."""
    keys = [file_key(p) for p in paths]
    todo = list(dict.fromkeys(k for k in keys if k not in cache))  # distinct files not cached, in order
    by_key = {k: p for k, p in zip(keys, paths)}
    with tqdm(total=len(todo), desc="embedding audio", unit="file", disable=not progress or not todo) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            vecs = normalize(embedder.embed_audio([str(by_key[k]) for k in batch]))  # (b, c)
            if len(vecs) != len(batch):
                raise RetrievalError(f"embedder returned {len(vecs)} embeddings for {len(batch)} files")
            cache.put(batch, vecs)
            if (start // batch_size) % 50 == 49:  # keep progress on disk for long builds
                cache.flush()
            bar.update(len(batch))
    cache.flush()
    if not keys:
        return np.zeros((0, 0), np.float32)
    return np.stack([cache.get(k) for k in keys])  # (n, c)


def build_index(
    manifest: str | Path,
    out: str | Path,
    embedder,
    kind: str = "flat",
    batch_size: int = 32,
    split: str | None = "train",
    config: IndexConfig | None = None,
    progress: bool = True,
) -> AudioIndex:
    """Embed the `split` rows of `manifest` and store them in the index folder `out`.

    If `out` already holds an index, it is extended: items whose id it has are skipped and files
    whose embedding is cached are not embedded again. The embedder's fingerprint must match.
    """
    out = Path(out)
    fingerprint = str(embedder.embedding_fingerprint())
    rows = read_manifest(manifest, split)
    if (out / META_FILE).is_file():
        index = AudioIndex.load(out, fingerprint=fingerprint)
        if index.split != split:
            raise RetrievalError(f"index {out} holds split {index.split!r}; cannot extend it with split {split!r}")
        requested = config.kind if config is not None else kind
        if requested != index.config.kind:
            warnings.warn(f"index {out} is a {index.config.kind!r} index: extending it as such (not {requested!r})")
    else:
        index = None
    new = [r for r in rows if index is None or r["id"] not in index.position]
    if index is not None and len(new) < len(rows):
        print(f"index {out}: {len(rows) - len(new)} of {len(rows)} items already present, adding {len(new)}")
    cache = EmbeddingCache(out / "embed_cache", fingerprint)
    vectors = embed_files([r["audio"] for r in new], embedder, cache, batch_size, progress)  # (n, c)
    if index is None:
        if not new:
            raise RetrievalError(f"nothing to index from {manifest}")
        index = AudioIndex(vectors.shape[1], fingerprint, config or IndexConfig(kind=kind), split)
    if new:
        index.add([r["id"] for r in new], vectors, new)
    index.save(out)
    return index
