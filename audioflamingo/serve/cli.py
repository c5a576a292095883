"""Subcommands `chat` (an interactive session in the terminal) and `serve` (the HTTP server)."""

from __future__ import annotations

import sys
import warnings

CHAT_HELP = """commands: /audio PATH  add an audio   /reset  forget the conversation (keep the audios)
          /history  show the dialogue   /help   /quit (or Ctrl-D)"""


def add_commands(sub) -> None:
    p = sub.add_parser("chat", help="an interactive multi-turn chat about one or more audio files")
    p.add_argument("audio", nargs="+", help="audio file(s) to talk about")
    p.add_argument("--model", "-m", default=None, help="checkpoint folder or preset (default: the bundled model)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus for sampling")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("serve", help="OpenAI-compatible chat API + web page (FastAPI + uvicorn)")
    p.add_argument("--model", "-m", default=None, help="checkpoint folder or preset (default: the bundled model)")
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000)")
    p.add_argument("--config", default=None, help="YAML file of ServeConfig limits (see docs/serving.md)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a limit, e.g. --set max_audios=2")
    p.add_argument("--no-batching", action="store_true", help="one request at a time (a plain queue)")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=cmd_serve)


def _session(args):
    from audioflamingo import load_model
    from audioflamingo.chat import ChatSession

    model = load_model(args.model, device=args.device)
    gen = {"max_new_tokens": args.max_new_tokens, "seed": args.seed}
    if args.temperature > 0:
        gen.update(do_sample=True, temperature=args.temperature, top_p=args.top_p)
    return ChatSession(model, list(args.audio), **gen)


def chat_loop(session, read=input, write=sys.stdout.write) -> int:
    """The terminal conversation: read a line, stream the answer; slash commands manage the session."""
    shown = 0

    def notes():
        nonlocal shown
        for w in session.warnings[shown:]:
            write(f"[warning] {w}\n")
        shown = len(session.warnings)

    write(f"{len(session.clips)} audio(s) loaded. {CHAT_HELP}\n")
    notes()
    while True:
        try:
            line = read("you> ").strip()
        except EOFError:
            write("\n")
            return 0
        if not line:
            continue
        cmd, _, arg = line.partition(" ")
        if cmd in ("/quit", "/exit", "/q"):
            return 0
        if cmd == "/help":
            write(CHAT_HELP + "\n")
        elif cmd == "/reset":
            session.reset()
            shown = 0
            write("conversation reset (audios kept)\n")
        elif cmd == "/history":
            for user, answer in session.rounds:
                write(f"you> {user}\nassistant> {answer}\n")
        elif cmd == "/audio":
            if not arg:
                write("usage: /audio PATH\n")
                continue
            try:
                index = session.add_audio(arg.strip())
            except Exception as e:  # noqa: BLE001  (a bad file must not end the session)
                write(f"[error] {e}\n")
                continue
            write(f"audio {index} added: {arg.strip()}\n")
        elif cmd.startswith("/"):
            write(f"unknown command {cmd}; {CHAT_HELP}\n")
        else:
            write("assistant> ")
            try:
                session.ask(line, stream=write)
            except ValueError as e:
                write(f"\n[error] {e}\n")
                continue
            except KeyboardInterrupt:  # Ctrl-C stops this answer, not the session
                write("\n[answer interrupted; the question was taken back]\n")
                continue
            write("\n")
        notes()


def cmd_chat(args) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # every change to the input is also in session.warnings, printed once
        session = _session(args)
        return chat_loop(session, input, _write)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def cmd_serve(args) -> int:
    import ipaddress

    import uvicorn

    from audioflamingo import load_model
    from audioflamingo.config import load_config
    from audioflamingo.serve import ServeConfig, create_app

    overrides = list(args.set)
    if args.host:
        overrides.append(f"host={args.host}")
    if args.port:
        overrides.append(f"port={args.port}")
    if args.no_batching:
        overrides.append("max_batch_size=1")
    cfg = load_config(ServeConfig, args.config, overrides)
    try:
        loopback = ipaddress.ip_address(cfg.host).is_loopback
    except ValueError:
        loopback = cfg.host == "localhost"
    if not loopback:
        print(f"warning: binding {cfg.host}: the server is reachable from other machines (no authentication)", file=sys.stderr)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = load_model(args.model, device=args.device)
    if cfg.model_name is None:
        cfg.model_name = str(args.model or "audioflamingo").rstrip("/").split("/")[-1]
    app = create_app(model, cfg)
    print(f"serving {cfg.model_name} on http://{cfg.host}:{cfg.port}/  (API: /v1/chat/completions)", file=sys.stderr)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info")
    return 0
