"""Explicit decoding state: the LM's self-attention KV cache plus everything audio-side that a new token needs.

A new token must see exactly what it would see in a full recomputation: the windows of every audio whose
<audio> marker came at or before it. So the cache carries, per sample, how many <audio> markers were seen
so far (AF1 forgot this and let new tokens see audio 0 only), the audio tokens' keys/values per
cross-attention block (computed once per request, never per token), and the attention mask so far.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class AudioTokens:
    """Encoded audio of a batch, every audio of a sample laid end to end.

    tokens:      (B, L, E) window tokens after the transformation layers (padding rows are zeros)
    audio_index: (B, L) long, index of the audio (0-based, in prompt order) each token belongs to; -1 = padding

    embedding:   (B, A, E) optional, each audio's CLAP embedding (unit rows, zeros past a sample's audios), the
                 same vectors as `AudioFlamingo.embed_audio`; copying from examples weighs them by it
    """

    tokens: torch.Tensor
    audio_index: torch.Tensor
    embedding: torch.Tensor | None = None

    def repeat_interleave(self, n: int) -> "AudioTokens":
        emb = self.embedding.repeat_interleave(n, 0) if self.embedding is not None else None
        return AudioTokens(self.tokens.repeat_interleave(n, 0), self.audio_index.repeat_interleave(n, 0), emb)

    def select(self, idx: torch.Tensor) -> "AudioTokens":
        return AudioTokens(self.tokens[idx], self.audio_index[idx], self.embedding[idx] if self.embedding is not None else None)


@dataclass
class FlamingoCache:
    """State carried between decoding steps. Fields are filled by the first (prefill) forward call."""

    lm_cache: object = None  # the HF Cache object for self-attention (DynamicCache)
    audio_kv: dict = field(default_factory=dict)  # block index -> (k, v), each (B, H, L, Dh)
    media_count: torch.Tensor | None = None  # (B,) long: <audio> markers seen so far
    attention_mask: torch.Tensor | None = None  # (B, T_past) long: 1 = real token

    @property
    def seq_len(self) -> int:
        return 0 if self.attention_mask is None else self.attention_mask.shape[1]

    def reorder(self, idx: torch.Tensor) -> None:
        """Keep rows `idx` (beam search): (B,) long indices into the current batch."""
        if self.lm_cache is not None:
            self.lm_cache.reorder_cache(idx)
        self.audio_kv = {i: (k[idx], v[idx]) for i, (k, v) in self.audio_kv.items()}
        self.media_count = self.media_count[idx]
        self.attention_mask = self.attention_mask[idx]


@dataclass
class AudioContext:
    """What every wrapped decoder layer needs for one forward call (passed as a keyword, never stored).

    allow: (B, T, L) bool, True = text token t may attend to audio token l.
    """

    audio: AudioTokens
    allow: torch.Tensor
    kv: dict  # block index -> (k, v); shared with FlamingoCache.audio_kv when decoding with a cache

    def keys_values(self, block_index: int, block) -> tuple[torch.Tensor, torch.Tensor]:
        if block_index not in self.kv:
            self.kv[block_index] = block.audio_kv(self.audio.tokens)
        return self.kv[block_index]
