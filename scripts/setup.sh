#!/usr/bin/env bash
# Install audioflamingo into ./.venv on a fresh Debian machine with Python 3.11.
#   scripts/setup.sh          the library, CLI and server (what the main job needs)
#   scripts/setup.sh --dev    + system packages for the corpus builder, browser tests and METEOR (a JRE), + test tools
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
[ "${1:-}" = "--dev" ] && dev=1
PY=${PYTHON:-python3}

if [ "$dev" = 1 ]; then
  # Debian packages: ffmpeg (g722/WavPack/mp3 decoding), espeak-ng + flite (speech synthesis),
  # fluidsynth + fluid-soundfont-gm (music synthesis), chromium (web page test), sox (checks).
  # The corpus builder fetches its data packages itself (apt-get download + dpkg-deb -x, see
  # audioflamingo/data/debian.py); nothing else is installed for it.
  pkgs="ffmpeg espeak-ng flite sox fluidsynth fluid-soundfont-gm chromium"
  # + a headless JRE when there is no java: METEOR and the PTB tokenizer (caption metric tests) run in Java.
  command -v java >/dev/null 2>&1 || pkgs="$pkgs default-jre-headless"
  missing=$(for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
  if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO mkdir -p /usr/share/man/man1  # slim Debian images lack it and the JRE's postinst then fails
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# torch==2.13.0 first: the CPU wheel (a bare `torch` would pull a multi-GB CUDA build).
.venv/bin/python -m pip install -q "torch==2.13.0"
if [ "$dev" = 1 ]; then
  .venv/bin/python -m pip install -q -e ".[dev]"
  .venv/bin/python -m pip install -q --no-deps msclap  # reference HTS-AT for the ClapCap parity test
else
  .venv/bin/python -m pip install -q -e ".[serve]"
fi
echo "audioflamingo installed in .venv ($(.venv/bin/python -c 'import audioflamingo; print(audioflamingo.__version__)'))"
