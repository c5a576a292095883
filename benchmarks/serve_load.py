"""Load test of the chat server on loopback: throughput and p50/p95 latency, with and without batching.

    PYTHONPATH=. python benchmarks/serve_load.py --model tiny --requests 32 --concurrency 8 --max-tokens 32

Also a section of `python -m benchmarks` (`run(quick)`). For each mode ("batched": up to --batch-size rows per step; "queue": one request at a time) it starts the
app under uvicorn on a free 127.0.0.1 port in this process, sends one warm-up request, then --requests
requests with at most --concurrency in flight (each with its own prompt and audio), and prints a table.
`--url http://127.0.0.1:PORT` measures a server that is already running instead (loopback only).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import ipaddress
import json
import socket
import statistics
import sys
import threading
import time
from urllib.parse import urlparse

import numpy as np

MAX_REQUESTS, MAX_CONCURRENCY = 1000, 64


def wav_b64(seconds: float, freq: float, rate: int = 16000) -> str:
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, format="WAV")
    return base64.b64encode(buf.getvalue()).decode()


def make_requests(n: int, seconds: float, max_tokens: int) -> list[dict]:
    audios = [wav_b64(seconds, 200 + 150 * k) for k in range(min(n, 8))]  # a few distinct clips, reused
    questions = ["What do you hear?", "Describe the sound.", "Is it music?", "How loud is it?", "What is the pitch?"]
    return [{"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": audios[i % len(audios)], "format": "wav"}},
                                                       {"type": "text", "text": f"{questions[i % len(questions)]} (#{i})"}]}],
             "max_tokens": max_tokens} for i in range(n)]


async def _send_all(url: str, bodies: list[dict], concurrency: int) -> tuple[list[float], int, float]:
    import httpx

    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    tokens = 0

    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        async def one(body):
            nonlocal tokens
            async with sem:
                t0 = time.perf_counter()
                r = await client.post("/v1/chat/completions", json=body)
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    raise RuntimeError(f"request failed: {r.status_code} {r.text[:200]}")
                tokens += r.json()["usage"]["completion_tokens"]

        await one(bodies[0])  # warm-up, not counted
        latencies.clear()
        tokens = 0
        start = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return latencies, tokens, time.perf_counter() - start


def start_server(model, batch_size: int):
    import uvicorn

    from audioflamingo.serve import ServeConfig, create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(model, ServeConfig(model_name="bench", max_batch_size=batch_size, max_queue=MAX_REQUESTS + 1, max_tokens=4096))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}", app


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def measure(model_spec: str, requests: int, concurrency: int, max_tokens: int, audio_seconds: float,
            batch_size: int = 8, modes=("queue", "batched"), device=None) -> list[dict]:
    """Start the server once per mode on loopback and load it -> one result row per mode."""
    from audioflamingo import load_model

    bodies = make_requests(requests, audio_seconds, max_tokens)
    model = load_model(model_spec, device=device)
    rows = []
    for mode in modes:
        if mode not in ("queue", "batched"):
            raise ValueError(f"unknown mode {mode!r} (queue, batched)")
        server, thread, url, app = start_server(model, 1 if mode == "queue" else batch_size)
        try:
            lat, tok, wall = asyncio.run(_send_all(url, bodies, concurrency))
            stats = dict(app.state.worker.stats)
        finally:
            server.should_exit = True
            thread.join(10)
        rows.append(_row(mode, lat, tok, wall, stats))
    return rows


def _row(mode, lat, tok, wall, stats) -> dict:
    return {"mode": mode, "requests_per_s": len(lat) / wall, "tokens_per_s": tok / wall, "p50_s": statistics.median(lat),
            "p95_s": pct(lat, 95), "wall_s": wall, "completion_tokens": tok,
            "batches": stats["batches"] - 1 if stats else None,  # the warm-up request is not counted
            "max_rows": stats["max_rows"] if stats else None}


def run(quick: bool = False, device=None) -> dict:
    """Section for `python -m benchmarks`: the tiny preset on `device`, queue vs batched."""
    import soundfile  # noqa: F401  the request bodies are WAV files: fail here, before a server starts

    from benchmarks.common import table

    n = 16 if quick else 64
    rows = measure("tiny", n, 8, 16 if quick else 32, 2.0, device=str(device) if device is not None else None)
    by = {r["mode"]: r for r in rows}
    return {"table": f"{n} requests, concurrency 8, tiny preset, loopback, device {device or 'cpu'}\n\n" + table(rows),
            "batched_over_queue_throughput": by["batched"]["requests_per_s"] / by["queue"]["requests_per_s"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny", help="checkpoint folder or preset (default: tiny, random weights)")
    p.add_argument("--url", default=None, help="an already running server on loopback (then --model is not loaded)")
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--audio-seconds", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=8, help="rows per batch in the batched mode")
    p.add_argument("--modes", default="queue,batched", help="comma list of: queue, batched")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's); 1 is steadier on a busy shared CPU")
    p.add_argument("--json", action="store_true", help="print one JSON object per mode")
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if not 1 <= args.requests <= MAX_REQUESTS or not 1 <= args.concurrency <= MAX_CONCURRENCY:
        p.error(f"--requests must be 1..{MAX_REQUESTS} and --concurrency 1..{MAX_CONCURRENCY}")
    if args.url:
        host = urlparse(args.url).hostname or ""
        try:
            local = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            local = False
        if not local:
            p.error(f"--url {args.url}: this benchmark only talks to loopback (127.0.0.1, ::1, localhost)")
        bodies = make_requests(args.requests, args.audio_seconds, args.max_tokens)
        rows = [_row("external", *asyncio.run(_send_all(args.url, bodies, args.concurrency)), None)]
    else:
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        try:
            rows = measure(args.model, args.requests, args.concurrency, args.max_tokens, args.audio_seconds,
                           args.batch_size, modes, args.device)
        except ValueError as e:
            p.error(f"--modes: {e}")
    print(f"# {args.requests} requests, concurrency {args.concurrency}, max_tokens {args.max_tokens}, "
          f"audio {args.audio_seconds} s, model {args.url or args.model}", file=sys.stderr)
    if not args.json:
        print(f"{'mode':10s} {'req/s':>8s} {'tok/s':>8s} {'p50 s':>8s} {'p95 s':>8s} {'batches':>8s} {'max rows':>8s}")
    for r in rows:
        if args.json:
            print(json.dumps(r))
        else:
            print(f"{r['mode']:10s} {r['requests_per_s']:8.2f} {r['tokens_per_s']:8.1f} {r['p50_s']:8.3f} {r['p95_s']:8.3f} "
                  f"{r['batches'] if r['batches'] is not None else '-':>8} {r['max_rows'] if r['max_rows'] is not None else '-':>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
