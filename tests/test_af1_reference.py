"""The executable statement of AF1's transformation layers and xattn block behaves as the release did."""

import torch

from audioflamingo.compat.af1_keys import AF1Geometry, random_official_state, split_official_state_dict

from _af1_reference import af1_text_to_window_mask, af1_transform, af1_xattn_block

G = AF1Geometry(layers=2, d_model=16, ffn=32, vocab=40, max_positions=30, audio_dim=8, xattn_heads=2,
                xattn_dim_head=4, transform_layers=2, transform_ffn=12, transform_positions=8)
PER_AUDIO = 4  # windows per audio at this tiny size (AF1: 16)


def parts():
    p = split_official_state_dict(random_official_state(G, seed=3))
    table = torch.zeros(1, 8, 8)  # a real sinusoidal table: positions must matter
    pos = torch.arange(8.0)[:, None] / 10000 ** (2 * (torch.arange(8) // 2) / 8)[None, :]
    table[0, :, 0::2], table[0, :, 1::2] = torch.sin(pos[:, 0::2]), torch.cos(pos[:, 1::2])
    p.transform["position_enc.pos_table"] = table
    return p


def test_window_visibility_hand_values():
    audio = torch.tensor([[0, 1, 0, 0, 1, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    m = af1_text_to_window_mask(audio, n_windows=8, per_audio=PER_AUDIO)
    assert m[0, 0].tolist() == [True] * 4 + [False] * 4  # before the first <audio>: audio 0 (an AF1 quirk)
    assert m[0, 3].tolist() == [True] * 4 + [False] * 4
    assert m[0, 4].tolist() == [True] * 8  # from the second <audio> on: audios 0 and 1
    assert m[1].all(dim=0).tolist() == [True] * 4 + [False] * 4


def test_zero_gates_leave_text_unchanged():
    w = dict(parts().xattn[0])
    w["attn_gate"], w["ff_gate"] = torch.zeros(1), torch.zeros(1)
    x = torch.randn(1, 5, 16)
    media = torch.randn(1, 8, 8)
    out = af1_xattn_block(w, x, media, torch.ones(1, 8, dtype=torch.bool), torch.tensor([[1, 0, 0, 0, 0]]).bool(),
                          heads=2, per_audio=PER_AUDIO)
    torch.testing.assert_close(out, x)


def test_text_never_sees_a_later_audio_nor_padded_windows():
    w = dict(parts().xattn[1])
    w["attn_gate"] = torch.ones(1)  # open the gate: a strong signal
    x = torch.randn(1, 6, 16)
    audio = torch.tensor([[0, 1, 0, 0, 1, 0]]).bool()
    mask = torch.tensor([[1, 1, 0, 0, 1, 0, 0, 0]]).bool()  # audio 0: 2 real windows, audio 1: 1
    media = torch.randn(1, 8, 8)
    base = af1_xattn_block(w, x, media, mask, audio, heads=2, per_audio=PER_AUDIO)
    later = media.clone()
    later[:, 4:] += 5.0  # change audio 1 (and padding)
    out = af1_xattn_block(w, x, later, mask, audio, heads=2, per_audio=PER_AUDIO)
    torch.testing.assert_close(out[:, :4], base[:, :4])  # tokens before the second <audio>
    assert (out[:, 4:] - base[:, 4:]).abs().max() > 1e-3
    padded = media.clone()
    padded[:, [2, 3, 5, 6, 7]] = 100.0
    torch.testing.assert_close(af1_xattn_block(w, x, padded, mask, audio, heads=2, per_audio=PER_AUDIO), base)


def test_af1_transformation_layers_attend_to_padding_slots():
    """AF1 has no padding mask here: the padding windows change the real windows' outputs."""
    w = parts().transform
    x = torch.randn(1, 8, 8)
    y = x.clone()
    y[:, 3:] = torch.randn(1, 5, 8)  # slots 3.. are padding
    real = torch.tensor([[1, 1, 1, 0, 0, 0, 0, 0]]).bool()
    assert (af1_transform(w, x, heads=2)[:, :3] - af1_transform(w, y, heads=2)[:, :3]).abs().max() > 1e-3
    torch.testing.assert_close(af1_transform(w, x, heads=2, mask=real)[:, :3], af1_transform(w, y, heads=2, mask=real)[:, :3])
    out = af1_transform(w, x, heads=2)
    assert not torch.allclose(out[:, 0], out[:, 1])
