"""`python -m benchmarks [--quick] [--only SECTION ...] [--out DIR]`: every figure beside its baseline,
measured in the same run; writes DIR/results.json and DIR/results.md. Never asserts times."""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path

from benchmarks.common import machine

SECTIONS = ["generation", "encoder", "training", "retrieval", "pipeline", "memory", "serve_load"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes only: finishes in minutes on 2 cores")
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(), "quick": args.quick}
    t0 = time.perf_counter()
    for name in args.only:
        try:
            module = importlib.import_module(f"benchmarks.{name}")
        except ImportError as e:
            results[name] = {"skipped": f"section unavailable: {e}"}
            continue
        print(f"== {name}", flush=True)
        t = time.perf_counter()
        results[name] = module.run(quick=args.quick)
        results[name]["seconds"] = time.perf_counter() - t
    results["seconds"] = time.perf_counter() - t0
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    md = [f"# Benchmark results\n\nmachine: `{json.dumps(results['machine'])}`, quick: {args.quick}, "
          f"total {results['seconds']:.0f} s\n"]
    for name in args.only:
        r = results[name]
        md.append(f"## {name}\n")
        md.append(r.get("table", r.get("skipped", "")) + "\n")
        headline = {k: v for k, v in r.items() if isinstance(v, (int, float)) and k != "seconds"}
        if headline:
            md.append("headline: " + ", ".join(f"{k} = {v:.4g}" for k, v in headline.items()) + "\n")
        if r.get("profile"):
            md.append("```\n" + r["profile"] + "\n```\n")
    (out / "results.md").write_text("\n".join(md))
    print(f"wrote {out / 'results.json'} and {out / 'results.md'} ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
