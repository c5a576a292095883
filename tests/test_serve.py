"""The HTTP server: OpenAI format (plain and streamed), multi-turn + several audios, batching without mixing
answers, every limit's 4xx error, and the real server on a loopback port driven by the `openai` client."""

import asyncio
import base64
import contextlib
import io
import json
import socket
import threading
import time

import httpx
import pytest
import soundfile as sf
import torch

from audioflamingo.chat import AudioMark, Round, dialogue_text
from audioflamingo.model.generate import GenerationConfig, generate
from audioflamingo.serve import ServeConfig, create_app
from audioflamingo.text import encode
from conftest import sine, tiny_model

A, B, C = sine(1.0, 300), sine(1.5, 900, seed=2), sine(0.5, 2000, seed=3)


def talkative_model():
    """A random tiny model whose greedy answers differ between prompts (most random models say one thing
    to everything, which could hide answers swapped between requests): LM and xattn weights scaled up,
    and only printable ASCII bytes can be produced."""
    model = tiny_model("llama", gates=1.5, seed=5)
    tok = model.tokenizer
    printable = sorted({tok(chr(c), add_special_tokens=False)["input_ids"][0] for c in range(32, 127)})
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and not name.startswith("encoder") and "embed" not in name:
                p.mul_(3.0)
        out = model.lm.get_output_embeddings().weight
        drop = torch.ones(out.shape[0], dtype=torch.bool)
        drop[printable] = False
        out[drop] = 0.0  # logit 0, below the best printable byte's
    return model


@pytest.fixture(scope="module")
def model():
    return talkative_model()


def wav_b64(audio, fmt="WAV") -> str:
    buf = io.BytesIO()
    sf.write(buf, audio[0], audio[1], format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def user(text, *audios):
    return {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": wav_b64(a), "format": "wav"}} for a in audios]
            + [{"type": "text", "text": text}]}


def expected(model, items, audios, max_tokens):
    """The answer computed alone, straight from the library (no server, no batch)."""
    ids = encode(model.tokenizer, dialogue_text(items))[0][None]  # (1, T)
    audio = model.encode_audio([[model.load_clip(a) for a in audios]]) if audios else None
    out = generate(model, ids, torch.ones_like(ids), audio, GenerationConfig(max_new_tokens=max_tokens), {model.media.eoc, model.media.eos})[0]
    return model.tokenizer.decode(out, skip_special_tokens=True).strip(), ids.shape[1]


@pytest.fixture(scope="module")
def client(model):
    from fastapi.testclient import TestClient

    app = create_app(model, ServeConfig(model_name="tiny-test", max_audio_seconds=5.0, max_audios=3, max_tokens=32,
                                        max_body_bytes=400_000, batch_window_ms=300))
    with TestClient(app) as c:
        yield c


def test_chat_completion_equals_the_library_answer(client, model):
    r = client.post("/v1/chat/completions", json={"model": "tiny-test", "messages": [user("What is it?", A)], "max_tokens": 6})
    assert r.status_code == 200, r.text
    body = r.json()
    want, prompt_tokens = expected(model, [AudioMark(0), Round("What is it?")], [A], 6)
    assert body["object"] == "chat.completion" and body["model"] == "tiny-test"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": want}
    assert body["usage"]["prompt_tokens"] == prompt_tokens
    assert body["choices"][0]["finish_reason"] in ("stop", "length")


def test_streaming_sends_the_same_answer_as_events(client, model):
    r = client.post("/v1/chat/completions", json={"messages": [user("Describe it.", B)], "max_tokens": 8, "stream": True,
                                                   "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    lines = [l[len("data: "):] for l in r.text.split("\n\n") if l.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(l) for l in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    want, _ = expected(model, [AudioMark(0), Round("Describe it.")], [B], 8)
    assert text == want
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] in ("stop", "length")
    assert chunks[-1]["usage"]["completion_tokens"] >= 1


def test_multi_turn_with_several_audios_and_the_audio_cache(client, model):
    messages = [{"role": "system", "content": "You are helpful."}, user("What is the first?", A), {"role": "assistant", "content": "A tone."},
                user("And these two?", B, C)]
    before = dict(client.get("/health").json()["stats"])
    r = client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 6})
    assert r.status_code == 200, r.text
    items = [AudioMark(0), Round("What is the first?", "A tone."), AudioMark(1), AudioMark(2), Round("And these two?")]
    assert r.json()["choices"][0]["message"]["content"] == expected(model, items, [A, B, C], 6)[0]
    assert any("system" in w for w in r.json()["warnings"])
    after = client.get("/health").json()["stats"]
    # A was encoded by an earlier test: only B and C (if new) go through the encoder; the follow-up turn resends all three
    r = client.post("/v1/chat/completions", json={"messages": messages + [{"role": "assistant", "content": "x"}, user("More?")], "max_tokens": 4})
    assert r.status_code == 200
    final = client.get("/health").json()["stats"]
    assert final["audios_encoded"] == after["audios_encoded"] and final["audio_cache_hits"] >= after["audio_cache_hits"] + 3
    assert after["audios_encoded"] <= before["audios_encoded"] + 3


def test_concurrent_requests_are_batched_and_never_mixed(client, model):
    app = client.app
    cases = [("What is it?", A, 3), ("Describe the sound in detail.", B, 5), ("Loud?", C, 7), ("Is there music here?", A, 9)]
    wants = [expected(model, [AudioMark(0), Round(q)], [a], n)[0] for q, a, n in cases]
    assert len(set(wants)) == len(wants)  # each request has its own answer: a swap would show

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as ac:
            reqs = [ac.post("/v1/chat/completions", json={"messages": [user(q, a)], "max_tokens": n, "stream": i % 2 == 1})
                    for i, (q, a, n) in enumerate(cases)]
            return await asyncio.gather(*reqs)

    batches_before = app.state.worker.stats["batches"]
    responses = asyncio.run(run())
    got = []
    for r in responses:
        assert r.status_code == 200, r.text
        if r.headers["content-type"].startswith("text/event-stream"):
            chunks = [json.loads(l[6:]) for l in r.text.split("\n\n") if l.startswith("data: {")]
            got.append("".join(c["choices"][0]["delta"].get("content", "") for c in chunks))
        else:
            got.append(r.json()["choices"][0]["message"]["content"])
    assert got == wants
    assert app.state.worker.stats["batches"] - batches_before < len(cases)  # some requests shared a batch
    assert app.state.worker.stats["max_rows"] >= 2


def test_n_choices(client, model):
    r = client.post("/v1/chat/completions", json={"messages": [user("What?", C)], "max_tokens": 4, "n": 3})
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert len({c["message"]["content"] for c in choices}) == 1  # greedy: the same answer three times


def _err(r, status, code):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"]
    return err["message"]


def test_limits_and_bad_input_give_clear_4xx(client, tmp_path):
    post = lambda body, **kw: client.post("/v1/chat/completions", json=body, **kw)  # noqa: E731
    q = lambda *parts: {"messages": [{"role": "user", "content": list(parts)}]}  # noqa: E731
    audio = lambda data, fmt="wav": {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}  # noqa: E731
    assert "bytes" in _err(client.post("/v1/chat/completions", content=b"{" + b" " * 500_000 + b"}",
                                       headers={"content-type": "application/json"}), 413, "body_too_large")
    assert "JSON" in _err(client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}), 400, "invalid_json")
    assert "messages" in _err(post({"model": "x"}), 400, "invalid_request")
    assert "base64" in _err(post(q(audio("%%%not base64%%%"))), 400, "invalid_base64")
    assert "decode" in _err(post(q(audio(base64.b64encode(b"RIFF....garbage" * 50).decode()))), 400, "undecodable_audio")
    assert "5 s" in _err(post(q(audio(wav_b64(sine(6.0))))), 400, "audio_too_long")
    assert "at most 3" in _err(post(q(*[audio(wav_b64(sine(0.2, 100 * i))) for i in range(1, 5)])), 400, "too_many_audios")
    assert "max_tokens" in _err(post({**q({"type": "text", "text": "hi"}), "max_tokens": 33}), 400, "max_tokens_too_large")
    assert "format" in _err(post(q(audio(wav_b64(A), "exe"))), 400, "unsupported_audio_format")
    assert "not supported" in _err(post(q({"type": "audio_url", "audio_url": {"url": "file:///etc/passwd"}})), 400, "unsupported_content")
    assert "user message" in _err(post({"messages": [{"role": "assistant", "content": "hi"}]}), 400, "invalid_dialogue")
    assert "context" in _err(post({**q({"type": "text", "text": "x" * 600}), "max_tokens": 8}), 400, "context_length_exceeded")


def test_a_file_path_sent_as_audio_is_never_read(client, tmp_path, monkeypatch):
    path = tmp_path / "secret.wav"
    sf.write(path, A[0], A[1])
    opened = []
    import soundfile

    real = soundfile.SoundFile.__init__
    monkeypatch.setattr(soundfile.SoundFile, "__init__", lambda self, f, *a, **k: (opened.append(f), real(self, f, *a, **k))[1])
    for data in (str(path), "file://" + str(path), base64.b64encode(str(path).encode()).decode()):
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}, {"type": "text", "text": "hi"}]}]})
        assert r.status_code == 400
    assert not any(isinstance(f, (str, bytes)) or hasattr(f, "__fspath__") for f in opened)


def test_models_health_and_page(client):
    assert client.get("/v1/models").json()["data"][0]["id"] == "tiny-test"
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["limits"]["max_audios"] == 3
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/..%2Fapp.py").status_code == 404


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(app):
    """`app` under uvicorn on a free loopback port, in a thread -> its base URL; stopped on exit."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def live_server(model):
    """The real app under uvicorn on a loopback port, in a thread."""
    with running(create_app(model, ServeConfig(model_name="tiny-live", batch_window_ms=5))) as url:
        yield url


def test_real_server_with_the_openai_client(live_server, model):
    from openai import OpenAI

    client = OpenAI(base_url=live_server + "/v1", api_key="not-needed", max_retries=0)
    assert [m.id for m in client.models.list()] == ["tiny-live"]
    messages = [user("What is it?", A), {"role": "assistant", "content": "A tone."}, user("Which one is higher?", B)]
    want, _ = expected(model, [AudioMark(0), Round("What is it?", "A tone."), AudioMark(1), Round("Which one is higher?")], [A, B], 8)
    resp = client.chat.completions.create(model="tiny-live", messages=messages, max_tokens=8)
    assert resp.choices[0].message.content == want
    stream = client.chat.completions.create(model="tiny-live", messages=messages, max_tokens=8, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == want
    import openai

    with pytest.raises(openai.BadRequestError, match="base64"):
        client.chat.completions.create(model="tiny-live", max_tokens=4, messages=[{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "/etc/passwd", "format": "wav"}}]}])


def test_history_longer_than_the_context_is_trimmed_with_a_warning(client, model):
    long = "tell me everything about this sound " * 3
    messages = [user("first?", A)]
    for i in range(6):
        messages += [{"role": "assistant", "content": long}, {"role": "user", "content": f"{long} {i}"}]
    r = client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 4})
    assert r.status_code == 200, r.text
    assert any("dropped" in w for w in r.json()["warnings"])


def test_load_benchmark_runs(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "serve_load.py"
    spec = importlib.util.spec_from_file_location("serve_load", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--requests", "3", "--concurrency", "3", "--max-tokens", "2", "--audio-seconds", "0.5", "--json"]) == 0
    rows = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert [r["mode"] for r in rows] == ["queue", "batched"]
    assert rows[0]["max_rows"] == 1 and all(r["p95_s"] >= r["p50_s"] > 0 for r in rows)


def test_serve_config_file_holds_the_defaults():
    from pathlib import Path

    from audioflamingo.config import ConfigError, load_config

    path = Path(__file__).resolve().parent.parent / "configs" / "serve.yaml"
    assert load_config(ServeConfig, path) == ServeConfig()
    assert load_config(ServeConfig, path, ["max_audios=2"]).max_audios == 2
    with pytest.raises(ConfigError, match="max_audio"):
        load_config(ServeConfig, path, ["max_audio=2"])


@pytest.mark.parametrize("fmt,lossless", [("FLAC", True), ("OGG", False), ("MP3", False)])
def test_other_audio_formats(client, model, fmt, lossless):
    clip = (sine(1.0, 440)[0], 16000)
    data = wav_b64(clip, fmt)
    r = client.post("/v1/chat/completions", json={"max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": data, "format": fmt.lower()}}, {"type": "text", "text": "What?"}]}]})
    assert r.status_code == 200, r.text
    if lossless:  # FLAC holds 16-bit samples: the answer is the one for the 16-bit clip
        pcm16 = sf.read(io.BytesIO(base64.b64decode(data)), dtype="float32")
        assert r.json()["choices"][0]["message"]["content"] == expected(model, [AudioMark(0), Round("What?")], [pcm16], 4)[0]


def test_internal_errors_are_json(client, monkeypatch):
    import audioflamingo.serve.app as app_module

    from fastapi.testclient import TestClient

    monkeypatch.setattr(app_module, "fit_dialogue", lambda *a, **k: 1 / 0)
    quiet = TestClient(client.app, raise_server_exceptions=False)  # the test client re-raises by default
    r = quiet.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
