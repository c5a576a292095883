"""Training: one loop for every stage (clap, pretrain, sft, chat), resumable and distributed."""

from audioflamingo.train.config import TrainConfig, load_train_config

__all__ = ["TrainConfig", "load_train_config", "train"]


def train(cfg, resume: bool = False) -> dict:
    from audioflamingo.train.loop import train as _train

    return _train(cfg, resume)
