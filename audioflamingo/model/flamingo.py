"""The Audio Flamingo model: audio encoder + transformation layers + a Hugging Face causal LM whose decoder
layers are each preceded (every `xattn.every`-th) by a gated cross-attention dense block.

The HF LM is left as it is; each decoder layer is wrapped in a `FlamingoLayer`, and the audio context
travels to it as a keyword argument of the LM's forward (HF passes unknown keywords down to the layers).
"""

from __future__ import annotations

import hashlib
import inspect

import torch
import torch.nn as nn
import torch.nn.functional as F

from audioflamingo.audio import Clip, load_audio, make_windows, window_lengths
from audioflamingo.config import ModelConfig
from audioflamingo.model.cache import AudioContext, AudioTokens, FlamingoCache
from audioflamingo.model.encoder import WindowSummary, build_encoder, summary_dim, summary_raw_dim
from audioflamingo.model.inference import InferenceMixin
from audioflamingo.model.xattn import GatedCrossAttentionBlock, RepresentationTransform
from audioflamingo.text import IGNORE, MediaIds


class FlamingoLayer(nn.Module):
    """A decoder layer with an optional gated cross-attention block in front of it."""

    def __init__(self, decoder_layer: nn.Module, xattn: GatedCrossAttentionBlock | None, index: int):
        super().__init__()
        self.decoder_layer = decoder_layer
        self.xattn = xattn
        self.index = index

    def forward(self, hidden_states, *args, audio_ctx: AudioContext | None = None, **kwargs):
        if self.xattn is not None and audio_ctx is not None:
            kv = audio_ctx.keys_values(self.index, self.xattn)
            hidden_states = self.xattn(hidden_states, kv, audio_ctx.allow)  # (B, T, D)
        return self.decoder_layer(hidden_states, *args, **kwargs)

    def __getattr__(self, name):  # HF models read attributes such as `attention_type` off their layers
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("decoder_layer"), name)


def _hash_state(state: dict) -> str:
    h = hashlib.sha256()
    for name, t in sorted(state.items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def decoder_layers(lm: nn.Module) -> nn.ModuleList:
    """The ModuleList of decoder layers of any HF causal LM (OPT/Llama/Qwen2: .layers, GPT-2: .h)."""
    decoder = lm.get_decoder() if hasattr(lm, "get_decoder") else lm
    for name in ("layers", "h", "blocks"):
        layers = getattr(decoder, name, None)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise ValueError(f"cannot find the decoder layers of {type(lm).__name__}; expected .layers or .h")


def lm_width(lm: nn.Module) -> int:
    return lm.get_input_embeddings().weight.shape[1] if lm.get_input_embeddings() is not None else lm.config.hidden_size


def clip_values(raw: torch.Tensor, counts: list[int], hop_seconds: float, cfg) -> torch.Tensor:
    """(W_total, R) raw per-window values of transform.level.clip (LevelSummary: length as whole seconds + fraction; per fraction the onsets
    before clip_margin, in [clip_margin, hop + clip_margin), all) + windows per audio -> (A, clip_dim) one-hots per
    audio: its duration, (windows - 1) x hop + the last window's length, rounded to 0.1 s as captions write it
    (whole seconds, tenths), and per fraction its onsets counted once: the first window's head, every window's
    middle stretch but the last one's, the last window from its head on (one window alone: all its onsets)."""
    K = len(cfg.peak_fractions)
    raw = raw.float()
    length = raw[:, 0] + raw[:, 1]  # (W_total,) seconds
    head, mid, every = raw[:, 2 : 2 + K], raw[:, 2 + K : 2 + 2 * K], raw[:, 2 + 2 * K : 2 + 3 * K]  # (W_total, K) each
    n = torch.tensor(counts, device=raw.device)  # (A,)
    last = torch.cumsum(n, 0) - 1  # (A,) row of each audio's last window
    first = last - n + 1  # (A,)
    owner = torch.repeat_interleave(torch.arange(len(counts), device=raw.device), n)  # (W_total,) audio of each window
    mids = torch.zeros(len(counts), K, device=raw.device).index_add_(0, owner, mid)  # (A, K)
    onsets = head[first] + mids - mid[last] + every[last] - head[last]  # (A, K)
    seconds = (n - 1).float() * hop_seconds + length[last]  # (A,)
    tenths = torch.round(seconds * 10).long().clamp(0, (cfg.clip_max_seconds + 1) * 10 - 1)  # (A,)
    parts = [F.one_hot(tenths // 10, cfg.clip_max_seconds + 1), F.one_hot(tenths % 10, 10)]  # (A, S + 1), (A, 10)
    parts += [F.one_hot(onsets[:, k].round().long().clamp(0, cfg.max_onsets), cfg.max_onsets + 1) for k in range(K)]  # K x (A, M + 1)
    return torch.cat(parts, dim=1).float()  # (A, clip_dim)


class AudioFlamingo(InferenceMixin, nn.Module):
    def __init__(self, config: ModelConfig, lm: nn.Module, tokenizer=None, vocab_size: int | None = None):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        a, e = config.audio, config.encoder
        self.encoder = build_encoder(e, a.sample_rate, a.window_samples)
        self.transform = RepresentationTransform(e.out_dim, config.transform)
        # transform.pitch / rhythm / level: parameter-free summaries of each window ride along with the encoder's
        # N tokens as `summary_slots` extra rows of width E (so that a cache of window features holds them)
        # (with transform.level.clip, raw per-window values follow, from which clip_values makes the clip-level summary)
        dim = summary_dim(config.transform) + summary_raw_dim(config.transform)
        self.window_summary = WindowSummary(config.transform, a.sample_rate, a.hop_seconds) if dim else None
        self.summary_slots = -(-dim // e.out_dim) if dim else 0
        if (dim or config.transform.embedding_input) and a.pad_to_max_windows:
            raise ValueError("transform.pitch / rhythm / level / embedding_input are not available in AF1's fixed-slot audio mode (audio.pad_to_max_windows)")
        if tokenizer is not None or vocab_size is not None:
            lm.resize_token_embeddings(vocab_size or len(tokenizer), mean_resizing=False)
        self.lm = lm
        layers = decoder_layers(lm)
        D = lm_width(lm)
        for i in range(len(layers)):
            block = GatedCrossAttentionBlock(D, e.out_dim, config.xattn) if i % config.xattn.every == 0 else None
            layers[i] = FlamingoLayer(layers[i], block, i)
        self.media = MediaIds.of(tokenizer) if tokenizer is not None else None
        self.clap_text = None  # ClapText (model/clap_text.py): set by load_model from clap_text_head.safetensors
        self.source: str | None = None  # the folder or preset it was loaded from (for error messages)

    # ------------------------------------------------------------------------------------------------
    # parameters

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def xattn_blocks(self) -> list[GatedCrossAttentionBlock]:
        return [l.xattn for l in decoder_layers(self.lm) if l.xattn is not None]

    def param_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Named parameters by part: encoder, transform, xattn, embeddings (input/output), lm (the rest)."""
        groups = {"encoder": [], "transform": [], "xattn": [], "embeddings": [], "lm": []}
        emb = {id(self.lm.get_input_embeddings().weight)}
        out = self.lm.get_output_embeddings()
        if out is not None:
            emb.add(id(out.weight))
        for name, p in self.named_parameters():
            if name.startswith("encoder."):
                groups["encoder"].append((name, p))
            elif name.startswith("transform."):
                groups["transform"].append((name, p))
            elif ".xattn." in name:
                groups["xattn"].append((name, p))
            elif id(p) in emb:
                groups["embeddings"].append((name, p))
            else:
                groups["lm"].append((name, p))
        return groups

    def count_parameters(self) -> dict[str, int]:
        g = {k: sum(p.numel() for _, p in v) for k, v in self.param_groups().items()}
        counts = {"lm": g["lm"] + g["embeddings"], "xattn": g["xattn"], "transform": g["transform"], "encoder": g["encoder"]}
        counts["total"] = counts["lm"] + counts["xattn"] + counts["transform"]  # AF1 counts without the encoder
        return {"total": counts["total"], **{k: counts[k] for k in ("lm", "xattn", "transform", "encoder")}}

    def fingerprint(self) -> str:
        """A short hash of every weight: names the exact model in evaluation reports."""
        return _hash_state(self.state_dict())

    def embedding_fingerprint(self) -> str:
        """A short hash of the audio tower's weights: retrieval indexes refuse other encoders."""
        return _hash_state(self.encoder.state_dict())

    # ------------------------------------------------------------------------------------------------
    # audio

    def load_clip(self, source) -> Clip:
        return load_audio(source, self.config.audio.sample_rate, self.config.audio)

    def encode_windows(self, windows: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(W_total, S) every real window of the batch, in ONE encoder call -> (W_total, N, E) window features;
        with window summaries (transform.pitch / rhythm / level), (W_total, N + summary_slots, E): they follow the tokens.
        lengths: (W_total,) samples of audio per window (audio.window_lengths) for transform.level; None: up to
        each window's last nonzero sample (a clip's own trailing digital silence then does not count)."""
        windows = windows.to(self.device)
        feats = self.encoder(windows)  # (W, N, E)
        if self.window_summary is None:
            return feats
        return torch.cat([feats, self.summary_rows(windows, lengths).to(feats.dtype)], dim=1)  # (W, N + slots, E)

    def summary_rows(self, windows: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(W, S) windows -> (W, summary_slots, E) their window-summary rows as encode_windows appends them (parameter-
        free: a cache of the encoder's tokens can gain them without running the encoder again)."""
        if self.window_summary is None:
            raise ValueError("this model has no window summaries (transform.pitch / rhythm / level)")
        raw = self.window_summary(windows.to(self.device), lengths)  # (W, D)
        E = self.config.encoder.out_dim
        return F.pad(raw, (0, self.summary_slots * E - raw.shape[-1])).view(-1, self.summary_slots, E)  # (W, slots, E)

    def split_windows(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(W, N [+ slots], E) window features -> (W, N, E) audio tokens, (W, D) window summaries (raw values of
        transform.level.clip last) or None."""
        if not self.summary_slots:
            return feats, None
        N = self.config.encoder.tokens_per_window
        if feats.shape[1] != N + self.summary_slots:
            raise ValueError(f"window features have {feats.shape[1]} rows per window, this model expects {N} tokens + "
                             f"{self.summary_slots} window-summary rows (transform.pitch / rhythm / level): features cached by another model?")
        return feats[:, :N], feats[:, N:].flatten(1)[:, : self.window_summary.dim]  # (W, N, E), (W, D)

    def audio_embedding(self, feats: torch.Tensor) -> torch.Tensor:
        """(W, N [+ slots], E) window features of ONE audio -> (E,) its CLAP embedding: the L2-normalised mean of
        its tokens over windows (the summary rows are not part of it)."""
        return F.normalize(self.split_windows(feats)[0].float().mean(dim=(0, 1)), dim=-1)  # (E,)

    def encode_audio(self, audios: list[list[Clip]], window_features: list[torch.Tensor] | None = None) -> AudioTokens:
        """B samples, each a list of A_b clips -> AudioTokens (B, L, E).

        Only real windows are encoded, all in one encoder call, and a Clip object that appears in
        several samples (shared in-context examples) is encoded once.
        window_features: optional encoder outputs, one (W_i, N, E) tensor per audio in flat order (sample
        by sample); the encoder is then skipped (training with a frozen encoder caches them per clip).
        """
        cfg = self.config.audio
        if cfg.pad_to_max_windows:  # AF1 mode: fixed slots, padding encoded (audioflamingo/compat/af1_audio.py)
            from audioflamingo.compat.af1_audio import encode_audio_slots

            return encode_audio_slots(self, audios)
        E = self.config.encoder.out_dim
        unique: dict[int, int] = {}  # id(clip) (or flat position, with window_features) -> row in the unique list
        slots: list[list[int]] = []  # slots[b][j] = unique row of audio j of sample b
        clips = []
        for sample in audios:
            slots.append([])
            for c in sample:
                key = id(c) if window_features is None else sum(map(len, slots))
                if key not in unique:
                    unique[key] = len(clips)
                    clips.append(c)
                slots[-1].append(unique[key])
        if not clips:
            return AudioTokens(torch.zeros(len(audios), 1, E, device=self.device), torch.full((len(audios), 1), -1, dtype=torch.long, device=self.device))
        if window_features is not None:
            counts = [f.shape[0] for f in window_features]
            feats = torch.cat(window_features).to(self.device)  # (W_total, N, E)
        else:
            per_audio = [make_windows(c, cfg) for c in clips]  # U x (W_i, S)
            counts = [w.shape[0] for w in per_audio]
            lengths = torch.cat([window_lengths(c, cfg) for c in clips])  # (W_total,)
            feats = self.encode_windows(torch.cat(per_audio), lengths)  # (W_total, N, E)
        feats, summary = self.split_windows(feats)  # (W_total, N, E), (W_total, D) or None
        clip, R = None, summary_raw_dim(self.config.transform)
        if summary is not None and R:
            clip = clip_values(summary[:, -R:], counts, cfg.hop_seconds, self.config.transform.level)  # (U, C)
            summary = summary[:, :-R]  # (W_total, D - R)
        emb = F.normalize(torch.stack([f.float().mean(dim=(0, 1)) for f in feats.split(counts)]), dim=-1)  # (U, E) as embed_audio
        x, pad = self.pack_windows(feats, counts)  # (U, Lmax, E), (U, Lmax)
        x = self.transform(x, pad)  # (U, Lmax, E)
        if summary is not None:  # each window's projected summary on each of its N tokens
            p = self.transform.summary_in(summary.to(x.dtype))  # (W_total, E)
            p, _ = self.pack_windows(p[:, None].expand(-1, feats.shape[1], -1), counts)  # (U, Lmax, E), zero on padding
            x = x + p  # (U, Lmax, E)
        if clip is not None:  # the clip-level summary on each of the audio's tokens
            x = x + self.transform.clip_in(clip.to(x.dtype))[:, None] * (~pad)[..., None]  # (U, Lmax, E), zero on padding
        if self.config.transform.embedding_input:  # the audio's CLAP embedding on each of its tokens
            x = x + self.transform.embedding_in(emb.to(x.dtype))[:, None] * (~pad)[..., None]  # (U, Lmax, E), zero on padding
        lengths = (~pad).sum(1).tolist()  # tokens per audio
        L = max(1, max(sum(lengths[u] for u in row) for row in slots))
        tokens = x.new_zeros(len(audios), L, E)  # (B, L, E)
        audio_index = torch.full((len(audios), L), -1, dtype=torch.long, device=x.device)  # (B, L)
        embedding = emb.new_zeros(len(audios), max(map(len, slots)), emb.shape[-1])  # (B, A, E)
        for b, row in enumerate(slots):
            embedding[b, : len(row)] = emb[row]
            at = 0
            for j, u in enumerate(row):
                n = lengths[u]
                tokens[b, at : at + n] = x[u, :n]
                audio_index[b, at : at + n] = j
                at += n
        return AudioTokens(tokens, audio_index, embedding)

    @staticmethod
    def pack_windows(feats: torch.Tensor, counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(W_total, N, E) window features + windows per audio -> (A, Lmax, E) tokens, (A, Lmax) bool pad mask."""
        E = feats.shape[-1]
        chunks = [c.reshape(-1, E) for c in feats.split(counts)]  # A x (W_i*N, E)
        Lmax = max(c.shape[0] for c in chunks)
        x = feats.new_zeros(len(chunks), Lmax, E)  # (A, Lmax, E)
        pad = torch.ones(len(chunks), Lmax, dtype=torch.bool, device=feats.device)  # (A, Lmax) True = pad
        for i, c in enumerate(chunks):
            x[i, : len(c)], pad[i, : len(c)] = c, False
        return x, pad

    @torch.no_grad()
    def embed_audio(self, sources, batch_size: int = 32) -> torch.Tensor:
        """CLAP audio embeddings: list of paths / (samples, rate) -> (n, E), L2-normalised mean over windows."""
        out = []
        for i in range(0, len(sources), batch_size):
            clips = [self.load_clip(s) for s in sources[i : i + batch_size]]
            wins = [make_windows(c, self.config.audio) for c in clips]
            feats = self.encode_windows(torch.cat(wins))  # (W_total, N [+ slots], E)
            for f in feats.split([w.shape[0] for w in wins]):
                out.append(self.audio_embedding(f))  # (E,)
        return torch.stack(out) if out else torch.zeros(0, self.config.encoder.out_dim)

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """CLAP text embeddings: list of strings -> (n, E), L2-normalised, comparable with embed_audio by cosine.

        Frozen MiniLM (loaded on the first call) + the projection trained by the CLAP stage, stored
        beside the weights as clap_text_head.safetensors.
        """
        from audioflamingo.model.clap_text import TEXT_HEAD_FILE

        where = self.source or "this model"
        if self.clap_text is None:
            raise RuntimeError(
                f"{where}: no CLAP text head ({TEXT_HEAD_FILE} is missing), so embed_text cannot embed text; copy the "
                f"{TEXT_HEAD_FILE} written by the CLAP training stage (<out_dir>/model/) into the model folder"
            )
        trained_on = self.clap_text.encoder_fingerprint
        if trained_on is not None and trained_on != self.embedding_fingerprint():
            raise RuntimeError(
                f"{self.clap_text.source or where}: the CLAP text head was trained against audio encoder {trained_on}, but "
                f"this model's encoder is {self.embedding_fingerprint()} (retrained after the CLAP stage?); its text "
                f"embeddings would not match embed_audio: retrain the CLAP stage on this encoder"
            )
        return self.clap_text(texts, self.device)  # (n, E)

    # ------------------------------------------------------------------------------------------------
    # forward

    def audio_context(self, input_ids, audio: AudioTokens | None, cache: FlamingoCache | None) -> AudioContext | None:
        if audio is None:
            return None
        prev = cache.media_count if (cache is not None and cache.media_count is not None) else 0
        media_count = torch.cumsum((input_ids == self.media.audio).long(), dim=1) + (
            prev[:, None] if torch.is_tensor(prev) else 0
        )  # (B, T): the k-th <audio> and every token after it see audios 0..k-1 (1-based count)
        if self.config.xattn.text_before_audio_sees_first:
            media_count = media_count.clamp(min=1)  # (B, T) AF1: text before the first <audio> sees audio 0
        idx = audio.audio_index[:, None, :]  # (B, 1, L)
        allow = (idx >= 0) & (idx < media_count[:, :, None])  # (B, T, L)
        if cache is not None:
            cache.media_count = media_count[:, -1]
            return AudioContext(audio, allow, cache.audio_kv)
        return AudioContext(audio, allow, {})

    @property
    def _cache_arg(self) -> str:
        """The LM's name for its KV cache: `cache` (transformers >= 5.2x) or `past_key_values` (earlier); an
        unknown name would vanish into **kwargs and every step would silently recompute from scratch."""
        if not hasattr(self, "_cache_arg_name"):
            params = inspect.signature(self.lm.forward).parameters
            self._cache_arg_name = "cache" if "cache" in params else "past_key_values"
        return self._cache_arg_name

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        audio: AudioTokens | None = None,
        labels: torch.Tensor | None = None,
        cache: FlamingoCache | None = None,
    ):
        """input_ids (B, T), attention_mask (B, T) long 1 = real, labels (B, T) with IGNORE elsewhere.

        Returns (logits (B, T, V), loss or None). With `cache`, input_ids are the new tokens only and
        the cache is updated in place.
        """
        B, T = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        full_mask = attention_mask if cache is None or cache.attention_mask is None else torch.cat([cache.attention_mask, attention_mask], 1)  # (B, T_past+T)
        positions = (full_mask.cumsum(1) - 1).clamp(min=0)[:, -T:]  # (B, T): left padding keeps real positions
        ctx = self.audio_context(input_ids, audio, cache)
        out = self.lm(
            input_ids=input_ids,
            attention_mask=full_mask,
            position_ids=positions,
            use_cache=cache is not None,
            audio_ctx=ctx,
            **{self._cache_arg: cache.lm_cache if cache is not None else None},
        )
        if cache is not None:
            cache.lm_cache = out.cache if "cache" in out else out.past_key_values
            cache.attention_mask = full_mask
        logits = out.logits  # (B, T, V)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE)
        return logits, loss
