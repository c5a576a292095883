"""Turn one clip's true facts into training items: captions, classification, tagging, AQA, transcription,
dialogues. Every answer is computed from the facts (path rules, synthesis parameters) or from
measurements of the rendered audio (duration, level), never guessed.
"""

from __future__ import annotations

import hashlib
import random

# closed label sets: fact key -> (label-set name, question asked)
LABEL_SETS = {
    "category": ("sound_event", ["What kind of sound is this?", "Classify this sound.", "What sound event is heard?"]),
    "instrument": ("instrument", ["Which instrument is playing?", "What instrument is heard?", "Name the instrument."]),
    "language": ("language", ["What language is spoken?", "Which language is this speech in?"]),
    "gender": ("speaker_gender", ["Is the speaker male or female?", "What is the gender of the voice?"]),
    "chord_quality": ("chord_quality", ["What is the quality of this chord?", "Is this chord major, minor or something else?"]),
    "style": ("music_style", ["What style of groove is this?", "Which rhythm style does the drum part play?"]),
    "tempo_class": ("tempo", ["Is the tempo slow, moderate or fast?"]),
    "noise_colour": ("noise_colour", ["What colour of noise is this?"]),
    "direction": ("sweep_direction", ["Does the tone rise or fall?"]),
    "surface": ("footstep_surface", ["What surface are the footsteps on?"]),
}
COUNT_FACTS = {"beep_count": "How many beeps are there?", "note_count": "How many notes are played?",
               "event_count": "How many distinct sound events occur?"}
CAPTION_PROMPTS = ["Describe the sound in a sentence.", "Generate an audio caption.", "What do you hear?"]
LONG_PROMPTS = ["Describe the sound at length.", "Describe the audio in detail."]
TAG_PROMPTS = ["Generate tags.", "Use a few labels to describe this sound."]
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _rng(uid: str, seed: int) -> random.Random:
    return random.Random(int(hashlib.sha1(f"{seed}:{uid}".encode()).hexdigest()[:12], 16))


def level_word(dbfs: float) -> str:
    return "quiet" if dbfs < -35 else "loud" if dbfs > -15 else "moderately loud"


def short_caption(facts: dict) -> str:
    p = facts["phrase"]
    return p[0].upper() + p[1:] + "."


def long_caption(facts: dict, duration: float, dbfs: float) -> str:
    parts = [short_caption(facts)]
    if "transcript" in facts:
        parts.append(f'The words are: "{facts["transcript"]}".')
    if "event_order" in facts:
        parts.append("In order: " + ", then ".join(facts["event_order"]) + ".")
    if "tempo_bpm" in facts:
        parts.append(f"The meter is {facts['meter']}.")
    if facts.get("real_speech"):
        parts.append("It is a recorded telephone prompt.")
    parts.append(f"The clip lasts about {duration:.1f} seconds and is {level_word(dbfs)}.")
    return " ".join(parts)


def label_sets(candidates_facts: list[dict]) -> dict[str, list[str]]:
    """Every closed label set's values, over all clips (the OPTIONS and yes/no distractors come from here)."""
    sets: dict[str, set] = {}
    for facts in candidates_facts:
        for key, (name, _) in LABEL_SETS.items():
            if key in facts:
                sets.setdefault(name, set()).add(str(facts[key]))
    return {k: sorted(v) for k, v in sets.items()}


def make_items(clip: dict, sets: dict[str, list[str]], seed: int, per_clip: int = 4) -> list[dict]:
    """Items for one clip. `clip` has uid, audio, dataset, split, group, facts, provenance, duration, dbfs."""
    r = _rng(clip["uid"], seed)
    f, dur, db = clip["facts"], clip["duration"], clip["dbfs"]
    cands: list[dict] = []

    def add(task, prompt, answer, **extra):
        cands.append({"task": task, "prompt": prompt, "answer": answer, **extra})

    add("caption", r.choice(CAPTION_PROMPTS), short_caption(f))
    add("caption_long", r.choice(LONG_PROMPTS), long_caption(f, dur, db))
    tags = [str(f[k]) for k in LABEL_SETS if k in f]
    if len(tags) >= 2:
        add("tagging", r.choice(TAG_PROMPTS), ", ".join(tags), labels=tags)
    for key, (name, questions) in LABEL_SETS.items():
        if key not in f or len(sets.get(name, [])) < 2:
            continue
        label, pool = str(f[key]), sets[name]
        add("classification", r.choice(questions), label, label=label, label_set=name)
        others = [x for x in pool if x != label]
        opts = sorted(r.sample(others, min(3, len(others))) + [label], key=lambda _: r.random())
        add("classification", f"{r.choice(questions)} OPTIONS: {', '.join(opts)}.", label, label=label, label_set=name,
            options=opts)
        probe = label if r.random() < 0.5 else r.choice(others)
        noun = {"speaker_gender": "speaker", "sound_event": "sound"}.get(name, name.replace("_", " "))
        add("aqa", f"Is the {noun} {probe}? Answer yes or no.", "yes" if probe == label else "no",
            label_set=name)
    for key, question in COUNT_FACTS.items():
        if key in f:
            add("aqa", question, str(f[key]))
    if "digits" in f:
        add("transcription", "Which digits are dialled?", f["digits"])
    if "transcript" in f:
        add("transcription", r.choice(["Transcribe the speech.", "What is said?", "Write down the words."]), f["transcript"])
    if "event_order" in f:
        add("aqa", "Which sound happens first?", f["event_order"][0])
        add("aqa", "Which sound happens last?", f["event_order"][-1])
        if "loudest" in f:
            add("aqa", "Which sound is the loudest?", f["loudest"])
    if "key" in f:
        add("aqa", "What key is the music in?", f["key"])
    add("dialog", "", "", dialogue=_dialogue(f, dur, db, sets, r))

    keep = [c for c in cands if c["task"] in ("caption",)]  # every clip gets its caption
    rest = [c for c in cands if c not in keep]
    r.shuffle(rest)
    keep += rest[: max(0, per_clip - 1)]
    items = []
    for i, c in enumerate(keep):
        if c["task"] == "dialog":
            c["prompt"], c["answer"] = c["dialogue"][0]["user"], c["dialogue"][0]["assistant"]
        items.append({"id": f"{clip['uid']}#{i}", "audio": clip["audio"], "dataset": clip["dataset"], **c,
                      "split": clip["split"], "duration": round(dur, 3), "group": clip["group"],
                      "source": clip["kind"], "provenance": clip["provenance"]})
    return items


def _dialogue(f: dict, dur: float, db: float, sets: dict, r: random.Random) -> list[dict]:
    """Two to four rounds about one clip; each answer follows from the facts or measurements."""
    turns = [{"user": r.choice(["What is this sound?", "Can you tell me what you hear?"]), "assistant": short_caption(f)}]
    if "transcript" in f:
        turns.append({"user": "What exactly is said?", "assistant": f["transcript"]})
    keys = [k for k in LABEL_SETS if k in f and k != "category"]
    if keys:
        k = r.choice(keys)
        name = LABEL_SETS[k][0].replace("_", " ")
        turns.append({"user": f"What is the {name}?", "assistant": str(f[k])})
    turns.append({"user": "About how long is the clip?", "assistant": f"About {dur:.1f} seconds."})
    if r.random() < 0.5:
        turns.append({"user": "Is it quiet or loud?", "assistant": f"It is {level_word(db)}."})
    return turns[:4]
