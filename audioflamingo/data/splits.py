"""Deduplicate, then split by group; hold some categories out of training for few-shot tests.

Order matters: duplicates are removed before splitting (6% of Debian's sounds are exact copies,
more are re-encoded copies), then whole groups (package + name stem, TTS sentence, music score,
mixture sources) go to one side, so no sound, sentence or score is in two splits.
"""

from __future__ import annotations

import hashlib
import math

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


def assign_splits(clips: list[dict], seed: int, balance: bool = False) -> None:
    """Set clip["split"] (train|val|test) and clip["heldout"] in place. A group with any held-out clip
    is held out whole, so a held-out category never leaks into training through a shared group.
    `balance`: then `balance_label_sets` (every closed label set gets evaluation groups)."""
    reasons: dict[str, set[str]] = {}
    for c in clips:
        for k, v in HELDOUT:
            if c["facts"].get(k) == v:
                reasons.setdefault(c["group"], set()).add(f"{k}={v}")
    for c in clips:
        c["heldout"] = c["group"] in reasons
        c["heldout_reason"] = sorted(reasons.get(c["group"], ()))
        c["split"] = "test" if c["heldout"] else group_split(c["group"], seed)
    if balance:
        balance_label_sets(clips, seed)


def balance_label_sets(clips: list[dict], seed: int, keys=None) -> dict[str, list[str]]:
    """Move whole groups from train so that every closed label set is scored on enough groups.

    The hash split is blind to labels: a label set made of few groups (footstep surfaces: until 7 Dec 2026
    one group per surface and package, now one per take, data/sources.py; noise colours: one per colour and length) can end with one group, or none, in
    test (the standard plan at seed 0: footsteps 7 test items, all gravel; noise colour 0). For each label
    set with at least 6 groups, val and test each get at least max(2, ceil(10 %)) of its groups, taken
    from train in a seeded order, never a value's last train group (every evaluated value stays trained),
    values not yet in that split first; before that, a value with two or more groups and none in train gets
    one back in train. Returns {split: [moved groups]}. Changes clip["split"] in place.
    """
    from audioflamingo.data.tasks import LABEL_SETS

    moved: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for key in sorted(keys or LABEL_SETS):
        split_of: dict[str, str] = {}
        value_of: dict[str, str] = {}
        for c in clips:
            if key in c["facts"] and not c["heldout"]:
                split_of[c["group"]] = c["split"]
                value_of.setdefault(c["group"], str(c["facts"][key]))
        if len(split_of) < 6:
            continue
        # a value with several groups but none in train would be scored without ever being trained
        # (footstep 'dirt' at seed 0: both of its groups in val): one of its groups goes back to train
        by_value: dict[str, list[str]] = {}
        for g in sorted(split_of, key=lambda g: hashlib.sha1(f"balance|{seed}|{key}|train|{g}".encode()).hexdigest()):
            by_value.setdefault(value_of[g], []).append(g)
        for v, groups in sorted(by_value.items()):
            if len(groups) >= 2 and all(split_of[g] != "train" for g in groups):
                split_of[groups[0]] = "train"
                moved["train"].append(groups[0])
        want = max(2, math.ceil(0.1 * len(split_of)))
        for target in ("test", "val"):
            have = [g for g, sp in split_of.items() if sp == target]
            order = sorted((g for g, sp in split_of.items() if sp == "train"),
                           key=lambda g: hashlib.sha1(f"balance|{seed}|{key}|{target}|{g}".encode()).hexdigest())
            while len(have) < want:
                train_groups = {}
                for g, sp in split_of.items():
                    if sp == "train":
                        train_groups.setdefault(value_of[g], []).append(g)
                seen = {value_of[g] for g in have}
                movable = [g for g in order if split_of[g] == "train" and len(train_groups[value_of[g]]) >= 2]
                if not movable:
                    break
                g = next((g for g in movable if value_of[g] not in seen), movable[0])
                split_of[g] = target
                have.append(g)
                moved[target].append(g)
        for c in clips:
            if c["group"] in split_of:
                c["split"] = split_of[c["group"]]
    return moved


def fewshot_role(group: str, seed: int) -> str:
    """Held-out groups are halved into few-shot support examples and queries, by group."""
    h = int(hashlib.sha1(f"fewshot|{seed}|{group}".encode()).hexdigest()[:8], 16)
    return "support" if h % 2 == 0 else "query"
