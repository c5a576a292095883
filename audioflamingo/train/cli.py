"""`audioflamingo train -c CONFIG [--resume] [--a.b=c ...]`: parse, then call `train(cfg)`."""

from __future__ import annotations


def add_commands(sub) -> None:
    p = sub.add_parser("train", help="train one stage (clap, pretrain, sft, chat) from a YAML config",
                       description="Runs alone or under `torchrun --nproc_per_node N` (DDP; FSDP with "
                                   "--distributed.strategy=fsdp). Any config key can be overridden: --optim.lr=3e-4.")
    p.add_argument("-c", "--config", required=True, help="training config YAML (see configs/train/)")
    p.add_argument("--resume", action="store_true", help="continue exactly from the newest checkpoint in out_dir")
    p.set_defaults(func=cmd_train, accepts_overrides=True)


def cmd_train(args) -> int:
    from audioflamingo.train import load_train_config, train

    cfg = load_train_config(args.config, args.overrides)
    result = train(cfg, resume=args.resume)
    if result.get("model_dir"):
        print(f"model: {result['model_dir']}")
    return 0
