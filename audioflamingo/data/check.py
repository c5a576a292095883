"""`audioflamingo data check MANIFEST...`: find what would break or bias training, with line numbers.

Reports malformed rows (bad JSON, missing or mistyped keys, duplicate ids), and audio that is
missing, unreadable, silent, or a duplicate of other audio (same decoded PCM under another path).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from audioflamingo.data.audiofile import SILENCE_DBFS, decode, pcm_hash, rms_dbfs
from audioflamingo.data.manifest import iter_manifest, resolve_audio


@dataclass
class CheckReport:
    rows: int = 0
    audio_files: int = 0
    problems: list[tuple[str, int, str]] = field(default_factory=list)  # (manifest, line, message)

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, _, msg in self.problems:
            kind = msg.split(":", 1)[0]
            out[kind] = out.get(kind, 0) + 1
        return out

    def text(self, limit: int = 200) -> str:
        lines = [f"{m}:{n}: {msg}" for m, n, msg in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"... and {len(self.problems) - limit} more")
        summary = ", ".join(f"{v} {k}" for k, v in sorted(self.counts().items())) or "no problems"
        lines.append(f"checked {self.rows} rows, {self.audio_files} audio files: {summary}")
        return "\n".join(lines)


def _read_audio(path: Path) -> np.ndarray:
    try:
        x, _ = sf.read(str(path), dtype="float32", always_2d=True)  # (S, C)
        return x.mean(axis=1)  # (S,)
    except Exception:
        return decode(path, 16000)  # formats libsndfile lacks; raises DecodeError when unreadable


def check_manifests(paths: list[str | Path]) -> CheckReport:
    rep = CheckReport()
    ids: dict[str, tuple[str, int]] = {}
    audio_status: dict[Path, str | None] = {}  # path -> problem or None
    hashes: dict[str, Path] = {}
    for mpath in paths:
        m = str(mpath)
        try:
            rows = list(iter_manifest(mpath, strict=False))
        except Exception as e:
            rep.problems.append((m, 0, f"unreadable manifest: {e}"))
            continue
        for n, row, probs in rows:
            rep.rows += 1
            for p in probs:
                rep.problems.append((m, n, f"malformed row: {p}"))
            if row is None or not isinstance(row, dict):
                continue
            if isinstance(row.get("id"), str):
                if row["id"] in ids:
                    first = ids[row["id"]]
                    rep.problems.append((m, n, f"duplicate id: {row['id']!r} (first at {first[0]}:{first[1]})"))
                else:
                    ids[row["id"]] = (m, n)
            if not isinstance(row.get("audio"), str):
                continue
            audios = [row["audio"]] + [a for a in row.get("extra_audios") or [] if isinstance(a, str)]
            for a in audios:
                path = resolve_audio({"audio": a}, mpath)
                if path not in audio_status:
                    audio_status[path] = _audio_problem(path, hashes)
                    rep.audio_files += 1
                if audio_status[path]:
                    rep.problems.append((m, n, f"{audio_status[path]} ({a})"))
    return rep


def _audio_problem(path: Path, hashes: dict[str, Path]) -> str | None:
    if not path.is_file():
        return "missing audio: no such file"
    try:
        x = _read_audio(path)
    except Exception as e:
        return f"unreadable audio: {type(e).__name__}"
    if len(x) == 0:
        return "silent audio: empty"
    if rms_dbfs(x) < SILENCE_DBFS:
        return f"silent audio: {rms_dbfs(x):.0f} dBFS"
    h = pcm_hash(x)
    if h in hashes:
        return f"duplicate audio: same samples as {hashes[h]}"
    hashes[h] = path
    return None
