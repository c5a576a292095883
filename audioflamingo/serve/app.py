"""The FastAPI app: OpenAI-compatible chat completions (plain and streamed), models, health, web page.

    uvicorn-ready:  app = create_app("path/to/checkpoint", ServeConfig(port=8000))

Request handling (parse, check limits, decode audio, tokenize) runs in the thread pool; generation runs
only in the single worker thread that owns the model (see batching.py).
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from audioflamingo.chat import check_chat_model, fit_dialogue
from audioflamingo.serve.batching import BatchWorker, Job, QueueFull
from audioflamingo.serve.limits import ApiError, ServeConfig, check_request_limits
from audioflamingo.serve.schemas import ChatRequest, chunk, completion, completion_id, parse_request, to_dialogue

STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}  # the only files served besides index.html


def _load(model_or_path):
    if model_or_path is None or isinstance(model_or_path, (str, Path)):
        from audioflamingo import load_model

        return load_model(model_or_path), (Path(str(model_or_path)).name if model_or_path else "audioflamingo")
    return model_or_path, getattr(model_or_path.config, "name", "audioflamingo")


def create_app(model_or_path=None, config: ServeConfig | None = None) -> FastAPI:
    cfg = config or ServeConfig()
    model, default_name = _load(model_or_path)
    check_chat_model(model)
    name = cfg.model_name or default_name
    worker = BatchWorker(model, cfg.max_batch_size, cfg.batch_window_ms / 1000, cfg.max_queue, cfg.audio_cache_size)
    # A fast tokenizer must not be used by two threads at once ("Already borrowed"): the worker owns the
    # model's; request threads share a copy, one at a time.
    prep = _Prep(copy.deepcopy(model.tokenizer), threading.Lock())

    @asynccontextmanager
    async def lifespan(app):
        worker.start()
        yield
        worker.close()

    app = FastAPI(title="audioflamingo", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.worker, app.state.model, app.state.config = worker, model, cfg

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(Exception)
    async def _server_error(request, exc: Exception):  # a bug, not the client's fault: still a JSON body
        return JSONResponse(ApiError(500, f"internal error: {type(exc).__name__}: {exc}", None, "internal_error").body(), status_code=500)

    # ---------------------------------------------------------------------------------------------

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": name, "waiting": worker.waiting, "stats": dict(worker.stats),
                "limits": {k: v for k, v in asdict(cfg).items() if k.startswith(("max_", "default_"))},
                "sample_rate": model.config.audio.sample_rate, "audio_seconds_used": model.config.audio.max_seconds}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "audioflamingo"}]}

    @app.get("/")
    async def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/{filename}")
    async def static(filename: str):
        if filename not in STATIC_FILES:  # a fixed list: no path from the client reaches the file system
            raise ApiError(404, f"/static/{filename}: no such file", None, "not_found")
        return FileResponse(STATIC / filename, media_type=STATIC_FILES[filename])

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        raw = await _read_body(request, cfg.max_body_bytes)
        try:
            payload = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the request body is not valid JSON ({e})", None, "invalid_json") from None
        req = parse_request(payload)
        job, notes, prompt_tokens = await run_in_threadpool(_prepare, req, model, cfg, prep)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        job.emit = lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev)
        try:
            worker.submit(job)
        except QueueFull as e:
            raise ApiError(503, f"the server is busy ({e}); retry later", None, "server_busy") from None
        cid = completion_id()
        if req.stream:
            include_usage = bool((req.stream_options or {}).get("include_usage"))
            return StreamingResponse(_sse(events, cid, name, job.n, prompt_tokens, notes, include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        while True:
            ev = await events.get()
            if ev["type"] == "error":
                raise ApiError(500, f"generation failed: {ev['message']}", None, "generation_failed")
            if ev["type"] == "done":
                break
        choices = sorted(ev["choices"], key=lambda c: c["index"])
        done = sum(c["tokens"] for c in choices)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": done, "total_tokens": prompt_tokens + done}
        return completion(cid, name, choices, usage, notes)

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body is {int(declared)} bytes; this server accepts at most {limit}", None, "body_too_large")
    parts, total = [], 0
    async for part in request.stream():  # a body without (or lying about) its length is counted as it arrives
        total += len(part)
        if total > limit:
            raise ApiError(413, f"the request body exceeds {limit} bytes", None, "body_too_large")
        parts.append(part)
    return b"".join(parts)


@dataclass
class _Prep:
    tokenizer: object
    lock: threading.Lock


def _prepare(req: ChatRequest, model, cfg: ServeConfig, prep: _Prep) -> tuple[Job, list[str], int]:
    """Validate, decode the audio, build and fit the prompt (runs in the thread pool, not the worker)."""
    import warnings

    from audioflamingo.audio import AudioError
    from audioflamingo.model.generate import GenerationConfig

    max_tokens = req.max_completion_tokens or req.max_tokens or min(cfg.default_max_tokens, cfg.max_tokens)
    items, audios, notes = to_dialogue(req, cfg)
    check_request_limits(len(audios), len(req.messages), max_tokens, req.n, cfg)
    clips = []
    for i, (raw, _) in enumerate(audios):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the same notes are in clip.warnings and go into the response
            try:
                clip = model.load_clip(raw)
            except AudioError as e:
                raise ApiError(400, f"audio {i}: {e.problem}", "messages", "undecodable_audio") from None
        if clip.seconds > model.config.audio.max_seconds:
            notes.append(f"audio {i}: {clip.seconds:.2f} s long; the model uses the first {model.config.audio.max_seconds:.2f} s")
        notes.extend(f"audio {i}: {w.replace('<bytes>: ', '')}" for w in clip.warnings)
        clips.append(clip)
    tok = prep.tokenizer
    bos = tok.bos_token or tok.eos_token
    budget = model.config.lm.max_length - max_tokens - 1
    try:
        with prep.lock:
            items, ids, fit_notes = fit_dialogue(items, tok, budget, bos)
    except ValueError as e:
        raise ApiError(400, f"messages: {e}", "messages", "context_length_exceeded") from None
    notes.extend(fit_notes)
    temperature = req.temperature if req.temperature is not None else 0.0
    gen = GenerationConfig(max_new_tokens=max_tokens, do_sample=temperature > 0, temperature=max(temperature, 1e-5),
                           top_p=req.top_p if req.top_p is not None else 1.0, seed=req.seed)
    if not gen.do_sample:
        gen.temperature, gen.top_p = 1.0, 1.0  # greedy: the sampling knobs do not matter (and must not split batches)
    job = Job(ids=ids, clips=clips, keys=[h for _, h in audios], gen=gen, n=req.n, emit=lambda ev: None, stream=req.stream)
    return job, notes, len(ids)


async def _sse(events: asyncio.Queue, cid: str, model: str, n: int, prompt_tokens: int, notes: list[str], include_usage: bool):
    def line(obj) -> str:
        return f"data: {json.dumps(obj)}\n\n"

    for i in range(n):
        yield line(chunk(cid, model, i, {"role": "assistant", "content": ""}, warnings=notes))
    while True:
        ev = await events.get()
        if ev["type"] == "delta":
            yield line(chunk(cid, model, ev["index"], {"content": ev["text"]}))
        elif ev["type"] == "error":
            yield line({"error": {"message": f"generation failed: {ev['message']}", "type": "server_error", "code": "generation_failed"}})
            break
        else:
            done = 0
            for c in sorted(ev["choices"], key=lambda c: c["index"]):
                done += c["tokens"]
                yield line(chunk(cid, model, c["index"], {}, c["finish_reason"]))
            if include_usage:
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": done, "total_tokens": prompt_tokens + done}
                yield line({**chunk(cid, model, 0, {}), "choices": [], "usage": usage})
            break
    yield "data: [DONE]\n\n"
