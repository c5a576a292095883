"""Answer parsers: free generated text -> the answer a metric compares.

A parser is `parse(text, options) -> Parsed(answer, matched)`. `matched` is False when the text
did not contain a usable answer (the answer is then the cleaned raw text, which scores as wrong
for classification): the report counts these "format failures". Parsers whose `canonical` is True
(yes_no, number, label) are also applied to the references, so "Three" matches "3".
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Callable

from audioflamingo.eval.metrics.classification import normalize_label

_END_MARKERS = ("<|endofchunk|>", "</s>", "<SEP>")


@dataclass
class Parsed:
    answer: str
    matched: bool = True


def clean(text: str) -> str:
    """Cut at the first end-of-answer marker and strip whitespace."""
    for marker in _END_MARKERS:
        text = text.split(marker, 1)[0]
    return text.strip()


def parse_text(text: str, options=None) -> Parsed:
    """Captions, transcripts, open answers: the cleaned text."""
    return Parsed(clean(text))


def parse_label(text: str, options=None) -> Parsed:
    """Classification without options: the normalised label."""
    return Parsed(normalize_label(clean(text)))


def parse_option(text: str, options: list[str] | None) -> Parsed:
    """Pick one of `options`: exact match; else the longest option contained in the text as whole
    words; else the single option that contains the text; else the closest option by character
    similarity if it is at least 0.8 alike. No match -> (normalised text, matched=False)."""
    answer = normalize_label(clean(text))
    if not options:
        return Parsed(answer, matched=False)
    normed = {normalize_label(o): o for o in options}
    if answer in normed:
        return Parsed(normalize_label(normed[answer]))
    contained = [n for n in normed if n and re.search(rf"(?<!\w){re.escape(n)}(?!\w)", answer)]
    if contained:
        return Parsed(max(contained, key=len))
    containing = [n for n in normed if answer and answer in n]
    if len(containing) == 1:
        return Parsed(containing[0])
    close = difflib.get_close_matches(answer, list(normed), n=1, cutoff=0.8)
    if close:
        return Parsed(close[0])
    return Parsed(answer, matched=False)


_YES = {"yes", "yeah", "yep", "true", "correct"}
_NO = {"no", "nope", "not", "false", "incorrect"}


def parse_yes_no(text: str, options=None) -> Parsed:
    """'Yes, it is.' -> 'yes'; the first yes-like or no-like word decides."""
    for word in re.findall(r"[a-z]+", clean(text).lower()):
        if word in _YES:
            return Parsed("yes")
        if word in _NO:
            return Parsed("no")
    return Parsed(normalize_label(clean(text)), matched=False)


_NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
}
_NUMBER_WORDS.update({"none": 0, "once": 1, "twice": 2, "thrice": 3, "a couple": 2, "a dozen": 12})


def parse_number(text: str, options=None) -> Parsed:
    """The first number, written in digits or words (zero..twenty, once/twice), as canonical digits."""
    low = clean(text).lower()
    candidates = [(m.start(), m.group()) for m in re.finditer(r"-?\d+(?:\.\d+)?", low)]
    for word, value in _NUMBER_WORDS.items():
        m = re.search(rf"(?<![a-z]){word}(?![a-z])", low)
        if m:
            candidates.append((m.start(), str(value)))
    if not candidates:
        return Parsed(normalize_label(low), matched=False)
    value = min(candidates)[1]
    number = float(value)
    return Parsed(str(int(number)) if number.is_integer() else str(number))


def parse_labels(text: str, options: list[str] | None = None) -> Parsed:
    """Multi-label answers 'dog, bark; music and speech' -> 'bark, dog, music, speech' (sorted, unique;
    restricted to `options` through `parse_option` when options are given)."""
    parts = [p for p in re.split(r",|;|\band\b|\n", clean(text)) if p.strip()]
    labels = set()
    for p in parts:
        parsed = parse_option(p, options) if options else Parsed(normalize_label(p))
        if parsed.answer and (parsed.matched or not options):
            labels.add(parsed.answer)
    return Parsed(", ".join(sorted(labels)), matched=bool(labels))


@dataclass(frozen=True)
class Parser:
    fn: Callable[[str, list[str] | None], Parsed]
    canonical: bool  # also applied to references


PARSERS: dict[str, Parser] = {
    "text": Parser(parse_text, canonical=False),
    "label": Parser(parse_label, canonical=True),
    "option": Parser(parse_option, canonical=False),
    "yes_no": Parser(parse_yes_no, canonical=True),
    "number": Parser(parse_number, canonical=True),
    "labels": Parser(parse_labels, canonical=False),
}


def get_parser(name: str) -> Parser:
    try:
        return PARSERS[name]
    except KeyError:
        raise ValueError(f"unknown answer parser {name!r}; known: {', '.join(PARSERS)}") from None
