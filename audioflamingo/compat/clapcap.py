"""Microsoft CLAP checkpoints -> our HTS-AT tower (`audioflamingo.model.htsat.HTSATEncoder`).

`clapcap_weights_2023.pth` holds `{"model": state_dict}` of msclap's `ClapCaptionModel`, whose audio
tower is `clap` (= `CLAP.audio_encoder`: `base.htsat.*` Swin tower, `projection.*` head); AF1 takes
`clapcap.clap(audio)[0]`, the projected 1024-d vector. The CLAP checkpoints (`CLAP_weights_2023.pth`)
hold the same tower under `audio_encoder.`. The mapping, as data:

    <prefix>base.htsat.<name>                  -> <name>                (Swin tower, bn0)
    <prefix>base.htsat.logmel_extractor.melW   -> mel.filterbank        (513 × 64, used verbatim)
    <prefix>projection.<name>                  -> projection.<name>
    dropped, checked: base.htsat.spectrogram_extractor.stft.conv_{real,imag}.weight (the DFT × Hann
        kernels: we run torch.stft, and refuse a file whose kernels are not that)
    dropped: *.relative_position_index, *.attn_mask (recomputed), base.htsat.tscam_conv.*,
        base.htsat.head.* (AudioSet classifier, unused by AF1), and everything outside the tower
        (gpt.*, clap_project.*, caption_encoder.*, logit_scale)
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch

TOWER_PREFIXES = ("clap.", "audio_encoder.", "module.clap.", "module.audio_encoder.", "")  # tried in order
RENAMED = {"logmel_extractor.melW": "mel.filterbank"}
STFT_KERNELS = ("spectrogram_extractor.stft.conv_real.weight", "spectrogram_extractor.stft.conv_imag.weight")
DROPPED_SUFFIXES = (".relative_position_index", ".attn_mask")
DROPPED_PREFIXES = ("tscam_conv.", "head.")


class CheckpointError(ValueError):
    """A checkpoint does not match the model: the message lists what is missing, unexpected or misshaped."""


def stft_kernels(n_fft: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, 1, n_fft) real and imaginary DFT rows times a periodic Hann window, as torchlibrosa stores them."""
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
    angle = 2 * math.pi * ((k[:, None] * n[None, :]) % n_fft) / n_fft  # (K, n_fft), reduced for accuracy
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)  # (n_fft,)
    real = (torch.cos(angle) * window).float().unsqueeze(1)  # (K, 1, n_fft)
    imag = (-torch.sin(angle) * window).float().unsqueeze(1)  # (K, 1, n_fft)
    return real, imag


def find_tower_prefix(state: dict) -> str:
    for prefix in TOWER_PREFIXES:
        if any(k.startswith(prefix + "base.htsat.") for k in state):
            return prefix
    raise CheckpointError(
        "no HTS-AT audio tower in this checkpoint: expected keys like 'clap.base.htsat.patch_embed.proj.weight' "
        f"(clapcap) or 'audio_encoder.base.htsat.…' (CLAP); first keys are {list(state)[:5]}"
    )


def map_clapcap_state_dict(state: dict, n_fft: int = 1024) -> tuple[dict, list[str]]:
    """Checkpoint state dict -> (our HTSATEncoder state dict, notes on what was dropped or checked)."""
    prefix = find_tower_prefix(state)
    tower, head = prefix + "base.htsat.", prefix + "projection."
    out, notes, dropped = {}, [], 0
    for key, value in state.items():
        if key.startswith(head):
            out["projection." + key[len(head):]] = value
        elif key.startswith(tower):
            name = key[len(tower):]
            if name in STFT_KERNELS:
                expected = stft_kernels(n_fft)[STFT_KERNELS.index(name)]
                if value.shape != expected.shape or not torch.allclose(value.float(), expected, atol=1e-4):
                    raise CheckpointError(f"{key}: not the DFT × Hann({n_fft}) kernel our torch.stft computes")
                notes.append(f"checked and dropped {key} (we compute the STFT with torch.stft)")
            elif name.endswith(DROPPED_SUFFIXES) or name.startswith(DROPPED_PREFIXES):
                dropped += 1
            else:
                out[RENAMED.get(name, name)] = value
    if dropped:
        notes.append(f"dropped {dropped} tensors: position indices / shift masks (recomputed) and the AudioSet classifier")
    return out, notes


def check_state_dict(expected: dict, given: dict, source: str) -> None:
    """Raise CheckpointError listing every missing, unexpected and misshaped tensor (names, shapes)."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(given[k].shape)}, model {tuple(expected[k].shape)}"
        for k in set(expected) & set(given)
        if tuple(given[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or shapes:
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if items:
                parts.append(f"{len(items)} {title}: " + ", ".join(items[:20]) + (" …" if len(items) > 20 else ""))
        raise CheckpointError(f"{source} does not fit the HTS-AT tower: " + "; ".join(parts))


def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> dict:
    """The state dict inside a msclap `.pth` (under "model" when present), loaded on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ClapCap checkpoint {path} does not exist (the file is clapcap_weights_2023.pth)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as e:  # noqa: BLE001 - a pickle with non-tensor objects needs the user's consent
        if trust_pickle:
            raise
        raise CheckpointError(
            f"{path}: cannot be read with weights_only=True ({type(e).__name__}: {e}); if you trust the file, "
            "pass trust_pickle=True (CLI: --trust-pickle)"
        ) from e
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors (or {{'model': …}}), got {type(obj).__name__}")
    return state


def load_clapcap_weights(encoder: torch.nn.Module, source, trust_pickle: bool = False) -> list[str]:
    """Load ClapCap/CLAP audio-tower weights (a path or a state dict) into `encoder`; returns notes."""
    name = str(source) if not isinstance(source, dict) else "state dict"
    state = read_checkpoint(source, trust_pickle) if not isinstance(source, dict) else source
    mapped, notes = map_clapcap_state_dict(state, n_fft=encoder.cfg.n_fft)
    expected = encoder.state_dict()
    check_state_dict(expected, mapped, name)
    ours = expected["mel.filterbank"]
    if not torch.allclose(mapped["mel.filterbank"].float(), ours.float(), atol=1e-5):
        warnings.warn(
            f"{name}: the stored mel filterbank differs from the one encoder.htsat describes "
            f"(max diff {(mapped['mel.filterbank'].float() - ours.float()).abs().max():.2e}); using the stored one",
            stacklevel=2,
        )
    encoder.load_state_dict(mapped, strict=True)
    return notes


def to_clapcap_layout(state: dict, prefix: str = "clap.", n_fft: int = 1024) -> dict:
    """Our HTSATEncoder state dict -> the tower's keys as msclap stores them (tests, and export)."""
    inverse = {v: k for k, v in RENAMED.items()}
    out = {}
    for key, value in state.items():
        if key.startswith("projection."):
            out[prefix + key] = value
        else:
            out[prefix + "base.htsat." + inverse.get(key, key)] = value
    real, imag = stft_kernels(n_fft)
    out[prefix + "base.htsat." + STFT_KERNELS[0]] = real
    out[prefix + "base.htsat." + STFT_KERNELS[1]] = imag
    return out
