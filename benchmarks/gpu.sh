#!/usr/bin/env bash
# The benchmark suite on a GPU machine, from the repository root:
#
#     bash benchmarks/gpu.sh OUT_DIR
#
# 1. Installs the wheels carried in .whl/ (transformers 5.24.0: the project needs >= 5.24, older ones ignore
#    the `cache=` argument, so cached generation silently recomputes nothing; soundfile + cffi + pycparser,
#    soxr) and, when carried too, .whl-optional/ (faiss-cpu, 18.8 MB) into /tmp/site, ahead of the machine's
#    own packages (see docs/performance.md).
# 2. Runs `python -m benchmarks --device cuda` (full sizes: af-mini, mid and an AF1-sized "large" LM;
#    10 min of audio; GPU batch sizes) into OUT_DIR/suite/ (results.json, results.md, rewritten after
#    every section), the log beside it. Retrieval (faiss-cpu, on this machine's CPU cores) is measured at
#    10 k and 100 k items of both kinds when faiss-cpu is carried (else skipped); 1 M items take longer than
#    this script's budget (~8 min on an H100): RETRIEVAL_1M=1 adds them into OUT_DIR/retrieval-1m.json.
#    The serve_load section is skipped there (fastapi/uvicorn/pydantic are not in the image nor carried).
# Env: PYTHON (default python3), DEVICE (default cuda).
set -uo pipefail

OUT=${1:?usage: bash benchmarks/gpu.sh OUT_DIR}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
wheels=$(compgen -G ".whl/*.whl"; compgen -G ".whl-optional/*.whl")  # .whl-optional: faiss-cpu, when carried too
if [ -n "$wheels" ]; then
    # shellcheck disable=SC2086  # one path per wheel, no spaces in wheel names
    "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site $wheels || echo "gpu.sh: installing the wheels failed" >&2
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
else
    echo "gpu.sh: no .whl/ folder: model sections need soundfile+soxr and will be skipped; see docs/performance.md" >&2
fi
"$PY" - <<'EOF' 2>&1 | tee "$OUT/environment.txt"
import importlib, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO GPU")
for m in ("transformers", "numpy", "soundfile", "soxr", "faiss", "yaml", "safetensors", "tokenizers", "fastapi", "uvicorn"):
    try:
        mod = importlib.import_module(m)
        print(f"  {m} {getattr(mod, '__version__', '?')}")
    except ImportError as e:
        print(f"  {m} MISSING ({e})")
import inspect, transformers
from transformers.models.gpt2 import modeling_gpt2
if "cache" not in inspect.signature(modeling_gpt2.GPT2Model.forward).parameters:
    print(f"WARNING: transformers {transformers.__version__} has no `cache=` argument (the project needs >= 5.24): "
          "cached generation would be wrong; carry .whl/transformers-5.24.0-py3-none-any.whl")
EOF

start=$SECONDS
"$PY" -m benchmarks --device "$DEVICE" --out "$OUT/suite" --retrieval-sizes 10000 100000 \
    --only generation training encoder memory serve_load pipeline retrieval 2>&1 | tee "$OUT/suite.log"
echo "gpu.sh: suite took $((SECONDS - start)) s" | tee -a "$OUT/suite.log"

if [ "${RETRIEVAL_1M:-0}" = 1 ]; then
    "$PY" -m benchmarks.retrieval --sizes 1000000 --data lowrank --json "$OUT/retrieval-1m.json" 2>&1 | tee "$OUT/retrieval-1m.log"
fi
echo "gpu.sh: done in $((SECONDS - start)) s; results in $OUT/suite/results.md"
