"""One config system: dataclasses, YAML presets, dotted overrides.

Every config in the project (model, data, training, evaluation, serving) is a dataclass built with
`from_dict`, which rejects unknown keys with the full dotted path of the offender, so a typo in a
YAML file fails loudly instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

PRESET_DIR = Path(__file__).parent / "presets"


class ConfigError(ValueError):
    """A config file or override is malformed (unknown key, wrong type, missing file)."""


# ----------------------------------------------------------------------------------------------------
# generic machinery


def _resolve_type(tp: Any) -> Any:
    """Strip Optional[...] / X | None down to X."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def from_dict(cls: type[T], data: dict | None, path: str = "") -> T:
    """Build dataclass `cls` from a nested dict; unknown keys raise ConfigError naming the key."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        where = path or cls.__name__
        raise ConfigError(
            f"unknown config key(s) {', '.join(repr(path + k) for k in unknown)} in {where}; "
            f"known keys: {', '.join(sorted(known))}"
        )
    kwargs = {}
    for name, value in data.items():
        tp = _resolve_type(hints[name])
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            value = from_dict(tp, value, f"{path}{name}.")
        elif value is not None and tp in (int, float) and not isinstance(value, bool):
            try:
                value = tp(value)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"config key {path + name!r}: expected {tp.__name__}, got {value!r}") from e
        elif typing.get_origin(tp) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    """Dataclass -> plain nested dict (JSON/YAML serialisable)."""
    out = dataclasses.asdict(cfg)
    return json.loads(json.dumps(out))  # tuples -> lists, so YAML/JSON round trips are exact


def parse_override(text: str) -> tuple[str, Any]:
    """'--a.b.c=3' or 'a.b.c=3' -> ('a.b.c', 3); the value is parsed as YAML (numbers, bools, lists)."""
    text = text.lstrip("-")
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    return key, yaml.safe_load(raw) if raw != "" else ""


def apply_overrides(data: dict, overrides: list[str] | dict | None) -> dict:
    """Set dotted keys in a nested dict (copying what it changes)."""
    if not overrides:
        return data
    items = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides)
    data = json.loads(json.dumps(data))
    for key, value in items:
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r}: {p!r} is not a section")
        node[parts[-1]] = value
    return data


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    base = data.pop("base", None)  # `base: other.yaml` or `base: preset-name` inherits, then overrides
    if base is not None:
        base_path = (path.parent / base) if str(base).endswith((".yaml", ".yml")) else PRESET_DIR / f"{base}.yaml"
        data = _deep_merge(load_yaml(base_path), data)
    return data


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(cls: type[T], source: str | Path | dict | None = None, overrides=None) -> T:
    """Load `cls` from a YAML path, a preset name, or a dict, then apply dotted overrides."""
    if source is None:
        data = {}
    elif isinstance(source, dict):
        data = source
    else:
        p = Path(source)
        if p.suffix in (".yaml", ".yml") or p.is_file():
            data = load_yaml(p)
        elif (PRESET_DIR / f"{source}.yaml").is_file():
            data = load_yaml(PRESET_DIR / f"{source}.yaml")
        else:
            raise ConfigError(f"{source!r} is neither a config file nor a preset; presets: {', '.join(list_presets())}")
    return from_dict(cls, apply_overrides(data, overrides))


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


# ----------------------------------------------------------------------------------------------------
# model configs


@dataclass
class AudioConfig:
    """Front end: how a file becomes windows of samples."""

    sample_rate: int = 16000
    window_seconds: float = 7.0  # AF1: 7 s windows
    hop_seconds: float = 1.75  # AF1: 5.25 s overlap
    max_windows: int = 16  # AF1: 16 windows = 33.25 s
    peak_normalize: bool = False  # AF1 peak-normalises every clip (we never divide by zero)
    int16_roundtrip: bool = False  # AF1 quantised to int16 and back
    rescale_nonnegative: bool = False  # AF1: a clip with no negative sample maps to 2x/max - 1 (silence stays 0)
    pad_to_max_windows: bool = False  # AF1: every audio padded to max_windows; padding windows encoded too
    audio_slots: int = 1  # with pad_to_max_windows: each sample padded to this many audios (AF1 chat: 4)

    @property
    def window_samples(self) -> int:
        return int(round(self.window_seconds * self.sample_rate))

    @property
    def hop_samples(self) -> int:
        return int(round(self.hop_seconds * self.sample_rate))

    @property
    def max_seconds(self) -> float:
        return self.window_seconds + (self.max_windows - 1) * self.hop_seconds


@dataclass
class MelConfig:
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float | None = None  # None = Nyquist
    filterbank_rate: int | None = None  # AF1/ClapCap builds its filterbank for 32 kHz: set it here


@dataclass
class PitchConfig:
    """Pitch-class features beside the mel front end (off by default). A 25 ms mel STFT has 40 Hz bins, wider
    than a semitone below ~700 Hz, so chord quality and key are nearly invisible to it; this branch takes a long
    STFT onto a semitone grid, folds it to a chroma per frame and adds the chroma with its transposition-invariant
    pair and triple correlations (major and minor differ in the triples, not the pairs) to the frame features
    through a zero-initialised projection: with fresh weights the encoder computes exactly what it did without."""

    enabled: bool = False
    n_fft: int = 4096  # 256 ms at 16 kHz: 3.9 Hz bins, about a semitone at 65 Hz (C2)
    midi_low: int = 36  # lowest semitone of the grid (C2)
    midi_high: int = 96  # highest (C7)


@dataclass
class RhythmConfig:
    """Onset-periodicity summary of a window (model/encoder.py RhythmSummary, off by default): the normalised
    autocorrelation of a spectral-flux onset envelope (n_fft, hop) read at `bins` tempi spaced evenly in log
    between bpm_low and bpm_high. A linear probe on it (with the pitch summary; scripts/probe_label_sets.py --summary) tells the corpus' slow /
    moderate / fast pieces apart at 0.93 on val + test clips."""

    enabled: bool = False
    n_fft: int = 512
    hop: int = 160  # 10 ms at 16 kHz
    bpm_low: float = 40.0
    bpm_high: float = 240.0
    bins: int = 48


@dataclass
class EncoderConfig:
    """CLAP-style audio tower: log-mel -> conv stem -> Transformer -> `tokens_per_window` vectors."""

    kind: str = "conv-transformer"  # or "htsat" (the ClapCap tower, AF1 compatibility)
    width: int = 384
    layers: int = 4
    heads: int = 6
    tokens_per_window: int = 1  # AF1 = 1 vector per window; AF2 used 64 per 10 s window
    out_dim: int = 1024  # width of each window vector (AF1: 1024)
    mel: MelConfig = field(default_factory=MelConfig)
    htsat: dict = field(default_factory=dict)  # HTS-AT geometry when kind == "htsat"
    pitch: PitchConfig = field(default_factory=PitchConfig)  # pitch-class branch (conv-transformer only)


@dataclass
class LevelConfig:
    """Length, level and onset-count summary of a window (model/encoder.py LevelSummary, off by default): the
    seconds of the window before its zero padding, its RMS level in dBFS over those seconds, each as a soft
    one-hot (triangular bins, so that a linear map reads values between the bins), and the number of onsets (peaks
    of a spectral-flux envelope above a fraction of its largest peak, `peak_fractions`), one-hot up to
    `max_onsets`. Long captions state the duration and a level word, and note captions a count; the encoder's
    25 ms tokens carry none of them explicitly."""

    enabled: bool = False
    max_seconds: float = 7.0  # upper end of the duration bins (a window's length in AF1 / af-mini)
    seconds_step: float = 0.25
    db_low: float = -70.0
    db_high: float = 0.0
    db_step: float = 2.5
    n_fft: int = 512
    hop: int = 160  # 10 ms at 16 kHz
    min_gap: float = 0.3  # seconds: two onset peaks closer than this count once (0.15 counted vibrato: 0.57 vs 0.74 exact note counts on val)
    peak_fractions: tuple[float, ...] = (0.1, 0.25, 0.5)
    max_onsets: int = 15  # counts above it land in its bin
    # Clip-level values (`transform.clip_in`, model/flamingo.py clip_values): the clip's duration, (windows - 1) x hop
    # + its last window's length, as two one-hots that match how captions write it (whole seconds 0..clip_max_seconds,
    # tenths 0..9), and its onset counts per fraction, each onset counted once although the windows overlap: window
    # w counts [clip_margin, hop + clip_margin) of itself, the first window also [0, clip_margin), the last one from
    # clip_margin on (a window that starts inside a sound sees a rise at its start, which is not an onset; nor is the
    # rise where a window or clip is cut inside a sound: with `clip` no onset is sought in its last clip_margin). Per
    # window it needs 2 + 3 x len(peak_fractions) raw values, which ride in the summary rows. A clip of several
    # windows otherwise leaves the LM to add window lengths and de-duplicate onsets of the overlaps itself.
    clip: bool = False
    clip_max_seconds: int = 33  # AF1's 16 windows: 33.25 s
    clip_margin: float = 0.1  # seconds
    # with `clip`, an onset also needs a rise from the frame before (a flat stretch of flux, as a steady tone gives, is
    # not a row of peaks) and at least this flux (val clips' largest peaks: 20-240; a steady tone's float32 noise: ~1)
    clip_min_flux: float = 3.0

    def bins(self) -> tuple[int, int, int]:
        """(duration bins, level bins, onset-count values)."""
        return (round(self.max_seconds / self.seconds_step) + 1, round((self.db_high - self.db_low) / self.db_step) + 1,
                len(self.peak_fractions) * (self.max_onsets + 1))

    def raw_dim(self) -> int:
        """Raw per-window values for the clip-level summary (0 without `clip`): length in whole seconds and its
        fraction (two values, so that half precision keeps the tenths), then per fraction the onsets before
        clip_margin, those in [clip_margin, hop + clip_margin), and all of them."""
        return (2 + 3 * len(self.peak_fractions)) * self.clip

    def clip_dim(self) -> int:
        """Clip-level values (0 without `clip`): whole seconds, tenths, onset counts per fraction (one-hots)."""
        return (self.clip_max_seconds + 1 + 10 + len(self.peak_fractions) * (self.max_onsets + 1)) * self.clip


@dataclass
class TransformConfig:
    """Representation transformation layers: self-attention over the windows of an audio."""

    layers: int = 3
    heads: int = 8
    ffn: int = 2048
    max_positions: int = 128  # AF1: sinusoidal positions over 128 slots
    dropout: float = 0.1
    scale_input: bool = True  # AF1 multiplies the input by sqrt(width)
    positions: str = "sinusoids"  # "interleaved": AF1's table (sin on even, cos on odd channels)
    input_norm: bool = False  # AF1: LayerNorm of the input before the first layer
    layer_norm_eps: float = 1e-5  # AF1: 1e-6
    mask_padding: bool = True  # AF1 attends to the padding windows too (set False only to reproduce AF1)
    # Parameter-free summaries of each window (model/encoder.py WindowSummary): `pitch`, 146 pitch-class values
    # (PitchSummary), and `rhythm`, an onset-periodicity profile (RhythmSummary). They ride along with the encoder's
    # tokens and are added to the window's tokens after these layers through LayerNorm + a zero-initialised linear
    # map (`transform.summary_in`, trained with the transform group, i.e. by the LM loss, unlike `encoder.pitch`,
    # which only the CLAP stage trains). Zero init: switched on over a trained model, nothing changes until it
    # trains. Both off by default.
    pitch: PitchConfig = field(default_factory=PitchConfig)
    rhythm: RhythmConfig = field(default_factory=RhythmConfig)
    level: LevelConfig = field(default_factory=LevelConfig)  # duration, RMS level and onset count of each window
    # The audio's CLAP embedding (the L2-normalised mean of its tokens, what retrieval and the nearest-neighbour
    # caption baseline compare) through LayerNorm + a zero-initialised linear map (`transform.embedding_in`),
    # added to every token of the audio after these layers: the clip's global identity, directly.
    embedding_input: bool = False


@dataclass
class XAttnConfig:
    """Gated cross-attention dense blocks inserted before every `every`-th LM decoder layer."""

    every: int = 1
    heads: int = 8
    head_dim: int = 64
    ffn_mult: int = 4
    bias: bool = False
    text_before_audio_sees_first: bool = False  # AF1: text before the first <audio> attends to audio 0


@dataclass
class LMConfig:
    """Any Hugging Face causal LM: a local directory (`path`) or a config built from scratch (`hf_config`)."""

    path: str | None = None  # a local HF model directory (no hub access is ever attempted)
    hf_config: dict = field(default_factory=dict)  # e.g. {"model_type": "gpt2", "n_embd": 64, ...}
    tokenizer: str = "byte"  # "byte" (built in), or a local tokenizer directory
    max_length: int = 512


@dataclass
class ShotCopyConfig:
    """Copy from in-context examples (audioflamingo/model/shot_copy.py): with examples in the prompt, the answer's
    probability is (1 - weight) * the LM's + weight * the similarity-weighted share of examples with that answer."""

    weight: float = 0.0  # λ in [0, 1); 0 = off (the plain LM, as AF1)
    temperature: float = 0.05  # τ on the cosine similarity of CLAP audio embeddings (query vs each example)


@dataclass
class ModelConfig:
    name: str = "custom"
    audio: AudioConfig = field(default_factory=AudioConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    transform: TransformConfig = field(default_factory=TransformConfig)
    xattn: XAttnConfig = field(default_factory=XAttnConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    prompt_style: str = "default"  # "af1": AF1's inference strings (audioflamingo.compat.af1_prompts)
    shot_copy: ShotCopyConfig = field(default_factory=ShotCopyConfig)


def load_model_config(source: str | Path | dict, overrides=None) -> ModelConfig:
    return load_config(ModelConfig, source, overrides)
