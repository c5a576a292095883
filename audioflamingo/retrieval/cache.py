"""Embeddings cached per audio file, so that rebuilding or extending an index never embeds a file twice.

A file is known by its absolute path, size and modification time: editing or replacing it
invalidates its entry. The cache belongs to one set of embedding weights (its fingerprint); a cache
written by other weights is ignored, with a warning.

On disk (a folder, normally `<index>/embed_cache`): `fingerprint.txt`, then append-only parts
`part-00000.npy` (n, c) float32 with `part-00000.keys.jsonl` (one key per row). Each `flush()` writes
one new part, so an interrupted build keeps what it had embedded.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np


def file_key(path: str | Path) -> str:
    """'abs/path|size|mtime_ns' for an existing file (raises FileNotFoundError naming it otherwise)."""
    p = Path(path).resolve()
    try:
        st = p.stat()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"audio file {p} does not exist") from e
    return f"{p}|{st.st_size}|{st.st_mtime_ns}"


class EmbeddingCache:
    def __init__(self, folder: str | Path | None, fingerprint: str):
        self.folder = Path(folder) if folder is not None else None
        self.fingerprint = str(fingerprint)
        self._vectors: dict[str, np.ndarray] = {}
        self._pending: list[str] = []
        if self.folder is not None:
            self._read()

    def _read(self) -> None:
        fp_file = self.folder / "fingerprint.txt"
        if not fp_file.is_file():
            return
        stored = fp_file.read_text().strip()
        if stored != self.fingerprint:
            warnings.warn(
                f"embedding cache {self.folder} was written by weights {stored!r}, not {self.fingerprint!r}: "
                f"ignoring it (everything will be embedded again)"
            )
            return
        for part in sorted(self.folder.glob("part-*.npy")):
            keys = [json.loads(line) for line in open(part.with_suffix(".keys.jsonl")) if line.strip()]
            vecs = np.load(part)  # (n, c)
            if len(keys) != len(vecs):
                warnings.warn(f"embedding cache part {part} is incomplete: skipping it")
                continue
            self._vectors.update(zip(keys, vecs))

    def __len__(self) -> int:
        return len(self._vectors)

    def __contains__(self, key: str) -> bool:
        return key in self._vectors

    def get(self, key: str) -> np.ndarray:
        return self._vectors[key]

    def put(self, keys: list[str], vectors: np.ndarray) -> None:
        for key, vec in zip(keys, np.asarray(vectors, dtype=np.float32)):
            if key not in self._vectors:
                self._pending.append(key)
            self._vectors[key] = vec

    def flush(self) -> None:
        """Write the entries added since the last flush as one new part (no-op without a folder)."""
        if self.folder is None or not self._pending:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        fp_file = self.folder / "fingerprint.txt"
        if not fp_file.is_file() or fp_file.read_text().strip() != self.fingerprint:
            for old in self.folder.glob("part-*"):  # another model's cache: replaced, as warned on reading
                old.unlink()
            fp_file.write_text(self.fingerprint + "\n")
        n = len(list(self.folder.glob("part-*.npy")))
        stem = self.folder / f"part-{n:05d}"
        with open(f"{stem}.keys.jsonl", "w") as f:
            f.writelines(json.dumps(k) + "\n" for k in self._pending)
        with open(f"{stem}.tmp", "wb") as f:
            np.save(f, np.stack([self._vectors[k] for k in self._pending]))  # (n, c)
        os.replace(f"{stem}.tmp", f"{stem}.npy")  # the .npy appears last: a part is whole or absent
        self._pending = []
