"""HTS-AT: the hierarchical Swin audio tower of Microsoft CLAP ("ClapCap"), which AF1 uses frozen.

One window of audio becomes one 1024-d vector (AF1: tokens_per_window = 1):

    (B, S) waveform ─► log-mel (torch STFT, Slaney filterbank) (B, F, M) ─► BatchNorm over mel bins
      ─► bicubic stretch of the time axis to spec_size·r frames (AF1: 965 → 1024)
      ─► fold the r time chunks on top of each other: a (spec_size × spec_size) image (AF1: 256 × 256)
      ─► 4×4 patches ─► four Swin stages (window attention, shifted every other block, patch merging)
      ─► LayerNorm, mean over tokens = the 768-d latent ─► projection head (no L2 norm) ─► (B, 1, 1024)

AF1 feeds 44.1 kHz audio but ClapCap's filterbank was built for 32 kHz (fmax 14 kHz): the mel bands
therefore sit at 44.1/32 of their nominal frequencies. We reproduce that: `filterbank_rate` is
separate from the audio rate. Parameter names follow the reference checkpoint after removing the prefix
`clap.base.htsat.` (see audioflamingo.compat.clapcap, which maps `clapcap_weights_2023.pth`).

The tower is meant to run frozen (as in AF1; bn0 never leaves eval mode): SpecAugment, dropout and
drop-path of the reference training code are not implemented. The audio front end
(audioflamingo.model.clapcap_mel) runs in float32 whatever the weights' dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from audioflamingo.config import ConfigError, from_dict
from audioflamingo.model.clapcap_mel import LogMel


@dataclass
class HTSATConfig:
    """ClapCap geometry (the defaults are the reference values)."""

    filterbank_rate: int = 32000  # the rate the mel filterbank is built for (not the audio rate: 44.1 kHz)
    n_fft: int = 1024
    hop_length: int = 320
    n_mels: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0
    spec_size: int = 256  # the square image fed to the Swin stages
    patch_size: int = 4
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 8
    mlp_ratio: float = 4.0
    out_dim: int = 1024  # projection width (ClapCap d_proj); 0 = no projection, output the latent

    @property
    def freq_ratio(self) -> int:
        """How many time chunks are folded on top of each other (AF1: 256 // 64 = 4)."""
        return self.spec_size // self.n_mels

    @property
    def max_frames(self) -> int:
        """Frames the image holds; shorter inputs are stretched up to it (AF1: 1024)."""
        return self.spec_size * self.freq_ratio

    @property
    def latent_dim(self) -> int:
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    def validate(self) -> None:
        problems = []
        if self.spec_size % self.n_mels:
            problems.append(f"spec_size {self.spec_size} must be a multiple of n_mels {self.n_mels}")
        if len(self.depths) != len(self.num_heads):
            problems.append(f"depths {self.depths} and num_heads {self.num_heads} must have the same length")
        grid = self.spec_size // self.patch_size
        if self.spec_size % self.patch_size or grid % 2 ** (len(self.depths) - 1):
            problems.append(f"spec_size / patch_size = {self.spec_size}/{self.patch_size} must divide by 2^(stages-1)")
        for i, heads in enumerate(self.num_heads):
            res, dim = grid // 2**i, self.embed_dim * 2**i
            if dim % heads:
                problems.append(f"stage {i}: width {dim} is not divisible by {heads} heads")
            if res > self.window_size and res % self.window_size:
                problems.append(f"stage {i}: resolution {res} is not a multiple of window_size {self.window_size}")
        if problems:
            raise ConfigError("encoder.htsat: " + "; ".join(problems))


# ----------------------------------------------------------------------------------------------------
# Swin stages


def to_windows(x: torch.Tensor, w: int) -> torch.Tensor:
    """(B, R, R, C) -> (B·nW, w·w, C): non-overlapping w×w windows, row-major over the grid."""
    B, R, _, C = x.shape
    x = x.view(B, R // w, w, R // w, w, C)  # (B, R/w, w, R/w, w, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, C)  # (B·nW, w·w, C)


def from_windows(x: torch.Tensor, w: int, R: int) -> torch.Tensor:
    """(B·nW, w·w, C) -> (B, R, R, C), the inverse of to_windows."""
    C = x.shape[-1]
    x = x.view(-1, R // w, R // w, w, w, C)  # (B, R/w, R/w, w, w, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, R, R, C)  # (B, R, R, C)


def relative_position_index(w: int) -> torch.Tensor:
    """(w·w, w·w) index into the ((2w-1)², H) bias table for every pair of positions in a window."""
    rows, cols = torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")  # (w, w) each
    rows, cols = rows.flatten(), cols.flatten()  # (w·w,)
    d_row = rows[:, None] - rows[None, :] + (w - 1)  # (w·w, w·w) in [0, 2w-2]
    d_col = cols[:, None] - cols[None, :] + (w - 1)  # (w·w, w·w)
    return d_row * (2 * w - 1) + d_col  # (w·w, w·w)


def shifted_window_mask(R: int, w: int, shift: int) -> torch.Tensor:
    """(nW, w·w, w·w) additive mask, -100 between positions that the cyclic shift brought together."""
    pos = torch.arange(R)
    region = (pos >= R - w).long() + (pos >= R - shift).long()  # (R,) 0, 1 or 2 along each axis
    label = (region[:, None] * 3 + region[None, :]).float()  # (R, R)
    label = to_windows(label[None, :, :, None], w).squeeze(-1)  # (nW, w·w)
    differs = label[:, :, None] != label[:, None, :]  # (nW, w·w, w·w)
    return differs.float() * -100.0  # (nW, w·w, w·w)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with a learned relative-position bias."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads = heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("rel_index", relative_position_index(window), persistent=False)  # (N, N)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x (B·nW, N, C), mask (nW, N, N) additive or None -> (B·nW, N, C)."""
        BW, N, C = x.shape
        H = self.heads
        qkv = self.qkv(x).view(BW, N, 3, H, C // H).permute(2, 0, 3, 1, 4)  # (3, B·nW, H, N, C/H)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B·nW, H, N, C/H) each
        bias = self.relative_position_bias_table[self.rel_index].permute(2, 0, 1)  # (H, N, N)
        if mask is not None:  # windows of one sample are consecutive: fold them into the head axis
            nW = mask.shape[0]
            bias = (bias[None] + mask[:, None].to(bias.dtype)).reshape(1, nW * H, N, N)  # (1, nW·H, N, N)
            q, k, v = (t.reshape(BW // nW, nW * H, N, C // H) for t in (q, k, v))  # (B, nW·H, N, C/H)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))  # (B·nW, H, N, C/H) or (B, nW·H, N, C/H)
        out = out.reshape(BW, H, N, C // H).transpose(1, 2).reshape(BW, N, C)  # (B·nW, N, C)
        return self.proj(out)  # (B·nW, N, C)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """Pre-LN block: (shifted) window attention then MLP, each residual. (B, R·R, C) -> same."""

    def __init__(self, dim: int, resolution: int, heads: int, window: int, shift: int, mlp_ratio: float):
        super().__init__()
        if resolution <= window:  # the whole grid fits in one window: no partition, no shift
            window, shift = resolution, 0
        self.resolution, self.window, self.shift = resolution, window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        mask = shifted_window_mask(resolution, window, shift) if shift else None
        self.register_buffer("shift_mask", mask, persistent=False)  # (nW, N, N) or None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        R, w, s = self.resolution, self.window, self.shift
        h = self.norm1(x).view(B, R, R, C)  # (B, R, R, C)
        if s:
            h = torch.roll(h, shifts=(-s, -s), dims=(1, 2))  # (B, R, R, C)
        h = self.attn(to_windows(h, w), self.shift_mask)  # (B·nW, w·w, C)
        h = from_windows(h, w, R)  # (B, R, R, C)
        if s:
            h = torch.roll(h, shifts=(s, s), dims=(1, 2))  # (B, R, R, C)
        x = x + h.reshape(B, L, C)  # (B, L, C)
        return x + self.mlp(self.norm2(x))  # (B, L, C)


class PatchMerging(nn.Module):
    """2×2 neighbours concatenated, normalised, projected: (B, R·R, C) -> (B, R/2·R/2, 2C)."""

    def __init__(self, dim: int, resolution: int):
        super().__init__()
        self.resolution = resolution
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        R = self.resolution
        x = x.view(B, R, R, C)  # (B, R, R, C)
        # order (even row, even col), (odd, even), (even, odd), (odd, odd): the reference's channel order
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)  # (B, R/2, R/2, 4C)
        x = x.view(B, L // 4, 4 * C)  # (B, L/4, 4C)
        return self.reduction(self.norm(x))  # (B, L/4, 2C)


class SwinStage(nn.Module):
    def __init__(self, dim: int, resolution: int, depth: int, heads: int, window: int, mlp_ratio: float, merge: bool):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, resolution, heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio) for i in range(depth)
        )
        self.downsample = PatchMerging(dim, resolution) if merge else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)  # (B, L, C)
        return self.downsample(x) if self.downsample is not None else x  # (B, L', C')


class PatchEmbed(nn.Module):
    """(B, 1, P, P) image -> (B, (P/p)², E) patch tokens, LayerNorm-ed."""

    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, E, P/p, P/p)
        return self.norm(x.flatten(2).transpose(1, 2))  # (B, (P/p)², E)


class Projection(nn.Module):
    """ClapCap's projection head: LayerNorm(h + Dropout(W2·gelu(h))), h = W1·x; no biases, no L2 norm."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear1 = nn.Linear(d_in, d_out, bias=False)
        self.linear2 = nn.Linear(d_out, d_out, bias=False)
        self.layer_norm = nn.LayerNorm(d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear1(x)  # (B, d_out)
        return self.layer_norm(h + self.linear2(F.gelu(h)))  # (B, d_out)


# ----------------------------------------------------------------------------------------------------
# the tower


class HTSATEncoder(nn.Module):
    """ClapCap audio tower. forward: (B, S) float waveforms -> (B, 1, out_dim) (one vector per window).

    `latent(x)` gives the 768-d pooled Swin feature before the projection head.
    """

    tokens_per_window = 1

    def __init__(self, cfg: HTSATConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.mel = LogMel(cfg)
        self.bn0 = nn.BatchNorm2d(cfg.n_mels)  # over mel bins (BatchNorm2d: the reference's buffer layout)
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.embed_dim)
        grid = cfg.spec_size // cfg.patch_size
        n = len(cfg.depths)
        self.layers = nn.ModuleList(
            SwinStage(cfg.embed_dim * 2**i, grid // 2**i, cfg.depths[i], cfg.num_heads[i], cfg.window_size,
                      cfg.mlp_ratio, merge=i < n - 1)
            for i in range(n)
        )
        self.norm = nn.LayerNorm(cfg.latent_dim)
        self.projection = Projection(cfg.latent_dim, cfg.out_dim) if cfg.out_dim else None
        self.out_dim = cfg.out_dim or cfg.latent_dim
        self.apply(_init_weights)

    def train(self, mode: bool = True):
        """bn0 stays in eval mode: its statistics belong to the pretrained tower, and AF1 always ran the
        tower in eval mode (a parent's .train() must not switch it to batch statistics)."""
        super().train(mode)
        self.bn0.eval()
        return self

    def image(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S) waveforms -> (B, 1, P, P) normalised, stretched and folded log-mel image (float32)."""
        cfg = self.cfg
        mel = self.mel(x)  # (B, F, M)
        B, n_frames, M = mel.shape
        if n_frames > cfg.max_frames:
            raise ValueError(
                f"HTS-AT: a window gives {n_frames} mel frames but the {cfg.spec_size}² image holds at most "
                f"{cfg.max_frames} (hop {cfg.hop_length}): use windows of at most {(cfg.max_frames - 1) * cfg.hop_length} samples"
            )
        mel = mel.transpose(1, 2).unsqueeze(-1)  # (B, M, F, 1) channels = mel bins
        mel = self.bn0(mel.to(self.bn0.weight.dtype)).float()  # (B, M, F, 1)
        mel = mel.squeeze(-1).transpose(1, 2).unsqueeze(1)  # (B, 1, F, M)
        T, r = cfg.max_frames, cfg.freq_ratio
        if n_frames < T:  # AF1: 965 -> 1024 frames
            mel = F.interpolate(mel, size=(T, M), mode="bicubic", align_corners=True)  # (B, 1, T, M)
        img = mel.reshape(B, r, T // r, M).permute(0, 1, 3, 2)  # (B, r, M, T/r) time chunk k, mel m, frame t
        return img.reshape(B, 1, r * M, T // r)  # (B, 1, P, P) row = k·M + m

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S) -> (B, latent_dim) mean of the final Swin tokens (the reference's 'latent_output')."""
        img = self.image(x).to(self.patch_embed.proj.weight.dtype)  # (B, 1, P, P)
        h = self.patch_embed(img)  # (B, L, E)
        for stage in self.layers:
            h = stage(h)  # (B, L', C')
        return self.norm(h).mean(dim=1)  # (B, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.latent(x)  # (B, latent_dim)
        if self.projection is not None:
            z = self.projection(z)  # (B, out_dim)
        return z.unsqueeze(1)  # (B, 1, out_dim)


def _init_weights(m: nn.Module) -> None:
    """Swin's initialisation, for training from scratch (the reference weights replace it)."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, WindowAttention):
        nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)


def htsat_config(cfg=None) -> HTSATConfig:
    """An HTSATConfig from: None (the ClapCap defaults), a dict of its fields, an HTSATConfig, or an
    EncoderConfig (mel settings from `encoder.mel`, projection width from `encoder.out_dim`, anything
    else from `encoder.htsat`, which wins)."""
    if cfg is None:
        return HTSATConfig()
    if isinstance(cfg, HTSATConfig):
        return cfg
    if isinstance(cfg, dict):
        return from_dict(HTSATConfig, cfg, "encoder.htsat.")
    if hasattr(cfg, "htsat") and hasattr(cfg, "mel"):  # EncoderConfig
        if cfg.tokens_per_window != 1:
            raise ConfigError(f"encoder.tokens_per_window = {cfg.tokens_per_window}: the HTS-AT tower gives 1 vector per window")
        mel = cfg.mel
        data = {"n_fft": mel.n_fft, "hop_length": mel.hop_length, "n_mels": mel.n_mels, "fmin": mel.fmin,
                "out_dim": cfg.out_dim}
        if mel.fmax is not None:
            data["fmax"] = mel.fmax
        if mel.filterbank_rate is not None:
            data["filterbank_rate"] = mel.filterbank_rate
        data.update(cfg.htsat)
        return from_dict(HTSATConfig, data, "encoder.htsat.")
    raise TypeError(f"htsat_config: expected None, dict, HTSATConfig or EncoderConfig, got {type(cfg).__name__}")


def build_htsat_encoder(cfg=None) -> HTSATEncoder:
    """The ClapCap HTS-AT tower; `cfg` as for `htsat_config` (None = the AF1 reference geometry)."""
    return HTSATEncoder(htsat_config(cfg))
