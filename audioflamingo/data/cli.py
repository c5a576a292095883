"""`audioflamingo data ...`: build-corpus, check, stats, convert, export-shards. Parsing only."""

from __future__ import annotations

import argparse


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("data", help="build, check, convert and describe audio corpora (manifests)")
    sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    b = sub.add_parser("build-corpus", help="build a corpus from Debian packages and synthesis")
    b.add_argument("--out", required=True, help="output folder (re-running resumes)")
    b.add_argument("--plan", default="tiny", choices=["tiny", "small", "standard"])
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--rate", type=int, default=16000, help="sample rate of the stored clips (the model's rate)")
    b.add_argument("--cache", default=None, help="where .deb packages are downloaded and unpacked")
    b.add_argument("--workers", type=int, default=2)
    b.add_argument("--package", action="append", default=[], help="an extra Debian package to include")
    b.add_argument("--balance-label-sets", action="store_true",
                   help="move whole groups from train so every closed label set has at least max(2, 10%%) of its groups in val and in test")
    b.add_argument("--continuous-sweeps", action="store_true",
                   help="draw tone sweeps from continuous ranges (the standard plan's 36 parameter combinations leave at most 36 sweeps after deduplication)")
    b.add_argument("--varied-synthesis", action="store_true",
                   help="vary the length and level of coloured noise and the length, loudness and octave of chords (the standard plan keeps one chord "
                        "per instrument, root and quality after deduplication and puts noise in 9 split groups)")
    b.set_defaults(func=_build)

    c = sub.add_parser("check", help="report missing, unreadable, silent, duplicate audio and malformed rows")
    c.add_argument("manifest", nargs="+")
    c.set_defaults(func=_check)

    s = sub.add_parser("stats", help="counts per source/task/split, hours, label distributions, and a PNG chart")
    s.add_argument("manifest", nargs="+")
    s.add_argument("--png", default=None, help="chart path (default: MANIFEST.stats.png)")
    s.add_argument("--markdown", action="store_true", help="print Markdown tables (for docs/corpus.md)")
    s.set_defaults(func=_stats)

    v = sub.add_parser("convert", help="convert a public dataset layout (or AF1's) to a manifest")
    v.add_argument("format", choices=["af1", "clotho", "clotho-aqa", "audiocaps", "esc50", "fsd50k", "nsynth", "musiccaps"])
    v.add_argument("src", help="the dataset's metadata file or root folder (see docs/manifest.md)")
    v.add_argument("--audio-dir", default=None, help="folder of the audio files, when not beside the metadata")
    v.add_argument("--split", default=None, help="split name for rows whose layout has none (train|val|test)")
    v.add_argument("--out", required=True, help="output manifest (.jsonl)")
    v.set_defaults(func=_convert)

    e = sub.add_parser("export-shards", help="write a manifest and its audio as WebDataset tar shards")
    e.add_argument("manifest")
    e.add_argument("--out", required=True, help="output folder for shard-%%06d.tar")
    e.add_argument("--max-items", type=int, default=1000, help="items per shard")
    e.set_defaults(func=_export)


def _build(args: argparse.Namespace) -> int:
    from audioflamingo.data.build import BuildConfig, build_corpus

    cfg = BuildConfig(out=args.out, plan=args.plan, seed=args.seed, rate=args.rate, cache=args.cache,
                      workers=args.workers, packages=args.package, balance_label_sets=args.balance_label_sets,
                      continuous_sweeps=args.continuous_sweeps, varied_synthesis=args.varied_synthesis)
    s = build_corpus(cfg)
    print(f"corpus {args.out}: {s['clips']} clips, {s['hours']} h, items {s['items']}, "
          f"{len(s['dropped_duplicates'])} duplicates and {len(s['dropped_silent'])} silent clips dropped, "
          f"{len(s['errors'])} sources failed to decode (details in {args.out}/corpus.json)")
    if s["cut_clips"]:
        print(f"warning: {len(s['cut_clips'])} long sources were cut to their first {cfg.max_seconds:g} s "
              f"(listed in corpus.json 'cut_clips')")
    return 0


def _check(args: argparse.Namespace) -> int:
    from audioflamingo.data.check import check_manifests

    report = check_manifests(args.manifest)
    print(report.text())
    return 0 if report.ok else 1


def _stats(args: argparse.Namespace) -> int:
    from audioflamingo.data.stats import manifest_stats, plot_stats, stats_markdown, stats_text

    st = manifest_stats(args.manifest)
    print(stats_markdown(st) if args.markdown else stats_text(st))
    png = args.png or (args.manifest[0] + ".stats.png")
    plot_stats(st, png)
    print(f"chart: {png}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from audioflamingo.data.convert import convert

    n = convert(args.format, args.src, args.out, audio_dir=args.audio_dir, split=args.split)
    print(f"wrote {n} rows to {args.out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from audioflamingo.data.shards import export_shards

    paths = export_shards(args.manifest, args.out, max_items=args.max_items)
    print(f"wrote {len(paths)} shard(s) to {args.out}")
    return 0
