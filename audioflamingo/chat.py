"""Multi-turn chat about audio: a dialogue keeps its encoded audio and its decoding cache across turns.

The dialogue text is DESIGN.md 1e's chat template (`text.chat_text`), with one extension: an audio
added mid-dialogue puts its `<audio>` marker in front of the next round, so later rounds see it and
earlier ones never do:

    BOS The task is dialog. <audio> user: u1 \\nassistant: <SEP> a1 <|endofchunk|> <audio> user: u2 ...

Invariant of a `ChatSession`: its cache always holds exactly the tokens of `encode(dialogue_text(items))`
(every turn is a cheap continuation, and the answers equal a from-scratch computation of the same text).
Audio is encoded once when it is added, and its cross-attention keys/values are computed once per block;
a follow-up question never touches the encoder.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from audioflamingo.model.cache import AudioTokens, FlamingoCache
from audioflamingo.model.generate import GenerationConfig, generate
from audioflamingo.text import AUDIO, EOC, SEP, encode

CHAT_PREFIX = "The task is dialog. "


class ChatWarning(UserWarning):
    """The dialogue was changed to fit (oldest rounds dropped)."""


@dataclass
class AudioMark:
    """An <audio> marker in the dialogue (its audio is the index-th of the session)."""

    index: int


@dataclass
class Round:
    user: str
    answer: str | None = None  # None: the round waits for its answer


# ----------------------------------------------------------------------------------------------------
# the dialogue as text (the template) and fitting it into the context


def dialogue_text(items: list, bos: str = "</s>") -> str:
    """Items (AudioMark / Round, in order) -> the chat template text; ends after <SEP> if the last
    round has no answer yet, after <|endofchunk|> otherwise (the dialogue goes on: no EOS)."""
    text = bos + CHAT_PREFIX
    for it in items:
        if isinstance(it, AudioMark):
            text += AUDIO
        else:
            text += f"user: {it.user} \nassistant: " + SEP
            if it.answer is None:
                return text
            text += it.answer + EOC
    return text


def fit_dialogue(items: list, tokenizer, max_tokens: int, bos: str = "</s>") -> tuple[list, torch.Tensor, list[str]]:
    """Drop the oldest rounds until the text is at most `max_tokens` tokens -> (items, (T,) ids, warnings).

    Audio markers are kept (their audio stays available); the last round is never dropped: if it
    alone does not fit, ValueError.
    """
    notes: list[str] = []
    items = list(items)
    dropped = 0
    while True:
        ids = encode(tokenizer, dialogue_text(items, bos))[0]  # (T,)
        if len(ids) <= max_tokens:
            break
        rounds = [i for i, it in enumerate(items) if isinstance(it, Round)]
        if len(rounds) <= 1:
            raise ValueError(
                f"the question and the audio markers need {len(ids)} tokens but the context allows {max_tokens} "
                "(model lm.max_length minus the tokens to generate): ask a shorter question or fewer new tokens"
            )
        del items[rounds[0]]
        dropped += 1
    if dropped:
        notes.append(f"dialogue longer than the context ({max_tokens} tokens): dropped the {dropped} oldest round(s)")
    return items, ids, notes


# ----------------------------------------------------------------------------------------------------
# streaming text out of token ids


class StreamDecoder:
    """Token ids in, text deltas out. Decodes the whole answer so far each time and emits the new
    suffix, holding back an incomplete multi-byte character and leading/trailing whitespace, so the
    deltas concatenate to exactly `text` (the stripped full decode)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.sent = ""

    def _stable(self) -> str:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        return text.rstrip("\ufffd").strip()  # U+FFFD at the end: a character whose bytes are still coming

    def push(self, token: int) -> str:
        self.ids.append(token)
        stable = self._stable()
        if not stable.startswith(self.sent):  # a decoder rewrote earlier text: wait for the end
            return ""
        delta, self.sent = stable[len(self.sent) :], stable
        return delta

    @property
    def text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True).strip()

    def finish(self) -> str:
        """The rest of the text (a trailing incomplete character, as U+FFFD)."""
        final = self.text
        delta = final[len(self.sent) :] if final.startswith(self.sent) else ""
        self.sent = final
        return delta


# ----------------------------------------------------------------------------------------------------
# the session


def check_chat_model(model) -> None:
    """This module speaks the project's chat template; the released AF1 weights need their own strings
    and audio slots (audioflamingo.compat.af1.af1_chat, `audioflamingo af1-chat`)."""
    cfg = model.config
    if getattr(cfg, "prompt_style", "default") != "default" or getattr(cfg.audio, "pad_to_max_windows", False):
        raise ValueError(f"model {cfg.name!r} uses AF1's prompt strings / audio slots (prompt_style="
                         f"{getattr(cfg, 'prompt_style', None)!r}); chat with it through `audioflamingo af1-chat` "
                         "(audioflamingo.compat.af1.af1_chat), not ChatSession or the server")


def concat_audio(a: AudioTokens | None, b: AudioTokens) -> AudioTokens:
    """Append the audios of `b` (one sample) after those of `a`: tokens (1, La+Lb, E), indices shifted."""
    if a is None:
        return b
    shift = int(a.audio_index.max()) + 1 if (a.audio_index >= 0).any() else 0
    index = torch.where(b.audio_index >= 0, b.audio_index + shift, b.audio_index)  # (1, Lb)
    return AudioTokens(torch.cat([a.tokens, b.tokens], 1), torch.cat([a.audio_index, index], 1))  # (1, La+Lb, E)


class ChatSession:
    """A multi-turn dialogue about one or more audios with a model.

        chat = ChatSession(model, ["dog.wav"])
        chat.ask("What do you hear?")
        chat.ask("Is it indoors?", stream=print)   # re-uses the audio and the cache
        chat.add_audio("cat.wav")                  # encodes only the new audio
        chat.reset()                               # forget the rounds, keep the audios

    `warnings` lists every change made to the input (audio resampled or cut, rounds dropped).
    """

    def __init__(self, model, audios=(), generation: GenerationConfig | str | None = None, **gen):
        from audioflamingo.model.inference import _gen_config, _is_audio

        check_chat_model(model)
        self.model = model
        self.tok = model.tokenizer
        self.bos = self.tok.bos_token or self.tok.eos_token
        if generation is None and "max_new_tokens" not in gen:
            gen = {**gen, "max_new_tokens": 64}  # a chat turn is short; the rest of the context keeps the history
        self.generation = _gen_config(generation, gen)
        self.clips: list = []
        self.audio: AudioTokens | None = None
        self.items: list = []
        self.warnings: list[str] = []
        self.cache = FlamingoCache()
        self.ids = torch.zeros(0, dtype=torch.long)  # (T,) the tokens in the cache
        sources = [audios] if _is_audio(audios) else list(audios)  # one source, or a list of them
        if sources:
            self._add_clips([model.load_clip(s) for s in sources])

    # audio ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def _add_clips(self, clips: list) -> None:
        new = self.model.encode_audio([clips])  # (1, L_new, E): only the new audios go through the encoder
        for c in clips:
            self.warnings.extend(c.warnings)
        self.audio = concat_audio(self.audio, new)
        # Extend each block's audio keys/values by the new audio's (the projection is per token, so this
        # equals recomputing them over all audios). Blocks not run yet compute theirs on first use.
        layers = {i: blk for i, blk in self._blocks()}
        for i, (k, v) in list(self.cache.audio_kv.items()):
            k_new, v_new = layers[i].audio_kv(new.tokens)  # (1, H, L_new, Dh) each
            self.cache.audio_kv[i] = (torch.cat([k, k_new], 2), torch.cat([v, v_new], 2))  # (1, H, L, Dh)
        for clip in clips:
            self.items.append(AudioMark(len(self.clips)))
            self.clips.append(clip)

    def _blocks(self):
        from audioflamingo.model.flamingo import decoder_layers

        return [(layer.index, layer.xattn) for layer in decoder_layers(self.model.lm) if layer.xattn is not None]

    @torch.no_grad()
    def add_audio(self, source) -> int:
        """Add an audio (path, bytes, Clip, (samples, rate)); its <audio> marker goes before the next
        question. -> its index in the session."""
        self._add_clips([self.model.load_clip(source)])
        return len(self.clips) - 1

    # history ----------------------------------------------------------------------------------------

    @property
    def rounds(self) -> list[tuple[str, str | None]]:
        return [(it.user, it.answer) for it in self.items if isinstance(it, Round)]

    @property
    def text(self) -> str:
        return dialogue_text(self.items, self.bos)

    def reset(self) -> None:
        """Forget every round (keep the audios, their encoding and keys/values)."""
        self.items = [AudioMark(i) for i in range(len(self.clips))]
        self.warnings = []

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        warnings.warn(message, ChatWarning, stacklevel=3)

    def _sync(self, ids: torch.Tensor) -> torch.Tensor:
        """Make the cache hold a prefix of `ids` (T,): keep the common prefix, crop the rest. -> the ids
        still to feed (the cache is not fed here)."""
        n = min(len(ids), len(self.ids))
        same = (ids[:n] == self.ids[:n]).long()
        k = int(same.cumprod(0).sum()) if n else 0
        if len(ids) > 0 and k == len(ids):
            k -= 1  # keep one token to feed: the next logits come from it
        if k < len(self.ids):
            if k == 0:
                self.cache = FlamingoCache(audio_kv=self.cache.audio_kv)  # the audio keys/values are text-free
            else:
                self.cache.lm_cache.crop(k - len(self.ids))  # a negative count removes that many tokens
                self.cache.attention_mask = self.cache.attention_mask[:, :k]  # (1, k)
                self.cache.media_count = (ids[:k] == self.model.media.audio).sum().view(1).to(self.model.device)  # (1,)
            self.ids = self.ids[:k]
        return ids[k:]

    def _feed(self, new: torch.Tensor) -> None:
        if len(new):
            dev = self.model.device
            self.model(new[None].to(dev), None, self.audio, cache=self.cache)  # new: (T_new,) -> (1, T_new)
            self.ids = torch.cat([self.ids, new])  # (T + T_new,)

    # asking -----------------------------------------------------------------------------------------

    @torch.no_grad()
    def ask(self, text: str, stream=None, **gen) -> str:
        """Ask `text`; `stream(delta: str)` is called as the answer grows. -> the answer."""
        from audioflamingo.model.inference import _gen_config

        cfg = _gen_config(self.generation, gen)
        if cfg.num_beams > 1:
            raise ValueError("chat decodes greedily or by sampling; num_beams > 1 is not supported")
        budget = self.model.config.lm.max_length - cfg.max_new_tokens - 1  # room for the answer and <|endofchunk|>
        items, ids, notes = fit_dialogue(self.items + [Round(text)], self.tok, budget, self.bos)
        for n in notes:
            self._warn(n)
        self.items = items
        new = self._sync(ids)
        dec = StreamDecoder(self.tok)

        def on_tokens(fresh):
            if fresh[0] is not None:
                delta = dec.push(fresh[0])
                if delta and stream is not None:
                    stream(delta)

        dev = self.model.device
        stop = {self.model.media.eoc, self.model.media.eos}
        before = self.cache.seq_len
        try:
            prompt = new[None].to(dev)  # (1, T_new): only the tokens the cache does not hold yet
            out = generate(self.model, prompt, torch.ones_like(prompt), self.audio, cfg, stop, on_tokens, cache=self.cache)[0]
        except BaseException:  # an error or Ctrl-C mid-answer: take the question back, the cache is rebuilt next time
            self.items.pop()
            self.cache = FlamingoCache(audio_kv=self.cache.audio_kv)
            self.ids = self.ids[:0]
            raise
        fed = self.cache.seq_len - before - len(new)  # generated tokens already in the cache
        self.ids = torch.cat([ids, torch.tensor(out[:fed], dtype=torch.long)])  # (T + fed,)
        rest = dec.finish()
        if rest and stream is not None:
            stream(rest)
        answer = dec.text
        self.items[-1].answer = answer
        full = encode(self.tok, dialogue_text(self.items, self.bos))[0]  # (T,) ends with <|endofchunk|>
        if len(full) <= self.model.config.lm.max_length:
            self._feed(self._sync(full))  # the answer as text + <|endofchunk|>: the next turn starts here
        return answer
