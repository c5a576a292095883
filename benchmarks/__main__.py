"""`python -m benchmarks [--quick] [--device cuda|cpu] [--only SECTION ...] [--out DIR]`: every figure beside
its baseline, measured in the same run; writes DIR/results.json and DIR/results.md. Never asserts times.

--device (default: cuda if torch sees one, else cpu) is where the models run; on CUDA every timing waits
for the GPU (torch.cuda.synchronize), matmuls run under bf16 autocast, the training peak is a bf16 matmul
on that GPU and the memory section adds torch.cuda.max_memory_allocated. The retrieval (faiss-cpu) and
input-pipeline sections always run on the CPU. A section whose packages are missing is skipped with the
missing module named; a section that fails is recorded with its error and the run goes on.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
import traceback
from pathlib import Path

import torch

from benchmarks.common import machine, resolve_device

SECTIONS = ["generation", "decoding", "encoder", "training", "retrieval", "pipeline", "memory", "serve_load"]
WHEELS_HINT = "carry its wheels (docs/performance.md, benchmarks/gpu.sh)"
# --quick keeps the whole suite within ~5 min on 2 cores: retrieval then measures 10 k items only (its own
# `python -m benchmarks.retrieval --quick` adds 100 k, whose hnsw build alone takes minutes there)
QUICK_ARGS = {"retrieval": {"sizes": [10_000]}}


def _run_section(name: str, quick: bool, device, extra: dict) -> dict:
    try:
        module = importlib.import_module(f"benchmarks.{name}")
        return module.run(quick=quick, device=device, **extra)
    except ImportError as e:  # at import or inside run: a package this machine lacks
        missing = getattr(e, "name", None) or str(e)
        print(f"  {name}: SKIPPED, module {missing!r} is not installed ({WHEELS_HINT})", flush=True)
        return {"skipped": f"section skipped: module `{missing}` is not installed here ({e}); {WHEELS_HINT}"}
    except Exception as e:  # noqa: BLE001  one broken section must not cost the others (a GPU run is one shot)
        traceback.print_exc()
        return {"error": f"{type(e).__name__}: {e}", "table": f"FAILED: `{type(e).__name__}: {e}`"}


def _write(out: Path, results: dict, args, device, t0: float) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    total = results.get("seconds", time.perf_counter() - t0)
    md = [f"# Benchmark results\n\nmachine: `{json.dumps(results['machine'])}`, quick: {args.quick}, total {total:.0f} s\n"]
    for name in [n for n in args.only if n in results]:
        r = results[name]
        md.append(f"## {name}\n")
        if r.get("dtype"):
            md.append(f"device {device}, compute dtype {r['dtype']}, {r['seconds']:.0f} s\n")
        md.append(r.get("table", r.get("skipped", "")) + "\n")
        headline = {k: v for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "seconds"}
        if headline:
            md.append("headline: " + ", ".join(f"{k} = {v:.4g}" for k, v in headline.items()) + "\n")
        if r.get("profile"):
            md.append("```\n" + r["profile"] + "\n```\n")
    (out / "results.md").write_text("\n".join(md))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes only: finishes in minutes on 2 cores")
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op CPU threads (default: torch's own choice)")
    p.add_argument("--retrieval-sizes", type=int, nargs="+", default=None,
                   help="item counts for the retrieval section, both data kinds (default: 10 k with --quick, else its full plan)")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results = {"machine": machine(device), "quick": args.quick}
    for name in args.only:
        print(f"== {name} ({device})", flush=True)
        t = time.perf_counter()
        extra = dict(QUICK_ARGS.get(name, {})) if args.quick else {}
        if name == "retrieval" and args.retrieval_sizes:
            extra["sizes"] = args.retrieval_sizes
        results[name] = _run_section(name, args.quick, device, extra)
        results[name]["seconds"] = time.perf_counter() - t
        _write(out, results, args, device, t0)  # after every section: what was measured survives a kill
    results["seconds"] = time.perf_counter() - t0
    _write(out, results, args, device, t0)
    print(f"wrote {out / 'results.json'} and {out / 'results.md'} ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
