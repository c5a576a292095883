"""A faiss index of audio embeddings, with the items' metadata and the embedding model's fingerprint.

Vectors are L2-normalised on the way in, so inner product = cosine similarity for every kind:
  flat  exact search (faiss IndexFlatIP), the default; fine up to a few hundred thousand items.
  ivf   inverted lists (IndexIVFFlat): k-means cells, `nprobe` of them searched per query.
  hnsw  a navigable small-world graph (IndexHNSWFlat): `ef_search` candidates kept per query.

On disk an index is a folder:
  index.faiss   the faiss index; position i holds item i
  items.jsonl   one metadata row per item, in position order (the manifest row: id, audio, answer, ...)
  meta.json     format version, model fingerprint, dim, kind, parameters, count, split
  embed_cache/  embeddings per audio file (see cache.py), so extending an index never re-embeds

Searching with vectors from a different model is meaningless, so every consumer calls
`check_fingerprint` with its model's fingerprint and gets a loud error on a mismatch.

Shape letters here: n items, q queries, k hits per query, c embedding width.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

FORMAT_VERSION = 1
KINDS = ("flat", "ivf", "hnsw")
FEW_QUERIES = 4  # searched on one thread (see AudioIndex.search)
INDEX_FILE, ITEMS_FILE, META_FILE = "index.faiss", "items.jsonl", "meta.json"


class RetrievalError(ValueError):
    """A retrieval index is missing, malformed, or does not fit the model or the data."""


class FingerprintMismatch(RetrievalError):
    """The index was built with other embedding weights than the model searching it."""


@dataclass
class IndexConfig:
    """Which faiss index to build. None parameters are chosen from the item count at the first add."""

    kind: str = "flat"  # flat | ivf | hnsw
    nlist: int | None = None  # ivf: k-means cells (default about 4 * sqrt(n), at least 39 points per cell)
    nprobe: int | None = None  # ivf: cells searched per query (default nlist / 8, at least 16)
    hnsw_m: int = 32  # hnsw: graph neighbours per node
    ef_construction: int = 80  # hnsw: candidate list while building
    ef_search: int = 128  # hnsw: candidate list while searching

    def __post_init__(self):
        if self.kind not in KINDS:
            raise RetrievalError(f"index kind {self.kind!r} is not one of {', '.join(KINDS)}")


def normalize(vectors) -> np.ndarray:
    """Any (n, c) tensor/array -> contiguous float32 rows of unit L2 norm (zero rows stay zero)."""
    if hasattr(vectors, "detach"):  # a torch tensor, on any device
        vectors = vectors.detach().float().cpu().numpy()
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise RetrievalError(f"expected a 2-d array of embeddings (n, c), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise RetrievalError("embeddings hold NaN or inf values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # (n, 1)
    if np.abs(norms - 1).max(initial=0) < 1e-5:  # already unit rows: no copy (1 M x 512 floats = 2 GB)
        return np.ascontiguousarray(x)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12))  # (n, c)


class AudioIndex:
    """Embeddings of audio items in a faiss index, plus one metadata row per item.

    Build one with `AudioIndex(dim, fingerprint, config)` then `add(ids, vectors, rows)`, or
    `AudioIndex.build(...)`; `save(dir)` / `AudioIndex.load(dir)` round-trip it.
    `split` names the manifest split every item comes from (None = no single split).
    """

    def __init__(self, dim: int, fingerprint: str, config: IndexConfig | None = None, split: str | None = None):
        self.dim, self.fingerprint, self.split = int(dim), str(fingerprint), split
        self.config = config or IndexConfig()
        self.ids: list[str] = []
        self.rows: list[dict] = []
        self.position: dict[str, int] = {}
        self.path: Path | None = None  # the folder it was loaded from or saved to
        self.trained_on = 0  # ivf: how many vectors the k-means cells were fitted to
        self._index: faiss.Index | None = None
        self._mapped = -1  # ivf: item count when the position -> list direct map was last made

    @classmethod
    def build(cls, ids, vectors, rows, fingerprint: str, config: IndexConfig | None = None, split=None):
        if len(np.shape(vectors)) != 2:
            raise RetrievalError(f"expected a 2-d array of embeddings (n, c), got shape {tuple(np.shape(vectors))}")
        index = cls(np.shape(vectors)[1], fingerprint, config, split)
        index.add(ids, vectors, rows)  # normalises
        return index

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path else ""
        return f"AudioIndex(kind={self.config.kind!r}, count={len(self)}, dim={self.dim}, split={self.split!r}{where})"

    @property
    def where(self) -> str:
        return str(self.path) if self.path else "<in-memory index>"

    # ------------------------------------------------------------------------------------------------
    # building

    def _create(self, x: np.ndarray) -> faiss.Index:
        cfg, d = self.config, self.dim
        if cfg.kind == "flat":
            return faiss.IndexFlatIP(d)
        if cfg.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = cfg.ef_construction
            index.hnsw.efSearch = cfg.ef_search
            return index
        n = len(x)
        nlist = cfg.nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
        if nlist > n:
            raise RetrievalError(f"ivf index: nlist={nlist} cells need at least {nlist} vectors to train, got {n}")
        if n < 39 * nlist:
            warnings.warn(f"ivf index: {n} vectors for {nlist} cells (faiss advises 39 per cell); clustering is coarse")
        cfg.nlist = nlist
        cfg.nprobe = min(nlist, cfg.nprobe or max(16, nlist // 8))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = 1234  # reproducible k-means
        index.train(x)
        index.nprobe = cfg.nprobe
        self.trained_on = n
        return index

    def add(self, ids, vectors, rows=None) -> int:
        """Add items (skipping ids already present, and duplicates within the call); return how many were added."""
        ids = [str(i) for i in ids]
        x = normalize(vectors)  # (n, c)
        rows = [dict(r) for r in rows] if rows is not None else [{"id": i} for i in ids]
        if not (len(ids) == len(x) == len(rows)):
            raise RetrievalError(f"add(): {len(ids)} ids, {len(x)} vectors and {len(rows)} rows must match")
        if len(x) and x.shape[1] != self.dim:
            raise RetrievalError(f"{self.where}: vectors of width {x.shape[1]} cannot join an index of width {self.dim}")
        keep, seen = [], set(self.position)
        for j, (i, row) in enumerate(zip(ids, rows)):
            if i in seen:
                continue
            seen.add(i)
            if self.split is not None and row.get("split", self.split) != self.split:
                raise RetrievalError(
                    f"{self.where}: item {i!r} is from split {row.get('split')!r}, this index holds split {self.split!r} only"
                )
            row["id"] = i
            keep.append(j)
        if not keep:
            return 0
        x = x[keep]  # (n', c)
        if self._index is None:
            self._index = self._create(x)
        elif self.config.kind == "ivf" and len(self) + len(x) > 10 * max(self.trained_on, 1):
            warnings.warn(
                f"{self.where}: the ivf cells were fitted to {self.trained_on} vectors and the index now grows to "
                f"{len(self) + len(x)}; rebuild it for balanced cells"
            )
        self._index.add(x)
        for j in keep:
            self.position[ids[j]] = len(self.ids)
            self.ids.append(ids[j])
            self.rows.append(rows[j])
        return len(keep)

    # ------------------------------------------------------------------------------------------------
    # searching

    def search(self, vectors, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Nearest `k` items per query by cosine similarity -> (scores (q, k) float32, positions (q, k) int64).

        Missing hits (k > count, or an approximate index that found fewer) have position -1.
        """
        q = normalize(vectors)  # (q, c)
        if q.shape[1] != self.dim:
            raise RetrievalError(f"{self.where}: query vectors have width {q.shape[1]}, the index has width {self.dim}")
        if self._index is None or len(self) == 0:
            return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        if len(q) <= FEW_QUERIES:
            # A handful of queries gains nothing from OpenMP threads, and on a busy machine their
            # start-up costs 10-100x the search itself (measured: 0.4 ms vs 40 ms, flat, 10 k items).
            threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)
            try:
                return self._index.search(q, k)  # (q, k), (q, k)
            finally:
                faiss.omp_set_num_threads(threads)
        scores, positions = self._index.search(q, k)  # (q, k), (q, k)
        return scores, positions

    def vectors(self, positions) -> np.ndarray:
        """The stored (normalised) vectors at `positions` -> (n, c)."""
        positions = np.asarray(positions, dtype=np.int64)
        if self.config.kind == "ivf" and self._mapped != self._index.ntotal:
            self._index.make_direct_map()  # IVF lists are not addressable by position without it
            self._mapped = self._index.ntotal
        return self._index.reconstruct_batch(positions)  # (n, c)

    def check_fingerprint(self, fingerprint: str) -> None:
        """Raise FingerprintMismatch unless `fingerprint` is the one this index was built with."""
        if str(fingerprint) != self.fingerprint:
            raise FingerprintMismatch(
                f"retrieval index {self.where} was built with embedding weights {self.fingerprint!r}, "
                f"but the model searching it has {fingerprint!r}; rebuild the index with this model "
                f"(audioflamingo index build MANIFEST --out DIR --model PATH)"
            )

    # ------------------------------------------------------------------------------------------------
    # disk

    def meta(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "dim": self.dim,
            "kind": self.config.kind,
            "params": asdict(self.config),
            "count": len(self),
            "split": self.split,
            "trained_on": self.trained_on,
            "metric": "inner_product on L2-normalised vectors (cosine)",
        }

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self._index is not None:
            faiss.write_index(self._index, str(folder / (INDEX_FILE + ".tmp")))
            (folder / (INDEX_FILE + ".tmp")).replace(folder / INDEX_FILE)
        with open(folder / (ITEMS_FILE + ".tmp"), "w") as f:
            for row in self.rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        (folder / (ITEMS_FILE + ".tmp")).replace(folder / ITEMS_FILE)
        # meta.json last: a folder with a meta.json is a complete index
        (folder / META_FILE).write_text(json.dumps(self.meta(), indent=2) + "\n")
        self.path = folder
        return folder

    @classmethod
    def load(cls, folder: str | Path, fingerprint: str | None = None) -> "AudioIndex":
        """Load an index folder; with `fingerprint`, also check it (FingerprintMismatch on a mismatch)."""
        folder = Path(folder)
        if not (folder / META_FILE).is_file():
            raise RetrievalError(f"{folder} is not a retrieval index (no {META_FILE}); build one with `audioflamingo index build`")
        meta = json.loads((folder / META_FILE).read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise RetrievalError(f"{folder}: index format {meta.get('format_version')} is not {FORMAT_VERSION}; rebuild it")
        index = cls(meta["dim"], meta["fingerprint"], IndexConfig(**meta["params"]), meta.get("split"))
        index.path, index.trained_on = folder, meta.get("trained_on", 0)
        with open(folder / ITEMS_FILE) as f:
            index.rows = [json.loads(line) for line in f if line.strip()]
        index.ids = [r["id"] for r in index.rows]
        index.position = {i: p for p, i in enumerate(index.ids)}
        if index.rows:
            index._index = faiss.read_index(str(folder / INDEX_FILE))
            if index._index.ntotal != len(index.rows) or index._index.d != index.dim:
                raise RetrievalError(
                    f"{folder}: {INDEX_FILE} holds {index._index.ntotal} vectors of width {index._index.d}, "
                    f"{ITEMS_FILE} {len(index.rows)} items of width {index.dim}; rebuild the index"
                )
            index.set_search_params()
        if fingerprint is not None:
            index.check_fingerprint(fingerprint)
        return index

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Trade speed for recall on an approximate index (ignored by flat)."""
        cfg = self.config
        cfg.nprobe, cfg.ef_search = nprobe or cfg.nprobe, ef_search or cfg.ef_search
        if cfg.nprobe and cfg.nlist:
            cfg.nprobe = min(cfg.nprobe, cfg.nlist)  # more cells than exist = all of them
        if self._index is None:
            return
        if cfg.kind == "ivf" and cfg.nprobe:
            faiss.extract_index_ivf(self._index).nprobe = cfg.nprobe
        elif cfg.kind == "hnsw":
            self._index.hnsw.efSearch = cfg.ef_search
