"""Text normalisers used by the metrics: the COCO caption tokeniser and the ASR normaliser.

COCO caption tokenisation (`coco_tokenize`)
-------------------------------------------
The caption metrics of `pycocoevalcap` (CIDEr-D, BLEU, ROUGE-L, METEOR) are always reported on text
that went through its `PTBTokenizer`: Stanford CoreNLP 3.4.1's PTB tokeniser run in Java with
`-preserveLines -lowerCase`, after which the tokens `'' ' `` ` . ? ! , : - -- ... ;` are dropped.
We reimplement that in Python so no Java is needed. What it does, in order:

1. newlines become spaces; typographic quotes, dashes and the ellipsis character become ASCII;
2. each whitespace-separated chunk is split PTB-style: opening quotes and brackets, and closing
   quotes, brackets, `, ; : % ! ? ...` and `-` are split off; a final `.` is split off unless the
   word is an abbreviation (`mr.`, `etc.`, `e.g.`, `u.s.`, `p.m.`, a capital initial `J.`, or a
   single letter `a.` that is not the last word); `$` is split from a following digit; a comma
   between two letters splits the word (`dogs,cats`), commas in numbers do not (`1,000`);
3. clitics are split off the word: `n't 's 're 've 'll 'd 'm` (`don't` -> `do n't`, `can't` ->
   `ca n't`, `won't` -> `wo n't`, `dog's` -> `dog 's`), and PTB's fixed splits `cannot` -> `can not`,
   `gonna` -> `gon na`, `wanna` -> `wan na`, `gotta` -> `got ta`, `gimme` -> `gim me`,
   `lemme` -> `lem me`;
4. brackets become `-lrb- -rrb- -lsb- -rsb- -lcb- -rcb-`, everything is lowercased, and quote tokens
   plus the punctuation list above are removed.

Faithful quirks (kept so numbers match published ones): pycocoevalcap's list names `-LRB-` etc.
in capitals but the tokens are lowercased first, so `-lrb-`/`-rrb-` (and the square and curly
bracket tokens) stay in the text; runs such as `!!` or `?!` are one token and stay too. No British
-> American spelling change is made (CoreNLP 3.4.1 does none either: "colour" stays "colour").
Known differences from the Java tokeniser, all rare in captions: its full abbreviation list, URLs,
e-mail addresses, emoticons, `<`/`>`/`=`/`+` splitting and unicode fractions are not reproduced.
A test checks equality with the Java tokeniser on a fixture of real-looking captions whenever
`java` and `pycocoevalcap` are installed.

ASR normalisation (`asr_normalize`), used by WER and CER
--------------------------------------------------------
Unicode NFKC; lowercase; bracketed annotations `[noise]`, `(laughs)`, `<unk>` removed; hyphens,
underscores and slashes become spaces; apostrophes inside a word are kept (`don't`), others
dropped; every other character that is not a letter, digit or space is dropped; whitespace
collapsed. Numbers are NOT spelled out and spellings are not unified: "10" and "ten" differ.
"""

from __future__ import annotations

import re
import unicodedata

# tokens pycocoevalcap drops after tokenising (its list, minus the capitalised bracket names that
# can never match lowercased text)
COCO_DROP = {"''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";"}

_ASCII_MAP = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"',
    "\u2013": " -- ", "\u2014": " -- ", "\u2026": "...", "\u00a0": " ",
}
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "inc", "ltd", "co", "corp", "prof",
    "gen", "sen", "rep", "gov", "mt", "ft", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep",
    "sept", "oct", "nov", "dec", "no", "approx", "dept", "est", "fig", "min", "max",
}
_FIXED_SPLITS = {
    "cannot": ["can", "not"], "gonna": ["gon", "na"], "wanna": ["wan", "na"], "gotta": ["got", "ta"],
    "gimme": ["gim", "me"], "lemme": ["lem", "me"],
}
_CLITIC = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$", re.IGNORECASE)
_ACRONYM = re.compile(r"^([A-Za-z]\.){2,}$")  # u.s. e.g. p.m.
_OPENERS = ('"', "`", "'", "(", "[", "{")
_CLOSERS = ('"', "'", "`", ")", "]", "}", ",", ";", ":", "%")


def _split_period(word: str, last: bool) -> list[str]:
    """`word` ends with '.': keep it on abbreviations, otherwise split it off."""
    stem = word[:-1]
    if not stem or word.endswith(".."):
        return [word]
    if _ACRONYM.match(word) or stem.lower() in _ABBREVIATIONS or (len(stem) == 1 and stem.isupper()):
        return [word]
    if len(stem) == 1 and stem.isalpha() and not last:
        return [word]
    return [stem, "."]


def _split_clitics(word: str) -> list[str]:
    low = word.lower()
    if low in _FIXED_SPLITS:
        return list(_FIXED_SPLITS[low])
    m = _CLITIC.match(word)
    if not m:
        return [word]
    stem, clitic = m.group(1), m.group(2)
    if clitic.lower() == "n't" and low in ("can't", "won't", "ain't"):
        return [stem[:2], clitic]  # ca n't, wo n't, ai n't
    return [stem, clitic]


def _split_chunk(chunk: str, last: bool) -> list[str]:
    head: list[str] = []
    tail: list[str] = []
    while chunk:
        if chunk.startswith(("...", "--")):
            n = 3 if chunk.startswith("...") else 2
            head.append(chunk[:n])
            chunk = chunk[n:]
        elif chunk[0] in _OPENERS + (",", ";", ":") and len(chunk) > 1:
            head.append(chunk[0])
            chunk = chunk[1:]
        elif chunk[0] == "$" and len(chunk) > 1 and chunk[1].isdigit():
            head.append("$")
            chunk = chunk[1:]
        else:
            break
    while chunk:
        if chunk.endswith(("...", "--")) and len(chunk) > 3:
            n = 3 if chunk.endswith("...") else 2
            tail.insert(0, chunk[-n:])
            chunk = chunk[:-n]
        elif chunk[-1] in "!?":
            run = len(chunk) - len(chunk.rstrip("!?"))
            if run == len(chunk):
                break
            tail.insert(0, chunk[-run:])
            chunk = chunk[:-run]
        elif chunk[-1] in _CLOSERS and len(chunk) > 1:
            tail.insert(0, chunk[-1])
            chunk = chunk[:-1]
        elif chunk[-1] == "-" and len(chunk) > 1:
            tail.insert(0, "-")
            chunk = chunk[:-1]
        elif chunk[-1] == "." and len(chunk) > 1 and not chunk.endswith(".."):
            parts = _split_period(chunk, last and not tail)
            if len(parts) == 1:
                break
            tail.insert(0, ".")
            chunk = parts[0]
        else:
            break
    middle: list[str] = []
    for piece in re.split(r"(?<=[^\W\d_]),(?=[^\W\d_])", chunk) if chunk else []:
        if middle:
            middle.append(",")
        middle.extend(_split_clitics(piece))
    return head + middle + tail


def ptb_tokens(text: str) -> list[str]:
    """PTB-style tokens of one line, lowercased, before pycocoevalcap drops punctuation."""
    for src, dst in _ASCII_MAP.items():
        text = text.replace(src, dst)
    chunks = text.replace("\n", " ").split()
    tokens: list[str] = []
    for i, chunk in enumerate(chunks):
        tokens.extend(_split_chunk(chunk, last=i == len(chunks) - 1))
    return [_BRACKETS.get(t, t).lower() for t in tokens]


def coco_tokenize(text: str) -> str:
    """pycocoevalcap's PTBTokenizer + punctuation removal, in Python: returns space-joined tokens."""
    return " ".join(t for t in ptb_tokens(text) if t not in COCO_DROP and set(t) - set("'`\""))


_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|<[^>]*>")


def asr_normalize(text: str) -> str:
    """The documented ASR normaliser (see the module docstring) used by `wer` and `cer`."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("\u2019", "'")
    text = _ANNOTATION.sub(" ", text)
    text = re.sub(r"[-_/]", " ", text)
    text = re.sub(r"(?<![^\W_])'|'(?![^\W_])", " ", text)  # apostrophes not inside a word
    text = "".join(c if (c.isalnum() or c.isspace() or c == "'") else " " for c in text)
    return " ".join(text.split())
