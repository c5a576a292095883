"""Build, save and load models. A checkpoint folder holds everything needed to load it:

    config.json         {"format": "audioflamingo", "version": 1, "model": <ModelConfig, LM config inlined>}
    model.safetensors   all weights (tied tensors stored once)
    tokenizer/          the tokenizer files
    clap_text_head.safetensors   optional: the CLAP text projection (model/clap_text.py), for embed_text
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from audioflamingo.config import ModelConfig, from_dict, list_presets, load_model_config, to_dict
from audioflamingo.model.clap_text import load_text_head
from audioflamingo.model.encoder import clip_dim, summary_settings
from audioflamingo.model.flamingo import AudioFlamingo
from audioflamingo.text import MEDIA_TOKENS, load_tokenizer

FORMAT = "audioflamingo"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "af-mini"


class CheckpointError(RuntimeError):
    """A checkpoint folder is missing, corrupt, or does not match the model its config describes."""


def build_lm(cfg: ModelConfig, meta: bool = False):
    from transformers import AutoConfig, AutoModelForCausalLM

    lm = cfg.lm
    if lm.path:
        if not Path(lm.path).is_dir():
            raise CheckpointError(f"lm.path {lm.path}: not a local directory (models are never downloaded)")
        if meta:
            hf = AutoConfig.from_pretrained(lm.path, local_files_only=True)
            with torch.device("meta"):
                return AutoModelForCausalLM.from_config(hf)
        return AutoModelForCausalLM.from_pretrained(lm.path, local_files_only=True, dtype=torch.float32)
    conf = dict(lm.hf_config)
    if "model_type" not in conf:
        raise CheckpointError("lm.hf_config needs a model_type (e.g. gpt2, opt, llama, qwen2) when lm.path is not set")
    hf = AutoConfig.for_model(conf.pop("model_type"), **conf)
    if meta:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(hf)
    return AutoModelForCausalLM.from_config(hf)


def build_model(cfg: ModelConfig, tokenizer=None, meta: bool = False, seed: int | None = 0) -> AudioFlamingo:
    """A fresh model from a config (random new parts; the LM pretrained if `lm.path` is set)."""
    if seed is not None:
        torch.manual_seed(seed)
    if tokenizer is None and cfg.lm.tokenizer:
        tokenizer = load_tokenizer(cfg.lm.tokenizer)
    elif tokenizer is None and cfg.lm.path and not meta:
        tokenizer = load_tokenizer(cfg.lm.path)
    lm = build_lm(cfg, meta)
    vocab = None if tokenizer is not None else lm.get_input_embeddings().weight.shape[0] + len(MEDIA_TOKENS)
    if meta:
        with torch.device("meta"):
            return AudioFlamingo(cfg, lm, tokenizer, vocab)
    return AudioFlamingo(cfg, lm, tokenizer, vocab)


def save_pretrained(model: AudioFlamingo, path: str | Path) -> Path:
    """Write config.json, model.safetensors and tokenizer/ into `path` (created)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = to_dict(model.config)
    cfg["lm"]["path"] = None
    cfg["lm"]["hf_config"] = {k: v for k, v in model.lm.config.to_dict().items() if not k.startswith("_")}
    cfg["lm"]["hf_config"]["model_type"] = model.lm.config.model_type
    cfg["lm"]["tokenizer"] = "tokenizer"
    (path / "config.json").write_text(json.dumps({"format": FORMAT, "version": 1, "model": cfg}, indent=2))
    seen, state = set(), {}
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), t.shape) if t.numel() else (name, t.shape)
        if key in seen:
            continue  # tied weights (e.g. lm_head = embeddings) are stored once
        seen.add(key)
        state[name] = t.detach().contiguous().cpu()
    tmp = path / "model.safetensors.tmp"
    save_file(state, str(tmp), metadata={"format": FORMAT})
    tmp.replace(path / "model.safetensors")
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(str(path / "tokenizer"))
    if model.clap_text is not None:
        model.clap_text.save(path)
    return path


def read_checkpoint_config(path: Path) -> ModelConfig:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{path}: no config.json (is this an audioflamingo checkpoint folder?)")
    try:
        meta = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_file}: not valid JSON ({e})") from e
    if meta.get("format") != FORMAT or "model" not in meta:
        raise CheckpointError(f"{cfg_file}: not an audioflamingo config (format={meta.get('format')!r})")
    cfg = from_dict(ModelConfig, meta["model"])
    if cfg.lm.tokenizer and not Path(cfg.lm.tokenizer).is_absolute() and cfg.lm.tokenizer != "byte":
        cfg.lm.tokenizer = str(path / cfg.lm.tokenizer)
    return cfg


def added_modules(before: ModelConfig, after: ModelConfig) -> tuple[str, ...]:
    """Parameter-name prefixes of the zero-initialised branches that `after` switches on and `before` lacks: a
    checkpoint of `before` loads into a model of `after` with those parameters left at their (no-op) init."""
    prefixes = []
    after_summaries = summary_settings(after.transform)
    changed = after_summaries != summary_settings(before.transform)
    if after_summaries and changed:  # other summaries: a projection of another shape,
        prefixes.append("transform.summary_in.")  # which load_state takes over only if it never trained (all zero)
    if clip_dim(after.transform) and changed:
        prefixes.append("transform.clip_in.")  # a new or reshaped clip-level projection: the same rule
    if after.transform.embedding_input and not before.transform.embedding_input:
        prefixes.append("transform.embedding_in.")
    if after.encoder.pitch.enabled and not before.encoder.pitch.enabled:
        prefixes += ["encoder.pitch_norm.", "encoder.pitch_proj."]
    return tuple(prefixes)


def load_state(model: AudioFlamingo, weights: Path, fresh: tuple[str, ...] = ()) -> None:
    """Load safetensors into `model`, failing with the exact keys and shapes that do not match. Parameters
    under the `fresh` prefixes may be missing (branches added by overrides): they keep their initialisation."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights file missing")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights}: cannot read weights, the file is corrupt or truncated ({e})") from e
    own = model.state_dict()
    ptr_names: dict = {}
    for name, t in own.items():
        ptr_names.setdefault((t.data_ptr(), t.shape), []).append(name)
    aliases = {n for names in ptr_names.values() for n in names[1:]}  # tied copies, stored once
    for prefix in fresh:  # a zero-initialised branch of another shape that never trained (its projection is all
        # zero, e.g. in the clap stage's output) is replaced by the new one; a trained one must match (below)
        keys = [k for k in state if k.startswith(prefix)]
        reshaped = any(k in own and state[k].shape != own[k].shape for k in keys)
        projection = [k for k in keys if k.endswith((".1.weight", ".1.bias"))]  # the Linear after the LayerNorm
        if reshaped and projection and all(not state[k].any() for k in projection):
            warnings.warn(f"{weights}: {prefix.rstrip('.')} of another shape was never trained: it starts again from zero", stacklevel=3)
            state = {k: v for k, v in state.items() if not k.startswith(prefix)}
    missing = sorted(k for k in own if k not in state and k not in aliases)
    added = [k for k in missing if k.startswith(fresh)] if fresh else []
    if added:
        warnings.warn(f"{weights}: {len(added)} parameters of branches switched on by overrides start from their "
                      f"zero initialisation ({', '.join(sorted({k.rsplit('.', 2)[0] for k in added}))})", stacklevel=3)
        missing = [k for k in missing if k not in added]
    unexpected = sorted(k for k in state if k not in own)
    shapes = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in state if k in own and state[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        lines = [f"{weights} does not match the model described by its config.json:"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if items:
                lines.append(f"  {title} ({len(items)}): " + ", ".join(items[:10]) + (" ..." if len(items) > 10 else ""))
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state, strict=False)


def load_model(path_or_preset=None, *, device=None, dtype=None, overrides=None, **kwargs) -> AudioFlamingo:
    """None -> the bundled default model; a preset name -> a fresh (random) model; a folder -> a checkpoint.

    AF1 official files: load_model("af1", checkpoint=..., clapcap=..., lm=...).
    """
    if kwargs:
        if path_or_preset == "af1":
            from audioflamingo.compat.af1 import load_af1  # noqa: PLC0415

            return load_af1(device=device, dtype=dtype, overrides=overrides, **kwargs)
        raise TypeError(f"unexpected arguments {sorted(kwargs)}")
    if path_or_preset is None:
        if (DEFAULT_MODEL_DIR / "config.json").is_file():
            path_or_preset = DEFAULT_MODEL_DIR
        else:
            warnings.warn("no bundled default model found: using the random 'tiny' preset", stacklevel=2)
            path_or_preset = "tiny"
    p = Path(path_or_preset)
    if p.is_dir():
        saved = read_checkpoint_config(p)
        cfg = load_model_config(to_dict(saved), overrides) if overrides else saved
        model = build_model(cfg, seed=None)
        load_state(model, p / "model.safetensors", fresh=added_modules(saved, cfg))
        try:
            model.clap_text = load_text_head(p)  # None without the file; MiniLM itself loads on the first embed_text
        except ValueError as e:
            raise CheckpointError(str(e)) from e
    elif str(path_or_preset) in list_presets() or str(path_or_preset).endswith((".yaml", ".yml")):
        model = build_model(load_model_config(str(path_or_preset), overrides))
    else:
        raise CheckpointError(f"{path_or_preset!r}: not a checkpoint folder, a config file, or a preset ({', '.join(list_presets())})")
    model.source = str(path_or_preset)
    model.eval()
    if dtype is not None:
        model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    if device is not None:
        model.to(device)
    return model
