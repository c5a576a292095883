"""`audioflamingo score` and `audioflamingo eval`: parse arguments, call the library, print."""

from __future__ import annotations

import argparse
import json
import sys

from audioflamingo.eval.metrics import TEXT_METRICS


def _score(args: argparse.Namespace) -> int:
    from audioflamingo.eval.score import score_files

    result = score_files(args.metric, args.pred, args.refs)
    if args.per_item:
        with open(args.per_item, "w", encoding="utf-8") as f:
            for i, s in result["per_item"].items():
                f.write(json.dumps({"id": i, "score": s}) + "\n")
    print(json.dumps({"metric": result["metric"], "score": result["score"]}))
    return 0


def _load_predictor(args, cfg):
    """The model (or a baseline wrapping it) that answers the questions."""
    from audioflamingo.eval.baselines import BASELINES

    model_path = args.model or cfg.model
    if args.baseline == "majority":
        return BASELINES["majority"](), model_path
    import audioflamingo

    model = audioflamingo.load_model(model_path, overrides=args.model_set or None)
    if args.baseline:
        return BASELINES[args.baseline](model), model_path
    return model, model_path


def _eval(args: argparse.Namespace) -> int:
    from audioflamingo.eval.report import write_report
    from audioflamingo.eval.runner import evaluate
    from audioflamingo.eval.tasks import load_eval_config

    overrides = list(args.overrides or [])
    if args.limit is not None:
        overrides.append(f"limit={args.limit}")
    cfg = load_eval_config(args.config, overrides)
    predictor, model_path = _load_predictor(args, cfg)
    # a task's `baselines` run beside the model; with --baseline the baseline is the predictor itself
    results = evaluate(cfg, predictor, model_path=model_path, progress=not args.quiet, baselines=not args.baseline)
    out_dir = args.out or cfg.output_dir
    paths = write_report(results, out_dir, plot=args.plot)
    sys.stdout.write((paths["markdown"]).read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser(
        "score",
        help="score any system's outputs against references (prints JSON)",
        description="Corpus-level score of PRED.jsonl ({id, text} rows) against REFS.jsonl ({id, refs: [...]} rows).",
    )
    p.add_argument("--metric", required=True, choices=list(TEXT_METRICS), help="metric name")
    p.add_argument("pred", metavar="PRED.jsonl")
    p.add_argument("refs", metavar="REFS.jsonl")
    p.add_argument("--per-item", metavar="OUT.jsonl", help="also write {id, score} per item")
    p.set_defaults(func=_score)

    p = sub.add_parser(
        "eval",
        help="run an evaluation config (tasks, shots, seeds) and write JSON + markdown reports",
        description="Evaluate a model (or a baseline) on the tasks of configs/eval/<name>.yaml.",
    )
    p.add_argument("-c", "--config", required=True, help="eval config YAML (configs/eval/*.yaml)")
    p.add_argument("--model", help="model checkpoint directory or preset (overrides the config's `model`)")
    p.add_argument("--baseline", choices=["majority", "nn_caption", "clap_zeroshot"],
                   help="evaluate a baseline instead (nn_caption / clap_zeroshot embed with --model)")
    p.add_argument("--model-set", action="append", metavar="KEY=VALUE",
                   help="override the model's config (repeatable), e.g. shot_copy.weight=0 to rank without copying")
    p.add_argument("--out", help="output folder (default: the config's output_dir)")
    p.add_argument("--plot", action="store_true", help="also write shots_vs_score.png")
    p.add_argument("--limit", type=int, help="at most this many items per task")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. batch_size=4 seeds=[0,1,2]")
    p.set_defaults(func=_eval)
