"""The `chat` terminal session (scripted input) and the `serve` command's safe defaults."""

import subprocess
import sys
from pathlib import Path

from audioflamingo.chat import ChatSession
from audioflamingo.cli import build_parser
from audioflamingo.serve.cli import chat_loop
from conftest import sine, tiny_model

ROOT = Path(__file__).resolve().parent.parent


def run_script(session, lines):
    out = []
    feed = iter(lines)

    def read(prompt):
        out.append(prompt)
        try:
            return next(feed)
        except StopIteration:
            raise EOFError from None

    rc = chat_loop(session, read, out.append)
    return rc, "".join(out)


def test_chat_loop_commands(make_wav):
    model = tiny_model(gates=1.5, seed=4)
    session = ChatSession(model, [sine(1.0)], max_new_tokens=6)
    second = make_wav("second.wav", seconds=1.0, rate=8000)  # resampled: the warning is shown
    rc, text = run_script(session, ["What is it?", f"/audio {second}", "/audio /no/such/file.wav", "Compare them.",
                                    "/history", "/reset", "/bogus", "/quit", "never read"])
    assert rc == 0
    assert "audio 1 added" in text and "[error]" in text and "does not exist" in text
    assert "resampled from 8000 Hz" in text
    assert text.count("assistant> ") == 2 + 2  # two answers, then /history shows two rounds
    assert "conversation reset" in text and "unknown command /bogus" in text
    assert session.rounds == [] and len(session.clips) == 2


def test_chat_answers_stream_into_the_terminal():
    model = tiny_model(gates=1.5, seed=4)
    session = ChatSession(model, [sine(1.0)], max_new_tokens=6)
    reference = ChatSession(model, [sine(1.0)], max_new_tokens=6).ask("Hi?")
    _, text = run_script(session, ["Hi?"])  # ends with EOF (Ctrl-D)
    assert f"assistant> {reference}\n" in text


def test_chat_subcommand_end_to_end(make_wav):
    clip = make_wav("a.wav", seconds=1.0)
    proc = subprocess.run([sys.executable, "-m", "audioflamingo", "chat", "--model", "tiny", "--max-new-tokens", "4", str(clip)],
                          input="What is it?\n/quit\n", capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "1 audio(s) loaded" in proc.stdout and "assistant> " in proc.stdout


def test_serve_binds_loopback_by_default():
    args = build_parser().parse_args(["serve", "--model", "tiny"])
    assert args.host is None and args.port is None  # ServeConfig decides: 127.0.0.1:8000
    from audioflamingo.serve import ServeConfig

    assert ServeConfig().host == "127.0.0.1" and ServeConfig().port == 8000
