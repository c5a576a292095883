"""The `audioflamingo` console script: subcommands that only parse arguments and call the library.

Each subsystem registers its own subcommands with an `add_commands(subparsers)` function in its own
module (listed in COMMAND_MODULES), so this file stays a table of contents.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [
    "audioflamingo.commands.core",  # ask, model-info
    "audioflamingo.eval.cli",  # score, eval
    "audioflamingo.compat.cli",  # convert af1, af1-chat
    "audioflamingo.train.cli",  # train
    "audioflamingo.data.cli",  # data build-corpus, check, stats, convert, export-shards
    "audioflamingo.serve.cli",  # chat, serve
    "audioflamingo.retrieval.cli",  # index build/search/info/icl
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audioflamingo", description="Audio Flamingo: audio in, text out.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "accepts_overrides", False):  # `train` takes any --dotted.key=value config override
        args.overrides = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # one line for the user, the traceback with AUDIOFLAMINGO_DEBUG=1
        import os

        if os.environ.get("AUDIOFLAMINGO_DEBUG"):
            raise
        print(f"audioflamingo {args.command}: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
