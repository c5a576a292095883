"""`audioflamingo index ...`: build, extend, inspect and search retrieval indexes; write k-shot manifests.

    audioflamingo index build MANIFEST --out DIR [--model PATH] [--kind flat|ivf|hnsw] [--split train]
    audioflamingo index search DIR AUDIO [AUDIO ...] [--model PATH] [-k 4]
    audioflamingo index info DIR
    audioflamingo index icl MANIFEST --index DIR --out FILE [-k 4 8] [--seed 0] [--fraction 1.0]

Only parsing here; the work is in build.py, neighbours.py and icl.py.
"""

from __future__ import annotations

import json


class LazyModelEmbedder:
    """Loads `audioflamingo.load_model(path)` on first use, so commands that never embed never load it."""

    def __init__(self, path: str | None):
        self.path, self._model = path, None

    @property
    def model(self):
        if self._model is None:
            import audioflamingo

            self._model = audioflamingo.load_model(self.path)
        return self._model

    def embed_audio(self, audios):
        return self.model.embed_audio(audios)

    def embedding_fingerprint(self) -> str:
        return self.model.embedding_fingerprint()


def _embedder(args):
    """The model's embedder, reading a training run's encoder cache first when --encoder-cache is given."""
    embedder = LazyModelEmbedder(args.model)
    if getattr(args, "encoder_cache", None):
        from audioflamingo.retrieval.build import EncoderCacheEmbedder

        return EncoderCacheEmbedder(embedder, args.encoder_cache)
    return embedder


def _index_config(args):
    from audioflamingo.retrieval.index import IndexConfig

    return IndexConfig(
        kind=args.kind, nlist=args.nlist, nprobe=args.nprobe, hnsw_m=args.hnsw_m, ef_search=args.ef_search
    )


def cmd_build(args) -> int:
    from audioflamingo.retrieval.build import build_index

    split = None if args.split == "all" else args.split
    index = build_index(
        args.manifest, args.out, _embedder(args), args.kind, args.batch_size, split,
        _index_config(args), progress=not args.quiet,
    )  # fmt: skip
    print(f"{index!r} written to {args.out}")
    return 0


def cmd_search(args) -> int:
    from audioflamingo.retrieval.index import AudioIndex
    from audioflamingo.retrieval.neighbours import NeighbourConfig, retrieve

    index = AudioIndex.load(args.index)
    index.set_search_params(nprobe=args.nprobe, ef_search=args.ef_search)
    cfg = NeighbourConfig(k=args.k, oversample=args.oversample, order=args.order, max_score=args.max_score)
    picks = retrieve(index, LazyModelEmbedder(args.model), args.audio, cfg)
    out = [{"query": a, "neighbours": [s.to_dict() for s in shots]} for a, shots in zip(args.audio, picks)]
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


def cmd_info(args) -> int:
    from audioflamingo.retrieval.index import AudioIndex

    print(json.dumps(AudioIndex.load(args.index).meta(), indent=2))
    return 0


def cmd_icl(args) -> int:
    from audioflamingo.retrieval.icl import build_icl_manifest
    from audioflamingo.retrieval.index import AudioIndex

    index = AudioIndex.load(args.index)
    stats = build_icl_manifest(
        args.manifest, index, args.out, k=args.k, seed=args.seed, fraction=args.fraction,
        oversample=args.oversample, embedder=_embedder(args), split=args.split,
        progress=not args.quiet,
    )  # fmt: skip
    print(json.dumps(stats))
    return 0


def add_rag_arguments(parser) -> None:
    """The in-context options of `audioflamingo ask` (the lead's command adds them with this one call)."""
    g = parser.add_argument_group("in-context examples")
    g.add_argument("--rag", metavar="DIR", default=None, help="retrieval index built with this model (index build)")
    g.add_argument("--shots", type=int, default=4, help="examples retrieved per query with --rag (default 4)")
    g.add_argument("--shot-order", choices=("nearest_last", "nearest_first", "shuffle"), default="nearest_last",
                   help="order of retrieved examples; default: the nearest right before the query")  # fmt: skip
    g.add_argument("--shot-copy", metavar="WEIGHT", type=float, default=None,
                   help="weight of copying the answer of the example that sounds most like the query (model "
                        "config shot_copy.weight; 0 = the LM alone; default: the model's own setting)")  # fmt: skip
    if "--example" not in parser._option_string_actions:  # `ask` may define it already
        g.add_argument("--example", metavar="AUDIO=ANSWER", action="append", default=[],
                       help="a user-given example, shown before retrieved ones (repeatable)")  # fmt: skip


def rag_kwargs(args) -> dict:
    """Parsed --rag/--shots/--shot-order/--example -> keyword arguments of `icl_prompts` / `model.ask`."""
    from audioflamingo.retrieval.icl import parse_example

    examples = [parse_example(e) for e in args.example]
    return {"rag": args.rag, "shots": args.shots if args.rag else 0, "order": args.shot_order, "examples": examples or None}


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("index", help="retrieval indexes for in-context examples (build, search, info, icl)")
    sub = p.add_subparsers(dest="index_command", metavar="ACTION", required=True)

    b = sub.add_parser("build", help="embed a manifest's audio and store a faiss index (extends DIR if it exists)")
    b.add_argument("manifest", help="JSONL manifest (id, audio, answer, split, ...)")
    b.add_argument("--out", required=True, help="index folder to create or extend")
    b.add_argument("--model", default=None, help="model checkpoint or preset whose CLAP audio tower embeds (default: bundled)")
    b.add_argument("--kind", choices=("flat", "ivf", "hnsw"), default="flat", help="flat = exact (default); ivf/hnsw = approximate")
    b.add_argument("--split", default="train", help="manifest split to index (default train; 'all' = every row)")
    b.add_argument("--batch-size", type=int, default=32)
    b.add_argument("--nlist", type=int, default=None, help="ivf: number of cells (default ~4*sqrt(n))")
    b.add_argument("--nprobe", type=int, default=None, help="ivf: cells searched per query")
    b.add_argument("--hnsw-m", type=int, default=32, help="hnsw: graph degree")
    b.add_argument("--ef-search", type=int, default=128, help="hnsw: search breadth")
    b.add_argument("--encoder-cache", default=None, metavar="FILE",
                   help="an `audioflamingo train` encoder_cache file of this model: clips in it are not encoded again")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_build)

    s = sub.add_parser("search", help="nearest items of query audio, as JSON")
    s.add_argument("index", help="index folder")
    s.add_argument("audio", nargs="+", help="query audio file(s)")
    s.add_argument("--model", default=None, help="the model the index was built with (checked by fingerprint)")
    s.add_argument("-k", type=int, default=4, help="neighbours per query (one per distinct audio file)")
    s.add_argument("--oversample", type=int, default=4, help="search k*oversample hits before de-duplicating files")
    s.add_argument("--order", choices=("nearest_first", "nearest_last", "shuffle"), default="nearest_first")
    s.add_argument("--max-score", type=float, default=None, help="drop hits this similar or more (near-copies)")
    s.add_argument("--nprobe", type=int, default=None, help="ivf: cells searched per query")
    s.add_argument("--ef-search", type=int, default=None, help="hnsw: search breadth")
    s.set_defaults(func=cmd_search)

    i = sub.add_parser("info", help="print an index's meta.json (fingerprint, kind, count, split)")
    i.add_argument("index", help="index folder")
    i.set_defaults(func=cmd_info)

    c = sub.add_parser("icl", help="write the interleaved k-shot manifest for SFT from a train-split index")
    c.add_argument("manifest", help="JSONL manifest whose train rows become k-shot items")
    c.add_argument("--index", required=True, help="index folder built from the same train split")
    c.add_argument("--out", required=True, help="output JSONL")
    c.add_argument("-k", type=int, nargs="+", default=[4], help="shots per item, or several to draw from (AF1: 4 8)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--fraction", type=float, default=1.0, help="share of rows that get a k-shot twin")
    c.add_argument("--oversample", type=int, default=4)
    c.add_argument("--split", default="train")
    c.add_argument("--model", default=None, help="embeds query rows missing from the index (if any)")
    c.add_argument("--encoder-cache", default=None, metavar="FILE",
                   help="an `audioflamingo train` encoder_cache file of this model: clips in it are not encoded again")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=cmd_icl)

