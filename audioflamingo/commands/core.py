"""Core subcommands: ask, model-info."""

from __future__ import annotations

import argparse
import json
import sys
import warnings


def add_commands(sub) -> None:
    p = sub.add_parser("ask", help="answer a question about one or more audio files")
    p.add_argument("audio", nargs="+", help="audio file(s); several files go into one prompt, in order")
    p.add_argument("--prompt", "-p", required=True, help="the question or instruction")
    p.add_argument("--model", "-m", default=None, help="checkpoint folder or preset (default: the bundled model)")
    p.add_argument("--task", default=None, help="optional task name put in the prompt ('The task is ...')")
    p.add_argument("--json", action="store_true", help="print a JSON object (answer, warnings, audio seconds used)")
    p.add_argument("--preset", default="greedy", choices=["greedy", "beam", "sample", "mbr"],
                   help="decoding preset (mbr: greedy + 16 samples, the answer that agrees most with the samples)")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--num-beams", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--mbr", type=int, default=None, dest="mbr_samples", metavar="N",
                   help="minimum-Bayes-risk decoding over N samples (0 = off; the mbr preset uses 16)")
    p.add_argument("--mbr-rag", default=None, metavar="INDEX",
                   help="with --mbr/--preset mbr: the answers of the nearest items of this index (`index build`) join the "
                        "MBR choice (not the prompt); --mbr-neighbours K (8), --mbr-neighbour-weight W (0.3)")
    p.add_argument("--mbr-neighbours", type=int, default=None)
    p.add_argument("--mbr-neighbour-weight", type=float, default=None)
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    from audioflamingo.retrieval.cli import add_rag_arguments

    add_rag_arguments(p)  # --rag DIR --shots K --shot-order ... --example AUDIO=ANSWER
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("model-info", help="parameter counts of a preset or checkpoint")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--preset", help="preset name (built on the meta device: no memory, no weights)")
    g.add_argument("--model", help="checkpoint folder")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_model_info)


def _generation_kwargs(args) -> dict:
    names = ["max_new_tokens", "temperature", "top_k", "top_p", "num_beams", "seed", "mbr_samples", "mbr_neighbours",
             "mbr_neighbour_weight"]
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def cmd_ask(args) -> int:
    from audioflamingo import load_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        copy = getattr(args, "shot_copy", None)
        model = load_model(args.model, device=args.device, overrides=[f"shot_copy.weight={copy}"] if copy is not None else None)
        sources = args.audio if len(args.audio) > 1 else args.audio[0]
        from audioflamingo.retrieval.cli import rag_kwargs

        icl = rag_kwargs(args)
        answer = model.answer(sources, args.prompt, task=args.task, examples=icl["examples"], rag=icl["rag"], shots=icl["shots"],
                              shot_order=icl["order"], generation=args.preset, mbr_rag=args.mbr_rag, **_generation_kwargs(args))[0]
    notes = list(dict.fromkeys(answer.warnings + [str(w.message) for w in caught if "deprecated" not in str(w.message)]))
    if args.json:
        print(json.dumps({"answer": answer.text, "warnings": notes, "audio_seconds_used": answer.audio_seconds,
                          "examples": answer.examples, "finish_reason": answer.finish_reason, "model": args.model or "default",
                          **({"mbr_neighbours": answer.neighbours} if answer.neighbours else {})}))
    else:
        for n in notes:
            print(f"warning: {n}", file=sys.stderr)
        print(answer.text)
    return 0


def cmd_model_info(args) -> int:
    from audioflamingo.config import load_model_config
    from audioflamingo.model.loading import build_model, load_model

    if args.preset:
        model = build_model(load_model_config(args.preset), meta=True, seed=None)
    else:
        model = load_model(args.model)
    counts = model.count_parameters()
    if args.json:
        print(json.dumps(counts))
    else:
        for k, v in counts.items():
            print(f"{k:10s} {v:>15,d}  ({v / 1e9:.3f} B)")
    return 0
