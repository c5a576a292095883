"""Which examples to show before a query: the Audio Flamingo (AF1) neighbour rule.

For each query: search more hits than needed (k * oversample), keep one hit per distinct audio file,
never the query's own file (nor its own id), take the nearest k. Then order them:
  training   shuffled, seeded per query (AF1 shuffled its 7 neighbours), so that the model does not
             learn that the last example is the most similar one;
  inference  a choice: "nearest_last" (default: the most similar example right before the query),
             "nearest_first", or "shuffle".
If fewer than k distinct files are found, the search widens (x4) up to the whole index.

Hits are only ever from the index's split: an index whose metadata holds another split is refused.

Shape letters: q queries, k hits, c embedding width.
"""

from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audioflamingo.retrieval.index import AudioIndex, RetrievalError, normalize

ORDERS = ("nearest_last", "nearest_first", "shuffle")


@dataclass
class NeighbourConfig:
    k: int = 4  # shots per query (AF1 trained with 4- or 8-shot items)
    oversample: int = 4  # search k * oversample hits before keeping one per file
    order: str = "nearest_last"  # nearest_last | nearest_first | shuffle
    seed: int = 0  # for "shuffle"
    max_score: float | None = None  # drop hits at least this similar (e.g. 0.999: copies of the query under another name)
    same: tuple[str, ...] = ("dataset", "task")  # with query rows: hits agree with the query on these fields

    def __post_init__(self):
        if self.order not in ORDERS:
            raise RetrievalError(f"neighbour order {self.order!r} is not one of {', '.join(ORDERS)}")
        if self.k < 0 or self.oversample < 1:
            raise RetrievalError(f"neighbours: k must be >= 0 and oversample >= 1, got k={self.k}, oversample={self.oversample}")


@dataclass
class Shot:
    """One in-context example: an audio, the prompt asked about it and its answer."""

    audio: str
    prompt: str
    answer: str
    id: str | None = None  # None for user-given examples
    score: float | None = None  # cosine similarity to the query; None for user-given examples
    row: dict = field(default_factory=dict, repr=False)  # the full metadata row

    def to_dict(self) -> dict:
        return {"audio": self.audio, "prompt": self.prompt, "answer": self.answer, "id": self.id, "score": self.score}


def audio_identity(audio) -> str | None:
    """The file behind a query (absolute path), or None for in-memory audio."""
    if isinstance(audio, (str, Path)):
        return str(Path(audio).resolve())
    return None


def _query_rng(seed: int, key: str) -> np.random.Generator:
    """A generator per (seed, query): the same query gets the same order whatever the batch."""
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def _agrees(row: dict, query: dict | None, fields) -> bool:
    """Does an index row match the query row on `fields` (those the query row has)?"""
    return query is None or all(row.get(f) == query[f] for f in fields if f in query)


def _row_shot(row: dict, score: float) -> Shot:
    return Shot(row["audio"], row.get("prompt", ""), row["answer"], row["id"], float(score), row)


def select_neighbours(
    index: AudioIndex,
    vectors,
    query_audio: list,
    config: NeighbourConfig | None = None,
    query_ids: list | None = None,
    query_rows: list[dict] | None = None,
) -> list[list[Shot]]:
    """k examples per query, chosen and ordered by the AF1 rule.

    vectors: (q, c) query embeddings; query_audio: q paths (or None / arrays for in-memory audio,
    which have no file to exclude); query_ids: q ids to exclude as well (or None);
    query_rows: q manifest rows; when given, hits agree with them on `config.same` (default: the same
    dataset and task), the fields a row has.
    """
    cfg = config or NeighbourConfig()
    n_q = len(query_audio)
    query_ids = list(query_ids) if query_ids is not None else [None] * n_q
    qrows = list(query_rows) if query_rows is not None else [None] * n_q
    if len(query_ids) != n_q or len(qrows) != n_q or (n_q and len(vectors) != n_q):
        raise RetrievalError(f"select_neighbours: {len(vectors)} vectors, {n_q} audios and {len(query_ids)} ids must match")
    if cfg.k == 0 or n_q == 0:
        return [[] for _ in range(n_q)]
    if len(index) == 0:
        warnings.warn(f"{index.where} is empty: no neighbours")
        return [[] for _ in range(n_q)]
    vectors = normalize(vectors)  # (q, c)
    own = [audio_identity(a) for a in query_audio]
    chosen: list[list[Shot] | None] = [None] * n_q
    pending = list(range(n_q))
    depth = cfg.k * cfg.oversample
    while pending:
        depth = min(depth, len(index))
        scores, positions = index.search(vectors[pending], depth)  # (q', depth), (q', depth)
        retry = []
        for qi, sc, pos in zip(pending, scores, positions):
            shots, files = [], set()
            for s, p in zip(sc, pos):
                if p < 0:
                    continue
                row = index.rows[p]
                if index.split is not None and row.get("split", index.split) != index.split:
                    raise RetrievalError(
                        f"{index.where}: item {row['id']!r} is from split {row.get('split')!r}, but the index is "
                        f"for split {index.split!r}; rebuild it"
                    )
                if row["audio"] == own[qi] or (query_ids[qi] is not None and row["id"] == str(query_ids[qi])):
                    continue
                if row["audio"] in files or not _agrees(row, qrows[qi], cfg.same):
                    continue
                if cfg.max_score is not None and s >= cfg.max_score:
                    continue
                files.add(row["audio"])
                shots.append(_row_shot(row, s))
                if len(shots) == cfg.k:
                    break
            if len(shots) < cfg.k and depth < len(index):
                retry.append(qi)
            else:
                chosen[qi] = shots
        pending, depth = retry, depth * 4
    short = sum(len(s) < cfg.k for s in chosen)
    if short:
        warnings.warn(f"{index.where}: {short} of {n_q} queries have fewer than {cfg.k} distinct neighbour files")
    return [order_shots(s, cfg.order, cfg.seed, str(query_ids[i] or own[i] or i)) for i, s in enumerate(chosen)]


def random_neighbours(
    index: AudioIndex,
    query_audio: list,
    config: NeighbourConfig | None = None,
    query_ids: list | None = None,
    query_rows: list[dict] | None = None,
) -> list[list[Shot]]:
    """The control for retrieval: k random items per query under the same rules (distinct files, never
    the query's own file or id, agreeing with query rows when given), seeded per query; scores are None."""
    cfg = config or NeighbourConfig()
    n_q = len(query_audio)
    query_ids = list(query_ids) if query_ids is not None else [None] * n_q
    qrows = list(query_rows) if query_rows is not None else [None] * n_q
    out = []
    for i, audio in enumerate(query_audio):
        own, key = audio_identity(audio), str(query_ids[i] or audio_identity(audio) or i)
        shots, files = [], set()
        for p in _query_rng(cfg.seed, "random:" + key).permutation(len(index)):
            row = index.rows[p]
            if row["audio"] == own or row["id"] == query_ids[i] or row["audio"] in files:
                continue
            if not _agrees(row, qrows[i], cfg.same):
                continue
            files.add(row["audio"])
            shots.append(Shot(row["audio"], row.get("prompt", ""), row["answer"], row["id"], None, row))
            if len(shots) == cfg.k:
                break
        out.append(shots)
    return out


def order_shots(shots: list[Shot], order: str, seed: int = 0, key: str = "") -> list[Shot]:
    """Put nearest-first `shots` in the requested order (see the module docstring)."""
    if order == "nearest_first":
        return list(shots)
    if order == "nearest_last":
        return list(reversed(shots))
    if order == "shuffle":
        perm = _query_rng(seed, key).permutation(len(shots))
        return [shots[i] for i in perm]
    raise RetrievalError(f"neighbour order {order!r} is not one of {', '.join(ORDERS)}")


def retrieve(index: AudioIndex, embedder, audios: list, config: NeighbourConfig | None = None, query_ids=None):
    """Embed query `audios` with `embedder` (whose fingerprint must match the index) and select neighbours."""
    index.check_fingerprint(embedder.embedding_fingerprint())
    vectors = embedder.embed_audio(list(audios))  # (q, c)
    return select_neighbours(index, vectors, list(audios), config, query_ids)
