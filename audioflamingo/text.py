"""Tokens, the one prompt template, and answer-only label masks.

AF1 spelled its template three slightly different ways (training, evaluation, inference); here every
path (training, ICL, chat, generation) builds text with the functions below.

    single:  BOS [The task is X. ] <audio> prompt \nAnswer: <SEP> answer <|endofchunk|> EOS
    ICL:     BOS Here are similar examples. (<audio> prompt \nAnswer: <SEP> answer <|endofchunk|>)*k  <query item>
    chat:    BOS The task is dialog. <audio> (user: u \nassistant: <SEP> a <|endofchunk|>)*rounds EOS \n
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

AUDIO = "<audio>"
EOC = "<|endofchunk|>"
SEP = "<SEP>"
MEDIA_TOKENS = [AUDIO, EOC, SEP]
ICL_PREFIX = "Here are similar examples. "
IGNORE = -100  # label value that the loss skips


# ----------------------------------------------------------------------------------------------------
# tokenizers


def build_byte_tokenizer():
    """A byte-level tokenizer (256 byte symbols + specials) built in code: no files, no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    byte_symbols = list(pre_tokenizers.ByteLevel.alphabet())  # the 256 printable stand-ins for bytes
    vocab = {s: i for i, s in enumerate(sorted(byte_symbols))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return _wrap(tok)


def train_bpe_tokenizer(texts, vocab_size: int = 2048):
    """Train a byte-level BPE on `texts` (an iterable of str) -> a tokenizer with our special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["</s>", "<pad>", *MEDIA_TOKENS],
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return _wrap(tok)


def _wrap(tok):
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="</s>", eos_token="</s>", pad_token="<pad>")
    return add_media_tokens(hf)


def add_media_tokens(tokenizer):
    """Add <audio>, <|endofchunk|>, <SEP> (and a pad token if the LM has none) to any HF tokenizer."""
    tokenizer.add_special_tokens({"additional_special_tokens": MEDIA_TOKENS})
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": "<pad>"})
    tokenizer.padding_side = "left"  # generation pads on the left; training builds its own batches
    return tokenizer


def load_tokenizer(spec: str | Path):
    """'byte' -> the built-in byte tokenizer; a directory -> a saved HF tokenizer (offline only)."""
    if str(spec) == "byte":
        return build_byte_tokenizer()
    from transformers import AutoTokenizer

    path = Path(spec)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer {spec!r}: not 'byte' and not a local directory (nothing is downloaded)")
    return add_media_tokens(AutoTokenizer.from_pretrained(str(path), local_files_only=True))


@dataclass
class MediaIds:
    audio: int
    eoc: int
    sep: int
    bos: int
    eos: int
    pad: int

    @classmethod
    def of(cls, tokenizer) -> "MediaIds":
        ids = tokenizer.convert_tokens_to_ids(MEDIA_TOKENS)
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        return cls(ids[0], ids[1], ids[2], bos, tokenizer.eos_token_id, tokenizer.pad_token_id)


# ----------------------------------------------------------------------------------------------------
# the template


def _audio_prefix(prompt: str, n_audios: int) -> str:
    """Put one <audio> per audio before a prompt that has no explicit markers."""
    if AUDIO in prompt:
        found = prompt.count(AUDIO)
        if found != n_audios:
            raise ValueError(f"prompt has {found} {AUDIO} markers but {n_audios} audio(s) were given")
        return prompt
    return AUDIO * n_audios + prompt


def item_text(prompt: str, answer: str | None = None, n_audios: int = 1) -> str:
    """One (audio, prompt, answer) chunk; answer None -> ends after <SEP>, ready to generate."""
    text = _audio_prefix(prompt, n_audios) + "\nAnswer:" + SEP
    return text if answer is None else text + answer + EOC


def single_text(prompt, answer=None, task=None, n_audios=1, bos="</s>", eos="</s>") -> str:
    head = bos + (f"The task is {task}. " if task else "")
    body = item_text(prompt, answer, n_audios)
    return head + body + (eos if answer is not None else "")


def icl_text(shots: list[tuple[str, str]], prompt: str, answer=None, bos="</s>", eos="</s>", n_audios=1) -> str:
    """shots: [(prompt, answer)] (each with one audio), then the query (its audios come last)."""
    text = bos + ICL_PREFIX + "".join(item_text(p, a) for p, a in shots)
    return text + item_text(prompt, answer, n_audios) + (eos if answer is not None else "")


def chat_text(rounds: list[tuple[str, str | None]], n_audios=1, bos="</s>", eos="</s>") -> str:
    """rounds: [(user, assistant)]; the last assistant may be None (to generate it)."""
    text = bos + "The task is dialog. " + AUDIO * n_audios
    for user, assistant in rounds:
        text += f"user: {user} \nassistant: " + SEP
        if assistant is None:
            return text
        text += assistant + EOC
    return text + eos + "\n"


# ----------------------------------------------------------------------------------------------------
# labels


def answer_labels(ids: torch.Tensor, media: MediaIds) -> torch.Tensor:
    """(T,) token ids -> (T,) labels: ids after each <SEP> through <|endofchunk|> (and a following EOS),
    IGNORE elsewhere. An answer that never reaches its <|endofchunk|> (cut by truncation) gets none."""
    labels = torch.full_like(ids, IGNORE)
    ids_list = ids.tolist()
    start = None
    for i, tok in enumerate(ids_list):
        if tok == media.sep:
            start = i + 1
        elif tok == media.eoc and start is not None:
            labels[start : i + 1] = ids[start : i + 1]
            if i + 1 < len(ids_list) and ids_list[i + 1] == media.eos:
                labels[i + 1] = ids[i + 1]
            start = None
    return labels


def encode(tokenizer, text: str, max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """text -> ((T,) ids, (T,) labels); truncated on the right to max_length."""
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)  # (T,)
    if max_length is not None and len(ids) > max_length:
        ids = ids[:max_length]  # (max_length,)
    return ids, answer_labels(ids, MediaIds.of(tokenizer))


def pad_batch(seqs: list[torch.Tensor], pad_value: int, side: str = "left") -> tuple[torch.Tensor, torch.Tensor]:
    """list of (T_i,) -> ((B, T) padded, (B, T) attention mask: 1 = real token)."""
    T = max(len(s) for s in seqs)
    out = torch.full((len(seqs), T), pad_value, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)  # (B, T)
    for i, s in enumerate(seqs):
        if side == "left":
            out[i, T - len(s) :], mask[i, T - len(s) :] = s, 1
        else:
            out[i, : len(s)], mask[i, : len(s)] = s, 1
    return out, mask
