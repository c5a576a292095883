"""The OpenAI chat-completions request and response shapes, and how messages become a dialogue.

Messages map onto the chat template (DESIGN.md 1e): each user message's audios become `<audio>`
markers in front of its round ("user: text \\nassistant: <SEP>"), each assistant message is the answer
of the round before it. System messages are ignored with a warning (the template has no place for one).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from audioflamingo.chat import AudioMark, Round
from audioflamingo.serve.limits import ApiError, ServeConfig, decode_base64_audio


class InputAudio(BaseModel):
    data: str
    format: str | None = None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None
    input_audio: InputAudio | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[ContentPart] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send many optional fields; unknown ones are ignored
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: dict | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    seed: int | None = None


def parse_request(payload: Any) -> ChatRequest:
    if not isinstance(payload, dict):
        raise ApiError(400, "the request body must be a JSON object", None, "invalid_json")
    try:
        return ChatRequest.model_validate(payload)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(400, f"{where}: {first['msg']} ({len(e.errors())} problem(s) in the request)", where, "invalid_request") from None


def to_dialogue(req: ChatRequest, cfg: ServeConfig) -> tuple[list, list[tuple[bytes, str]], list[str]]:
    """-> (dialogue items ending with an open Round, [(audio bytes, sha256)] in marker order, warnings)."""
    items: list = []
    audios: list[tuple[bytes, str]] = []
    notes: list[str] = []
    n_audio = sum(1 for m in req.messages if isinstance(m.content, list) for p in m.content if p.type == "input_audio")
    if n_audio > cfg.max_audios:  # before decoding any of them
        raise ApiError(400, f"messages: {n_audio} audios; this server accepts at most {cfg.max_audios} per request", "messages", "too_many_audios")
    for i, msg in enumerate(req.messages):
        where = f"messages.{i}"
        parts = [ContentPart(type="text", text=msg.content)] if isinstance(msg.content, str) else (msg.content or [])
        texts, marks = [], []
        for j, part in enumerate(parts):
            pwhere = f"{where}.content.{j}"
            if part.type == "text":
                texts.append(part.text or "")
            elif part.type == "input_audio":
                if part.input_audio is None:
                    raise ApiError(400, f"{pwhere}: an input_audio part needs input_audio: {{data, format}}", pwhere, "invalid_request")
                if msg.role != "user":
                    raise ApiError(400, f"{pwhere}: audio is accepted in user messages only", pwhere, "invalid_request")
                audios.append(decode_base64_audio(part.input_audio.data, part.input_audio.format, f"{pwhere}.input_audio", cfg))
                marks.append(AudioMark(len(audios) - 1))
            else:
                raise ApiError(400, f"{pwhere}: content part type {part.type!r} is not supported; use 'text' and 'input_audio' (base64 data; paths and URLs are never read)", f"{pwhere}.type", "unsupported_content")
        text = "\n".join(t for t in texts if t)
        if msg.role in ("system", "developer"):
            notes.append(f"{where}: the {msg.role} message was ignored (the chat template has no system prompt)")
        elif msg.role == "user":
            if items and isinstance(items[-1], Round) and items[-1].answer is None:  # two user messages in a row: merge
                items[-1:-1] = marks
                items[-1].user = "\n".join(t for t in (items[-1].user, text) if t)
            else:
                items += marks + [Round(text)]
        elif msg.role == "assistant":
            if not items or not isinstance(items[-1], Round) or items[-1].answer is not None:
                raise ApiError(400, f"{where}: an assistant message must follow a user message", where, "invalid_dialogue")
            items[-1].answer = text
        else:
            raise ApiError(400, f"{where}.role {msg.role!r} is not supported (user, assistant, system)", f"{where}.role", "invalid_role")
    if not items or not isinstance(items[-1], Round) or items[-1].answer is not None:
        raise ApiError(400, "messages: the last message must be a user message (the question to answer)", "messages", "invalid_dialogue")
    return items, audios, notes


# ----------------------------------------------------------------------------------------------------
# responses


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def completion(cid: str, model: str, choices: list[dict], usage: dict, notes: list[str]) -> dict:
    return {
        "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": c["index"], "message": {"role": "assistant", "content": c["text"]}, "finish_reason": c["finish_reason"]} for c in choices],
        "usage": usage,
        "warnings": notes,  # not in OpenAI's schema: what was changed on the way in (clients ignore it)
    }


def chunk(cid: str, model: str, index: int, delta: dict, finish_reason: str | None = None, **extra) -> dict:
    return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason}], **extra}
