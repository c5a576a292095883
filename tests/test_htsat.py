"""HTS-AT tower invariants and hand-computed values (no reference package needed)."""

import math

import pytest
import torch

from audioflamingo.compat.clapcap import (
    CheckpointError,
    load_clapcap_weights,
    read_checkpoint,
    stft_kernels,
    to_clapcap_layout,
)
from audioflamingo.config import ConfigError, EncoderConfig, MelConfig
from audioflamingo.model.clapcap_mel import slaney_filterbank
from audioflamingo.model.encoder import hz_to_mel, mel_to_hz
from audioflamingo.model.htsat import (
    HTSATConfig,
    build_htsat_encoder,
    from_windows,
    relative_position_index,
    shifted_window_mask,
    to_windows,
)

TINY = dict(n_fft=256, hop_length=64, n_mels=16, fmax=7000.0, spec_size=32, patch_size=2, embed_dim=8,
            depths=[2, 2], num_heads=[1, 2], window_size=4, out_dim=12)


def tiny(**kw):
    torch.manual_seed(0)
    return build_htsat_encoder({**TINY, **kw}).eval()


def test_reference_parameter_count_by_formula():
    m = build_htsat_encoder()
    cfg = m.cfg
    total = 2 * cfg.n_mels + (cfg.patch_size**2 * cfg.embed_dim + cfg.embed_dim) + 2 * cfg.embed_dim  # bn0, patch embed
    for i, (depth, heads) in enumerate(zip(cfg.depths, cfg.num_heads)):
        C = cfg.embed_dim * 2**i
        block = 12 * C * C + 13 * C + (2 * cfg.window_size - 1) ** 2 * heads  # 2 LN, qkv, proj, MLP 4x, bias table
        total += depth * block
        if i < len(cfg.depths) - 1:
            total += 8 * C + 8 * C * C  # patch merging: LN(4C), Linear(4C -> 2C) without bias
    total += 2 * 768  # final norm
    tower = sum(p.numel() for n, p in m.named_parameters() if not n.startswith("projection."))
    head = sum(p.numel() for p in m.projection.parameters())
    assert tower == total == 27_534_488  # HTS-AT tiny (Swin-T geometry) ~ 27.5 M
    assert head == 768 * 1024 + 1024 * 1024 + 2 * 1024


def test_output_shapes_and_latent_only():
    x = torch.randn(3, 4000)
    assert tiny()(x).shape == (3, 1, 12)
    m = tiny(out_dim=0)
    assert m.projection is None and m(x).shape == (3, 1, 16) and m.out_dim == 16


def test_fold_layout_hand_indexed():
    """With exactly max_frames frames (no stretch) row k*M + m, column t of the image is frame k*(T/r) + t, mel m."""
    m = tiny()
    cfg = m.cfg
    T, M, r = cfg.max_frames, cfg.n_mels, cfg.freq_ratio
    ramp = torch.arange(2 * T * M, dtype=torch.float32).view(2, T, M)  # value encodes (b, frame, mel)
    m.mel.forward = lambda x: ramp  # bypass the STFT; bn0 is identity up to 1/sqrt(1 + eps) at init
    img = m.image(torch.zeros(2, 10)) * math.sqrt(1 + m.bn0.eps)
    assert img.shape == (2, 1, cfg.spec_size, cfg.spec_size)
    for b, k, mel, t in [(0, 0, 0, 0), (1, 1, 5, 3), (0, r - 1, M - 1, T // r - 1), (1, 0, 7, 31)]:
        assert img[b, 0, k * M + mel, t].item() == pytest.approx(ramp[b, k * (T // r) + t, mel].item(), rel=1e-6)


def test_stretch_keeps_the_first_and_last_frame():
    m = tiny()
    x = torch.randn(1, 3000)
    mel = m.mel(x)  # (1, F, M) with F = 1 + 3000 // 64 = 47 < 64
    assert mel.shape == (1, 47, 16)
    img = m.image(x) * math.sqrt(1 + m.bn0.eps)
    M, r, W = m.cfg.n_mels, m.cfg.freq_ratio, m.cfg.spec_size
    torch.testing.assert_close(img[0, 0, :M, 0], mel[0, 0], atol=1e-4, rtol=1e-5)  # align_corners=True
    torch.testing.assert_close(img[0, 0, (r - 1) * M :, W - 1], mel[0, -1], atol=1e-4, rtol=1e-5)


def test_window_alone_equals_window_in_batch():
    m = tiny()
    x = torch.randn(4, 4000)
    with torch.no_grad():
        torch.testing.assert_close(m(x)[2:3], m(x[2:3]), atol=1e-5, rtol=1e-5)


def test_training_mode_gives_the_same_features():
    m = tiny()
    with torch.no_grad():
        m.bn0.running_mean.fill_(3.0)
    x = torch.randn(2, 4000)
    with torch.no_grad():
        ref = m.eval()(x)
        out = torch.nn.Sequential(m).train()(x)  # a parent switching to training mode
    assert m.training and not m.bn0.training
    torch.testing.assert_close(out, ref)
    assert m.bn0.running_mean.eq(3.0).all()


def test_too_long_window_is_refused_with_the_limit():
    m = tiny()
    with pytest.raises(ValueError, match="at most 4032 samples"):
        m(torch.randn(1, 64 * 64))


def test_window_partition_round_trip_and_order():
    x = torch.arange(2 * 8 * 8 * 3, dtype=torch.float32).view(2, 8, 8, 3)
    w = to_windows(x, 4)
    assert w.shape == (8, 16, 3)
    torch.testing.assert_close(w[1, 0], x[0, 0, 4])  # window 1 of sample 0 starts at row 0, column 4
    torch.testing.assert_close(w[6, 5], x[1, 5, 1])  # window 6 = sample 1, window row 1 col 0; pos 5 = (1, 1)
    torch.testing.assert_close(from_windows(w, 4, 8), x)


def test_relative_position_index_extremes():
    w = 8
    idx = relative_position_index(w)
    assert idx.shape == (64, 64)
    assert idx[0, 63] == 0 and idx[63, 0] == (2 * w - 1) ** 2 - 1  # most negative / positive offsets
    assert (idx.diagonal() == (w - 1) * (2 * w - 1) + (w - 1)).all()  # zero offset: the table's centre


def test_shifted_window_mask_counts():
    mask = shifted_window_mask(16, 8, 4)  # (nW = 4, 64, 64)
    assert mask.shape == (4, 64, 64)
    assert (mask[0] == 0).all()  # top-left window holds one region
    assert (mask[1] == -100).sum() == 64 * 64 - 2 * 32 * 32  # two regions of 4 x 8 cells
    assert (mask[3] == -100).sum() == 64 * 64 - 4 * 16 * 16  # four regions of 4 x 4 cells
    assert torch.equal(mask, mask.transpose(1, 2))


def test_slaney_mel_scale_hand_values():
    f = torch.tensor([0.0, 500.0, 1000.0, 6400.0], dtype=torch.float64)
    torch.testing.assert_close(hz_to_mel(f), torch.tensor([0.0, 7.5, 15.0, 42.0], dtype=torch.float64))
    torch.testing.assert_close(mel_to_hz(hz_to_mel(f)), f)


def test_filterbank_band_limits_and_unit_area():
    fb = slaney_filterbank(32000, 1024, 64, 50, 14000)  # (513, 64)
    freqs = torch.linspace(0, 16000, 513)
    assert fb.shape == (513, 64) and (fb >= 0).all()
    assert fb[freqs <= 50].sum() == 0 and fb[freqs >= 14000].sum() == 0
    area = fb.sum(0) * (16000 / 512)  # Slaney normalisation: each triangle has area 1 (in Hz)
    torch.testing.assert_close(area[20:], torch.ones(44), atol=0.02, rtol=0)


def test_filterbank_built_for_32k_shifts_bands_of_44k_audio():
    """AF1 quirk: a 1 kHz tone at 44.1 kHz lands in the band nominally centred near 1000·32/44.1 = 726 Hz."""
    m = build_htsat_encoder()
    t = torch.arange(44100) / 44100
    mel = m.mel(torch.sin(2 * torch.pi * 1000 * t)[None])  # (1, F, 64)
    band = mel[0, 10:-10].mean(0).argmax().item()
    centres = mel_to_hz(torch.linspace(hz_to_mel(torch.tensor(50.0)).item(), hz_to_mel(torch.tensor(14000.0)).item(), 66))[1:-1]
    assert band == (centres - 1000 * 32000 / 44100).abs().argmin().item()
    assert band != (centres - 1000).abs().argmin().item()


def test_config_from_encoder_config():
    enc = EncoderConfig(kind="htsat", out_dim=1024, mel=MelConfig(n_fft=1024, hop_length=320, n_mels=64, fmin=50,
                                                                 fmax=14000, filterbank_rate=32000))
    m = build_htsat_encoder(enc)
    assert m.cfg == HTSATConfig()  # these mel settings are the reference defaults
    assert m.cfg.filterbank_rate == 32000 and m.cfg.fmax == 14000 and m.out_dim == 1024
    with pytest.raises(ConfigError, match="tokens_per_window"):
        build_htsat_encoder(EncoderConfig(kind="htsat", tokens_per_window=4))
    with pytest.raises(ConfigError, match="encoder.htsat.windw"):
        build_htsat_encoder({"windw": 8})
    with pytest.raises(ConfigError, match="multiple of n_mels"):
        build_htsat_encoder({"n_mels": 80})


def test_bfloat16_weights_still_work():
    m = tiny()
    x = torch.randn(2, 4000)
    with torch.no_grad():
        ref = m(x)
        low = m.to(torch.bfloat16)(x)
    assert low.dtype == torch.bfloat16
    assert m.mel.filterbank.dtype == torch.float32 and m.state_dict()["mel.filterbank"].dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(low.float(), ref, dim=-1).min() > 0.98


# ----------------------------------------------------------------------------------------------------
# the clapcap checkpoint mapping


def test_clapcap_layout_round_trip_through_a_file(tmp_path):
    a = tiny()
    with torch.no_grad():
        a.bn0.running_mean.normal_()
        a.norm.weight.normal_()
    state = to_clapcap_layout(a.state_dict(), n_fft=256)
    assert "clap.base.htsat.logmel_extractor.melW" in state and "clap.projection.linear1.weight" in state
    state["gpt.lm_head.weight"] = torch.zeros(2, 2)  # the rest of ClapCap is ignored
    path = tmp_path / "clapcap.pth"
    torch.save({"model": state}, path)
    b = tiny()
    torch.manual_seed(1)
    load_clapcap_weights(b, path)
    x = torch.randn(2, 4000)
    with torch.no_grad():
        torch.testing.assert_close(b(x), a(x))
    assert set(read_checkpoint(path)) == set(state)


def test_clap_audio_encoder_prefix_is_accepted():
    a = tiny()
    b = tiny(out_dim=12)
    load_clapcap_weights(b, to_clapcap_layout(a.state_dict(), prefix="audio_encoder.", n_fft=256))
    assert torch.equal(b.patch_embed.proj.weight, a.patch_embed.proj.weight)


def test_missing_unexpected_and_misshaped_tensors_are_all_named():
    state = to_clapcap_layout(tiny().state_dict(), n_fft=256)
    del state["clap.base.htsat.layers.1.blocks.0.attn.qkv.bias"]
    state["clap.base.htsat.layers.0.blocks.0.extra.weight"] = torch.zeros(1)
    state["clap.projection.linear2.weight"] = torch.zeros(12, 13)
    with pytest.raises(CheckpointError) as err:
        load_clapcap_weights(tiny(), state)
    msg = str(err.value)
    assert "1 missing: layers.1.blocks.0.attn.qkv.bias" in msg
    assert "1 unexpected: layers.0.blocks.0.extra.weight" in msg
    assert "projection.linear2.weight: checkpoint (12, 13), model (12, 12)" in msg


def test_wrong_stft_kernels_and_foreign_files_are_refused():
    state = to_clapcap_layout(tiny().state_dict(), n_fft=256)
    real, _ = stft_kernels(256)
    state["clap.base.htsat.spectrogram_extractor.stft.conv_real.weight"] = real.flip(-1)
    with pytest.raises(CheckpointError, match="conv_real"):
        load_clapcap_weights(tiny(), state)
    with pytest.raises(CheckpointError, match="no HTS-AT audio tower"):
        load_clapcap_weights(tiny(), {"gpt.wte.weight": torch.zeros(1)})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp32_and_bf16_match_cpu():
    m = build_htsat_encoder().eval()
    x = torch.randn(2, 308700)
    with torch.no_grad():
        ref = m(x)
        m = m.cuda()
        torch.testing.assert_close(m(x.cuda()).cpu(), ref, atol=1e-3, rtol=1e-3)
        low = m.to(torch.bfloat16)(x.cuda()).float().cpu()
    assert torch.nn.functional.cosine_similarity(low, ref, dim=-1).min() > 0.999
