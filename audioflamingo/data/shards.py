"""Export a manifest and its audio to WebDataset tar shards, for data beyond one disk.

One WebDataset sample per audio file: `<key>.<ext>` holds the audio bytes and `<key>.json` holds
{"items": [rows...]} for every manifest row on that audio (rows' `audio` is replaced by the member
name), so audio shared by several items is stored once. Keys have no dots (WebDataset splits a
member name at its first dot). Read with `webdataset.WebDataset(urls)` or `read_shard` below.
Rows with `extra_audios` are not supported (multi-audio items stay in manifests).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from audioflamingo.data.manifest import read_manifest, resolve_audio


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # deterministic shards
    tar.addfile(info, io.BytesIO(data))


def export_shards(manifest: str | Path, out: str | Path, max_items: int = 1000) -> list[Path]:
    """Write shard-000000.tar, ... with at most `max_items` rows each; returns their paths."""
    groups: dict[Path, list[dict]] = {}
    for row in read_manifest(manifest):
        if row.get("extra_audios"):
            raise ValueError(f"{manifest}: row {row['id']!r} has extra_audios: multi-audio rows cannot be sharded")
        groups.setdefault(resolve_audio(row, manifest), []).append(row)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    tar, n_in_shard = None, 0
    for audio, rows in groups.items():
        if not audio.is_file():
            raise FileNotFoundError(f"{manifest}: row {rows[0]['id']!r}: audio {audio} is missing")
        if tar is None or n_in_shard + len(rows) > max_items and n_in_shard:
            if tar is not None:
                tar.close()
            paths.append(out / f"shard-{len(paths):06d}.tar")
            tar, n_in_shard = tarfile.open(paths[-1], "w"), 0
        key = hashlib.sha1(str(audio).encode()).hexdigest()[:20]
        member = key + audio.suffix.lower()
        _add(tar, member, audio.read_bytes())
        _add(tar, key + ".json", json.dumps({"items": [{**r, "audio": member} for r in rows]}).encode())
        n_in_shard += len(rows)
    if tar is not None:
        tar.close()
    return paths


def read_shard(path: str | Path) -> list[tuple[dict, bytes]]:
    """(row, audio bytes) for every item in one shard."""
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    out = []
    for name, data in sorted(members.items()):
        if name.endswith(".json"):
            out += [(row, members[row["audio"]]) for row in json.loads(data)["items"]]
    return out
