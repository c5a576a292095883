"""Server limits (a config dataclass) and the checks that turn bad input into clear 4xx JSON errors.

Audio arrives only as base64 bytes inside the request (`input_audio.data`); the server never opens a
path, URL or file name that a client sends.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from dataclasses import dataclass

AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg", "oga", "opus", "aiff", "aif")


@dataclass
class ServeConfig:
    """Every limit the server enforces; build from YAML with `load_config(ServeConfig, path)`."""

    model_name: str | None = None  # the id in /v1/models and responses (default: from the model path/preset)
    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = 8000
    max_body_bytes: int = 25_000_000  # whole request body (base64 audio included)
    max_audio_seconds: float = 120.0  # per audio, before decoding (the model itself uses at most its window span)
    max_audios: int = 8  # audios per request, over all messages
    max_messages: int = 64
    max_tokens: int = 512  # the largest max_tokens a request may ask for
    default_max_tokens: int = 128  # when the request gives none
    max_n: int = 4  # choices per request
    max_batch_size: int = 8  # rows (requests x n) generated together; 1 = no batching, a plain queue
    batch_window_ms: float = 10.0  # how long the worker waits for more requests to join a batch
    max_queue: int = 64  # waiting requests; more -> 503
    audio_cache_size: int = 32  # encoded audios kept (by content hash): a follow-up turn never re-encodes


class ApiError(Exception):
    """A client error: HTTP status + an OpenAI-style error body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def decode_base64_audio(data: str, fmt: str | None, where: str, cfg: ServeConfig) -> tuple[bytes, str]:
    """The `input_audio` part -> (audio bytes, sha256 hex), checking format, base64 and duration."""
    if fmt is not None and fmt.lower() not in AUDIO_FORMATS:
        raise ApiError(400, f"{where}.format {fmt!r} is not supported; use one of {', '.join(AUDIO_FORMATS)}", f"{where}.format", "unsupported_audio_format")
    if data.startswith("data:") and "," in data:  # a data URL: keep what follows the comma
        data = data.split(",", 1)[1]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{where}.data is not valid base64 (send the audio file's bytes base64-encoded; file paths and URLs are not read)", f"{where}.data", "invalid_base64") from None
    if not raw:
        raise ApiError(400, f"{where}.data is empty", f"{where}.data", "empty_audio")
    seconds = audio_seconds(raw, where)
    if seconds > cfg.max_audio_seconds:
        raise ApiError(400, f"{where}: the audio is {seconds:.1f} s; this server accepts at most {cfg.max_audio_seconds:g} s per audio", f"{where}.data", "audio_too_long")
    return raw, hashlib.sha256(raw).hexdigest()


def audio_seconds(raw: bytes, where: str) -> float:
    """Duration from the file header (nothing decoded yet); undecodable -> 400."""
    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(raw))
    except Exception as e:  # noqa: BLE001  (libsndfile raises several kinds)
        raise ApiError(400, f"{where}: cannot decode the audio ({type(e).__name__}); send wav, flac, ogg or mp3", f"{where}.data", "undecodable_audio") from None
    if info.frames <= 0 or info.samplerate <= 0:
        # some formats (mp3 streams) do not state their length: decode to know it
        try:
            data, rate = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)
        except Exception as e:  # noqa: BLE001
            raise ApiError(400, f"{where}: cannot decode the audio ({type(e).__name__})", f"{where}.data", "undecodable_audio") from None
        return len(data) / max(rate, 1)
    return info.frames / info.samplerate


def check_request_limits(n_audios: int, n_messages: int, max_tokens: int, n: int, cfg: ServeConfig) -> None:
    if n_messages > cfg.max_messages:
        raise ApiError(400, f"messages: {n_messages} messages; this server accepts at most {cfg.max_messages}", "messages", "too_many_messages")
    if n_audios > cfg.max_audios:
        raise ApiError(400, f"messages: {n_audios} audios; this server accepts at most {cfg.max_audios} per request", "messages", "too_many_audios")
    if max_tokens > cfg.max_tokens:
        raise ApiError(400, f"max_tokens {max_tokens} is larger than this server's limit {cfg.max_tokens}", "max_tokens", "max_tokens_too_large")
    if n > cfg.max_n:
        raise ApiError(400, f"n {n} is larger than this server's limit {cfg.max_n}", "n", "n_too_large")
