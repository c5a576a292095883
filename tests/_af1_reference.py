"""AF1's transformation layers and gated xattn-dense block as plain functions over official tensors.

An executable statement of what the released AF1 code computes (read from NVIDIA/audio-flamingo 2024,
src/helpers.py: TransformerEncoder, MaskedCrossAttention, GatedCrossAttentionBlock), written from that
reading, for parity tests of our modules after key mapping. The weights are the canonical parts of
`audioflamingo.compat.af1_keys.split_official_state_dict` (names without `audio_transformer.` /
`…gated_cross_attn_layer.`). Not used by the library.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def af1_transform(w: dict, x: torch.Tensor, heads: int = 8, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, L, E) ClapCap window vectors -> (B, L, E). AF1 passes no mask (padding slots are attended);
    `mask` (B, L) bool, True = real window, is only for comparing against a masked variant."""
    B, L, E = x.shape
    d = E // heads
    h = x * E**0.5 + w["position_enc.pos_table"][:, :L].to(x.dtype)  # (B, L, E)
    h = F.layer_norm(h, (E,), w["layer_norm.weight"], w["layer_norm.bias"], eps=1e-6)  # input LN
    n = 0
    while f"layer_stack.{n}.slf_attn.w_qs.weight" in w:
        p = f"layer_stack.{n}."
        q, k, v = (F.linear(h, w[p + f"slf_attn.{name}.weight"]).view(B, L, heads, d).transpose(1, 2)
                   for name in ("w_qs", "w_ks", "w_vs"))  # (B, H, L, d) each
        scores = (q / d**0.5) @ k.transpose(-1, -2)  # (B, H, L, L)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, None, :], -1e9)
        a = scores.softmax(-1) @ v  # (B, H, L, d)
        a = F.linear(a.transpose(1, 2).reshape(B, L, E), w[p + "slf_attn.fc.weight"])  # (B, L, E)
        h = F.layer_norm(a + h, (E,), w[p + "slf_attn.layer_norm.weight"], w[p + "slf_attn.layer_norm.bias"], eps=1e-6)
        f = F.linear(F.relu(F.linear(h, w[p + "pos_ffn.w_1.weight"], w[p + "pos_ffn.w_1.bias"])),
                     w[p + "pos_ffn.w_2.weight"], w[p + "pos_ffn.w_2.bias"])  # (B, L, E)
        h = F.layer_norm(f + h, (E,), w[p + "pos_ffn.layer_norm.weight"], w[p + "pos_ffn.layer_norm.bias"], eps=1e-6)
        n += 1
    return h


def af1_text_to_window_mask(audio_token: torch.Tensor, n_windows: int, per_audio: int = 16) -> torch.Tensor:
    """(B, T) bool (True at <audio>) -> (B, T, L) bool: which windows each text position may see.

    Text from the k-th <audio> on sees windows [0, per_audio·(k+1)); text before the first <audio> sees
    audio 0's windows (the whole text does when there is a single <audio>). Needs >= 1 <audio> per row.
    """
    B, T = audio_token.shape
    k = audio_token.long().cumsum(dim=1) - 1  # (B, T) index of the latest <audio>, -1 before the first
    limit = (k.clamp(min=0) + 1) * per_audio  # (B, T) windows visible
    return torch.arange(n_windows)[None, None, :] < limit[:, :, None]  # (B, T, L)


def af1_xattn_block(w: dict, x: torch.Tensor, media: torch.Tensor, media_mask: torch.Tensor,
                    audio_token: torch.Tensor, heads: int = 8, per_audio: int = 16) -> torch.Tensor:
    """x (B, T, D) text states, media (B, L, E) transformed windows, media_mask (B, L) bool (True = real),
    audio_token (B, T) bool -> (B, T, D): the gated block that runs before each OPT decoder layer."""
    B, T, D = x.shape
    L = media.shape[1]
    inner = w["attn.to_q.weight"].shape[0]
    d = inner // heads
    h = F.layer_norm(x, (D,), w["attn.norm.weight"], w["attn.norm.bias"])  # eps 1e-5
    q = F.linear(h, w["attn.to_q.weight"]).view(B, T, heads, d).transpose(1, 2) * d**-0.5  # (B, H, T, d)
    k, v = F.linear(media, w["attn.to_kv.weight"]).chunk(2, dim=-1)  # (B, L, inner) each: keys first
    k, v = (t.view(B, L, heads, d).transpose(1, 2) for t in (k, v))  # (B, H, L, d)
    sim = q @ k.transpose(-1, -2)  # (B, H, T, L)
    lowest = -torch.finfo(sim.dtype).max
    sim = sim.masked_fill(~media_mask[:, None, None, :], lowest)
    sim = sim.masked_fill(~af1_text_to_window_mask(audio_token, L, per_audio)[:, None], lowest)
    attn = (sim - sim.amax(dim=-1, keepdim=True)).softmax(dim=-1)  # (B, H, T, L)
    out = F.linear((attn @ v).transpose(1, 2).reshape(B, T, inner), w["attn.to_out.weight"])  # (B, T, D)
    x = out * torch.tanh(w["attn_gate"]) + x
    ff = F.layer_norm(x, (D,), w["ff.0.weight"], w["ff.0.bias"])  # (B, T, D)
    ff = F.linear(F.gelu(F.linear(ff, w["ff.1.weight"])), w["ff.3.weight"])  # (B, T, D)
    return ff * torch.tanh(w["ff_gate"]) + x
