"""Parity of our HTS-AT tower with the reference in the PyPI package msclap, on the same random weights.

The reference is built exactly as ClapCap builds its audio tower (`AudioEncoder("HTSAT", 768, 1024, …)`,
whose geometry comes from msclap's HTS-AT config: 32 kHz filterbank, fmax 14 kHz, 256² image), its
weights are randomised (including BatchNorm statistics, so a wrong mapping cannot hide), written in the
`clapcap_weights_2023.pth` layout (`clap.` prefix) and loaded into ours through audioflamingo.compat.
"""

import warnings

import pytest
import torch

from audioflamingo.compat.clapcap import load_clapcap_weights
from audioflamingo.model.clapcap_mel import slaney_filterbank
from audioflamingo.model.htsat import build_htsat_encoder

from _msclap_ref import load_reference

REF, WHY = load_reference()
pytestmark = pytest.mark.skipif(REF is None, reason=f"msclap reference unavailable: {WHY}")

RATE, SECONDS = 44100, 7  # AF1 windows: 7 s at 44.1 kHz = 308700 samples = 965 frames at hop 320


def randomised_reference():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = REF.AudioEncoder("HTSAT", 768, 1024, RATE, 1024, 320, 64, 50, 8000, 527)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "extractor" in name:
                continue  # the STFT kernels and filterbank are fixed by the configuration
            if name.endswith(("norm.weight", "norm1.weight", "norm2.weight", "layer_norm.weight", "bn0.weight")):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.05 * torch.randn_like(p))
        bn = ref.base.htsat.bn0
        bn.running_mean.copy_(-20 + 5 * torch.randn(64))
        bn.running_var.copy_(100 * torch.rand(64) + 50)
    return ref.eval()


@pytest.fixture(scope="module")
def pair():
    ref = randomised_reference()
    ours = build_htsat_encoder().eval()
    checkpoint = {"clap." + k: v for k, v in ref.state_dict().items()}  # as in clapcap_weights_2023.pth
    checkpoint["gpt.transformer.wte.weight"] = torch.zeros(3, 4)  # the caption decoder: ignored
    notes = load_clapcap_weights(ours, checkpoint)
    assert any("conv_real" in n for n in notes)
    return ref, ours


@pytest.fixture(scope="module")
def audio():
    g = torch.Generator().manual_seed(1)
    t = torch.arange(RATE * SECONDS) / RATE
    noise = 0.1 * torch.randn(2, RATE * SECONDS, generator=g)
    tone = 0.3 * torch.sin(2 * torch.pi * torch.tensor([[440.0], [3000.0]]) * t)  # different per row
    return noise + tone  # (2, 308700)


def test_filterbank_equals_librosa():
    import librosa

    ref = librosa.filters.mel(sr=32000, n_fft=1024, n_mels=64, fmin=50, fmax=14000).T  # (513, 64)
    ours = slaney_filterbank(32000, 1024, 64, 50, 14000)
    assert ours.shape == (513, 64)
    torch.testing.assert_close(ours, torch.from_numpy(ref), atol=1e-7, rtol=1e-5)


def test_logmel_matches_reference(pair, audio):
    ref, ours = pair
    with torch.no_grad():
        spec = ref.base.htsat.spectrogram_extractor(audio)  # (B, 1, F, K)
        ref_mel = ref.base.htsat.logmel_extractor(spec)[:, 0]  # (B, F, M)
        our_mel = ours.mel(audio)  # (B, F, M)
    assert our_mel.shape == ref_mel.shape == (2, 965, 64)
    torch.testing.assert_close(our_mel, ref_mel, atol=2e-3, rtol=1e-4)  # dB; conv-DFT vs FFT rounding


def test_latent_and_projection_match_reference(pair, audio):
    ref, ours = pair
    with torch.no_grad():
        ref_latent = ref.base(audio)["embedding"]  # (B, 768)
        ref_proj = ref.projection(ref_latent)  # (B, 1024): AudioEncoder.forward, what AF1 takes as clapcap.clap(audio)[0]
        our_latent = ours.latent(audio)  # (B, 768)
        our_out = ours(audio)  # (B, 1, 1024)
    assert our_out.shape == (2, 1, 1024)
    assert ref_latent.std() > 0.05 and (ref_proj[0] - ref_proj[1]).abs().max() > 0.1  # not a degenerate case
    torch.testing.assert_close(our_latent, ref_latent, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(our_out[:, 0], ref_proj, atol=1e-4, rtol=1e-4)


def test_reference_state_dict_maps_onto_ours_completely(pair):
    ref, ours = pair
    ref_keys = set(ref.state_dict())
    ours_keys = set(ours.state_dict())
    # every tensor of ours comes from the reference, and what the reference has beyond is listed
    extra = {k for k in ref_keys if not k.startswith("projection.")}
    extra = {k[len("base.htsat."):] for k in extra} - ours_keys
    extra = {k.split(".")[-1] if "layers" in k else k for k in extra}
    assert extra == {
        "spectrogram_extractor.stft.conv_real.weight", "spectrogram_extractor.stft.conv_imag.weight",
        "logmel_extractor.melW", "relative_position_index", "attn_mask",
        "tscam_conv.weight", "tscam_conv.bias", "head.weight", "head.bias",
    }
