"""One worker thread owns the model; requests queue up and run together in micro-batches.

Requests with the same sampling settings (greedy, or the same temperature/top-p) share a batch; each
row keeps its own prompt, audios, token budget and output stream, so answers never mix (a test sends
different prompts at once and compares each with its answer computed alone). `max_batch_size=1` gives a
plain queue. Encoded audio is kept by content hash: the follow-up turns of a conversation, which resend
the same audio, skip the encoder.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from audioflamingo.chat import StreamDecoder
from audioflamingo.model.cache import AudioTokens
from audioflamingo.model.generate import GenerationConfig, generate
from audioflamingo.text import pad_batch


class QueueFull(Exception):
    pass


@dataclass
class Job:
    """One request. `emit(event)` receives, from the worker thread:
    {"type": "delta", "index": i, "text": str}  (only when stream)
    {"type": "done", "choices": [{"index", "text", "finish_reason", "tokens"}]}
    {"type": "error", "message": str}"""

    ids: torch.Tensor  # (T,) prompt tokens
    clips: list  # audio Clips in <audio> marker order
    keys: list[str]  # content hash of each clip (the encoded-audio cache key)
    gen: GenerationConfig
    n: int
    emit: Callable[[dict], None]
    stream: bool = False
    submitted: float = field(default_factory=time.perf_counter)

    def batch_key(self):
        g = self.gen
        if g.do_sample and g.seed is not None:
            return ("seeded", id(self))  # a seeded request runs alone, so its seed means something
        return (g.do_sample, g.temperature, g.top_p, g.top_k)


class BatchWorker:
    def __init__(self, model, max_batch_size: int = 8, window_s: float = 0.01, max_queue: int = 64, audio_cache_size: int = 32):
        self.model, self.max_rows, self.window_s = model, max(1, max_batch_size), window_s
        self.queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self.pending: deque = deque()  # taken from the queue but not fitting the current batch
        self.audio_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.audio_cache_size = audio_cache_size
        self.stats = {"batches": 0, "requests": 0, "max_rows": 0, "audios_encoded": 0, "audio_cache_hits": 0}
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stop = False

    # lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop = False
                self._thread = threading.Thread(target=self._loop, name="audioflamingo-worker", daemon=True)
                self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        self._stop = True
        if self._thread is not None:
            try:
                self.queue.put_nowait(None)
            except queue.Full:
                pass
            self._thread.join(timeout)

    def submit(self, job: Job) -> None:
        self.start()
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"{self.queue.maxsize} requests are already waiting") from None

    @property
    def waiting(self) -> int:
        return self.queue.qsize() + len(self.pending)

    # the loop ---------------------------------------------------------------------------------------

    def _take(self, timeout: float | None):
        if self.pending:
            return self.pending.popleft()
        return self.queue.get(timeout=timeout) if timeout is None or timeout > 0 else self.queue.get_nowait()

    def _gather(self, first: Job) -> list[Job]:
        """`first` plus queued jobs with the same settings, up to max_rows, waiting at most window_s."""
        batch, rows, key = [first], first.n, first.batch_key()
        for job in list(self.pending):  # earlier arrivals first
            if rows + job.n <= self.max_rows and job.batch_key() == key:
                self.pending.remove(job)
                batch.append(job)
                rows += job.n
        deadline = time.perf_counter() + self.window_s
        while rows < self.max_rows and not self._stop:
            try:
                job = self.queue.get(timeout=max(0.0, deadline - time.perf_counter())) if deadline > time.perf_counter() else self.queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._stop = True
                break
            if rows + job.n <= self.max_rows and job.batch_key() == key:
                batch.append(job)
                rows += job.n
            else:
                self.pending.append(job)
        return batch

    def _loop(self) -> None:
        while not self._stop:
            job = self._take(None)
            if job is None:
                break
            batch = self._gather(job) if self.max_rows > 1 else [job]
            try:
                self._run(batch)
            except Exception as e:  # noqa: BLE001  (every waiting client gets the error, the worker lives on)
                for j in batch:
                    _safe_emit(j, {"type": "error", "message": f"{type(e).__name__}: {e}"})

    # one batch --------------------------------------------------------------------------------------

    def _encoded(self, jobs: list[Job]) -> dict[str, torch.Tensor]:
        """Encode the audios not cached yet (one encoder call) -> {key: (L_a, E) tokens} for these jobs."""
        todo = {}
        for j in jobs:
            for k, c in zip(j.keys, j.clips):
                if k not in self.audio_cache and k not in todo:
                    todo[k] = c
        if todo:
            enc = self.model.encode_audio([[c] for c in todo.values()])  # (A, Lmax, E)
            for a, k in enumerate(todo):
                n = int((enc.audio_index[a] >= 0).sum())
                self.audio_cache[k] = enc.tokens[a, :n]  # (L_a, E)
            self.stats["audios_encoded"] += len(todo)
        found = {}
        for j in jobs:
            for k in j.keys:
                if k not in todo:
                    self.stats["audio_cache_hits"] += 1
                self.audio_cache.move_to_end(k)
                found[k] = self.audio_cache[k]
        while len(self.audio_cache) > self.audio_cache_size:
            self.audio_cache.popitem(last=False)
        return found

    def _audio_tokens(self, rows: list[Job]) -> AudioTokens | None:
        if not any(j.keys for j in rows):
            return None
        enc = self._encoded(list({id(j): j for j in rows}.values()))
        per_row = [[enc[k] for k in j.keys] for j in rows]
        E = next(t for r in per_row for t in r).shape[1]
        L = max(1, max(sum(t.shape[0] for t in r) for r in per_row))
        ref = next(t for r in per_row for t in r)
        tokens = ref.new_zeros(len(rows), L, E)  # (B, L, E)
        index = torch.full((len(rows), L), -1, dtype=torch.long, device=ref.device)  # (B, L)
        for b, r in enumerate(per_row):
            at = 0
            for a, t in enumerate(r):
                tokens[b, at : at + len(t)], index[b, at : at + len(t)] = t, a
                at += len(t)
        return AudioTokens(tokens, index)

    @torch.no_grad()
    def _run(self, batch: list[Job]) -> None:
        model = self.model
        rows = [(j, c) for j in batch for c in range(j.n)]  # (job, choice index) per row
        self.stats["batches"] += 1
        self.stats["requests"] += len(batch)
        self.stats["max_rows"] = max(self.stats["max_rows"], len(rows))
        input_ids, mask = pad_batch([j.ids for j, _ in rows], model.media.pad, side="left")  # (B, T)
        audio = self._audio_tokens([j for j, _ in rows])
        limits = [j.gen.max_new_tokens for j, _ in rows]
        cfg = replace(batch[0].gen, max_new_tokens=max(limits))
        decoders = [StreamDecoder(model.tokenizer) for _ in rows]
        finish: list[str | None] = [None] * len(rows)
        sent_done: set[int] = set()

        def close_finished_jobs():
            for j in batch:
                mine = [r for r, (jj, _) in enumerate(rows) if jj is j]
                if id(j) not in sent_done and all(finish[r] is not None for r in mine):
                    sent_done.add(id(j))
                    choices = []
                    for r in mine:
                        rest = decoders[r].finish()
                        if rest and j.stream:
                            _safe_emit(j, {"type": "delta", "index": rows[r][1], "text": rest})
                        choices.append({"index": rows[r][1], "text": decoders[r].text, "finish_reason": finish[r], "tokens": len(decoders[r].ids)})
                    _safe_emit(j, {"type": "done", "choices": choices})

        def on_tokens(fresh):
            changed = False
            for r, tok in enumerate(fresh):
                if finish[r] is not None:
                    continue
                if tok is None:
                    finish[r], changed = "stop", True
                    continue
                delta = decoders[r].push(tok)
                job, index = rows[r]
                if delta and job.stream:
                    _safe_emit(job, {"type": "delta", "index": index, "text": delta})
                if len(decoders[r].ids) >= limits[r]:
                    finish[r], changed = "length", True
            if changed:
                close_finished_jobs()

        dev = model.device
        stop = {model.media.eoc, model.media.eos}
        generate(model, input_ids.to(dev), mask.to(dev), audio, cfg, stop, on_tokens)
        for r in range(len(rows)):
            if finish[r] is None:
                finish[r] = "length"
        close_finished_jobs()


def _safe_emit(job: Job, event: dict) -> None:
    try:
        job.emit(event)
    except RuntimeError:  # the client's event loop is gone (disconnected): nothing to tell
        pass
