"""Deduplicate, then split by group; hold some categories out of training for few-shot tests.

Order matters: duplicates are removed before splitting (6% of Debian's sounds are exact copies,
more are re-encoded copies), then whole groups (package + name stem, TTS sentence, music score,
mixture sources) go to one side, so no sound, sentence or score is in two splits.
"""

from __future__ import annotations

import hashlib

# (fact, value) pairs that never appear in train/val/test: they go to the few-shot manifests instead.
HELDOUT = (
    ("category", "glass breaking"),
    ("category", "door"),
    ("category", "bell"),
    ("surface", "snow"),
    ("instrument", "cowbell"),
    ("instrument", "harpsichord"),
    ("instrument", "trombone"),
    ("style", "bossa nova"),
)
FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def is_heldout(facts: dict) -> bool:
    return any(facts.get(k) == v for k, v in HELDOUT)


def dedup(clips: list[dict]) -> tuple[list[dict], dict[str, str]]:
    """Keep the first clip (by uid) of every exact-PCM hash and of every decoded-audio fingerprint.

    Returns (kept clips, {dropped uid: uid it duplicates})."""
    seen: dict[str, str] = {}
    kept, dropped = [], {}
    for c in sorted(clips, key=lambda c: c["uid"]):
        keys = ("pcm:" + c["pcm_hash"], "fp:" + c["fingerprint"])
        dup = next((seen[k] for k in keys if k in seen), None)
        if dup is not None:
            dropped[c["uid"]] = dup
            continue
        for k in keys:
            seen[k] = c["uid"]
        kept.append(c)
    return kept, dropped


def group_split(group: str, seed: int) -> str:
    """train/val/test for a group, by a seeded hash: stable when other groups are added or removed."""
    h = int(hashlib.sha1(f"{seed}|{group}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    if h < FRACTIONS["train"]:
        return "train"
    return "val" if h < FRACTIONS["train"] + FRACTIONS["val"] else "test"


def assign_splits(clips: list[dict], seed: int) -> None:
    """Set clip["split"] (train|val|test) and clip["heldout"] in place. A group with any held-out clip
    is held out whole, so a held-out category never leaks into training through a shared group."""
    reasons: dict[str, set[str]] = {}
    for c in clips:
        for k, v in HELDOUT:
            if c["facts"].get(k) == v:
                reasons.setdefault(c["group"], set()).add(f"{k}={v}")
    for c in clips:
        c["heldout"] = c["group"] in reasons
        c["heldout_reason"] = sorted(reasons.get(c["group"], ()))
        c["split"] = "test" if c["heldout"] else group_split(c["group"], seed)


def fewshot_role(group: str, seed: int) -> str:
    """Held-out groups are halved into few-shot support examples and queries, by group."""
    h = int(hashlib.sha1(f"fewshot|{seed}|{group}".encode()).hexdigest()[:8], 16)
    return "support" if h % 2 == 0 else "query"
