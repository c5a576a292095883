"""Synthetic music with known instrument, chord quality, note count, tempo, groove and key.

Parameters are drawn from a seeded generator, written as a Standard MIDI File (format 0, written
here: it is a few bytes of header and delta-timed events) and rendered with the fluidsynth command
line and a General MIDI soundfont from Debian (`fluid-soundfont-gm`).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from audioflamingo.data.sources import Candidate

# General MIDI programs (0-based) and the plain instrument name used as the label
INSTRUMENTS = {0: "piano", 4: "electric piano", 11: "vibraphone", 13: "xylophone", 19: "organ", 24: "guitar",
               32: "bass guitar", 40: "violin", 42: "cello", 46: "harp", 56: "trumpet", 57: "trombone",
               65: "saxophone", 71: "clarinet", 73: "flute", 21: "accordion"}
CHORDS = {"major": (0, 4, 7), "minor": (0, 3, 7), "diminished": (0, 3, 6), "augmented": (0, 4, 8),
          "dominant seventh": (0, 4, 7, 10), "major seventh": (0, 4, 7, 11), "minor seventh": (0, 3, 7, 10)}
NOTE_NAMES = ("C", "C sharp", "D", "E flat", "E", "F", "F sharp", "G", "A flat", "A", "B flat", "B")
# groove: (beats per bar, drum hits per bar as (beat position, GM drum note))
GROOVES = {
    "rock": (4, [(0, 36), (1, 38), (2, 36), (3, 38)] + [(b / 2, 42) for b in range(8)]),
    "waltz": (3, [(0, 36), (1, 42), (2, 42)]),
    "march": (2, [(0, 36), (0.5, 38), (1, 36), (1.5, 38), (1.75, 38)]),
    "swing": (4, [(0, 51), (1, 51), (1 + 2 / 3, 51), (2, 51), (3, 51), (3 + 2 / 3, 51), (1, 44), (3, 44)]),
    "bossa nova": (4, [(0, 36), (1.5, 36), (2, 36), (3.5, 36), (0, 37), (0.75, 37), (1.5, 37), (2.5, 37), (3.25, 37)]),
}
SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/TimGM6mb.sf2")


def find_soundfont() -> str | None:
    return next((s for s in SOUNDFONTS if Path(s).exists()), None)


def music_available() -> bool:
    return shutil.which("fluidsynth") is not None and find_soundfont() is not None


def music_candidates(n: int, rng: np.random.Generator, varied_chords: bool = False) -> list[Candidate]:
    """n clips cycling through: one chord, a run of N notes, a chord progression over a groove.
    A chord is fixed by instrument, root and quality (2 s, one loudness, one octave), so deduplication keeps
    at most one clip per combination; `varied_chords` draws its length (1.5-3 s), loudness and octave too,
    so every chord clip is distinct (the split group stays instrument + root + quality)."""
    progs = sorted(INSTRUMENTS)
    out = []
    for i in range(n):
        form = ("chord", "notes", "piece")[i % 3]
        prog = int(progs[int(rng.integers(len(progs)))])
        inst = INSTRUMENTS[prog]
        root = int(rng.integers(0, 12))
        p: dict = {"op": "midi", "program": prog, "form": form}
        if form == "chord":
            quality = sorted(CHORDS)[int(rng.integers(len(CHORDS)))]
            if varied_chords:
                p.update(root=36 + 12 * int(rng.integers(0, 3)) + root, quality=quality, seconds=round(float(rng.uniform(1.5, 3.0)), 2),
                         velocity=int(rng.integers(60, 121)))
            else:
                p.update(root=48 + root, quality=quality, seconds=2.0)
            facts = {"instrument": inst, "chord_quality": quality, "root": NOTE_NAMES[root],
                     "phrase": f"{_a(NOTE_NAMES[root])} {quality} chord played on {_a(inst)}"}
            group = f"chord:{prog}:{root}:{quality}"
        elif form == "notes":
            count = int(rng.integers(1, 9))
            tempo = int(rng.choice([80, 100, 120, 140]))
            pitches = [int(48 + root + rng.choice([0, 2, 4, 5, 7, 9, 11, 12])) for _ in range(count)]
            p.update(pitches=pitches, tempo=tempo)
            facts = {"instrument": inst, "note_count": count,
                     "phrase": f"{count} separate note{'s' if count > 1 else ''} played on {_a(inst)}"}
            group = f"notes:{prog}:{'-'.join(map(str, pitches))}"
        else:
            mode = "major" if rng.random() < 0.5 else "minor"
            groove = sorted(GROOVES)[int(rng.integers(len(GROOVES)))]
            tempo = int(rng.integers(70, 161))
            p.update(root=48 + root, mode=mode, groove=groove, tempo=tempo, bars=4)
            key = f"{NOTE_NAMES[root]} {mode}"
            speed = "slow" if tempo < 95 else "fast" if tempo > 135 else "moderate"
            facts = {"instrument": inst, "key": key, "tempo_bpm": tempo, "tempo_class": speed, "style": groove,
                     "meter": f"{GROOVES[groove][0]}/4",
                     "phrase": f"a {speed} {groove} groove in {key} with {_a(inst)} and drums at {tempo} beats per minute"}
            group = f"piece:{prog}:{root}:{mode}:{groove}:{tempo}"
        out.append(Candidate(f"music/{form}_{i:05d}", "synth-music", "music" if form == "piece" else "instrument",
                             group, facts, {"synthesis": p, "soundfont": Path(find_soundfont() or "none").name}, p))
    return out


def _a(word: str) -> str:
    """'a'/'an' + word; note names A, E and F are read with a vowel sound ("an F sharp")."""
    vowel = word[0] in "aeiou" or (word[0] in "AEF" and (len(word) == 1 or word[1] == " "))
    return ("an " if vowel else "a ") + word


# ----------------------------------------------------------------------------------------------------
# MIDI writing

TPB = 480  # ticks per beat


def _vlq(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(reversed(out))


def events_for(p: dict) -> tuple[list[tuple[float, bytes]], int, float]:
    """(time_in_beats, midi message) events, tempo in bpm, total length in beats for one clip."""
    ev: list[tuple[float, bytes]] = [(0.0, bytes([0xC0, p["program"]]))]
    note = lambda t, d, k, v=96, ch=0: [(t, bytes([0x90 | ch, k, v])), (t + d, bytes([0x80 | ch, k, 0]))]  # noqa: E731
    if p["form"] == "chord":
        tempo, length = 60, p["seconds"]
        for k in CHORDS[p["quality"]]:
            ev += note(0.1, p["seconds"] - 0.4, p["root"] + k, p.get("velocity", 96))
    elif p["form"] == "notes":
        tempo = p["tempo"]
        for j, k in enumerate(p["pitches"]):
            ev += note(0.5 + j, 0.6, k)
        length = len(p["pitches"]) + 1.5
    else:
        tempo = p["tempo"]
        beats, hits = GROOVES[p["groove"]]
        third = 3 if p["mode"] == "minor" else 4
        degrees = [(0, third), (5, 4 if p["mode"] == "major" else 3), (7, 4), (0, third)]  # I IV V I
        for bar, (deg, th) in enumerate(degrees[: p["bars"]]):
            t0 = bar * beats
            for k in (0, th, 7):
                ev += note(t0, beats * 0.95, p["root"] + deg + k, 80)
            ev += note(t0, beats * 0.95, p["root"] + deg - 12, 80)
            ev += [(t0 + pos, bytes([0x99, d, 90])) for pos, d in hits]
            ev += [(t0 + pos + 0.1, bytes([0x89, d, 0])) for pos, d in hits]
        length = p["bars"] * beats + 0.5
    return ev, tempo, length


def write_midi(path: Path, events: list[tuple[float, bytes]], tempo: int) -> None:
    events = sorted(events, key=lambda e: (e[0], e[1][0] & 0xF0 == 0x90))  # note-offs before note-ons
    body = _vlq(0) + b"\xff\x51\x03" + int(60_000_000 / tempo).to_bytes(3, "big")
    last = 0
    for t, msg in events:
        tick = int(round(t * TPB))
        body += _vlq(tick - last) + msg
        last = tick
    body += _vlq(0) + b"\xff\x2f\x00"
    Path(path).write_bytes(b"MThd" + struct.pack(">IHHH", 6, 0, 1, TPB) + b"MTrk" + struct.pack(">I", len(body)) + body)


def render_music(p: dict, rate: int) -> np.ndarray:
    return render_music_batch([p], rate)[0]


def render_music_batch(ps: list[dict], rate: int, gap_s: int = 3) -> list[np.ndarray]:
    """Render many clips with one fluidsynth run (loading the soundfont dominates a single render).

    Clips are laid end to end in one MIDI file at 60 bpm (one beat = one second), each starting on a
    whole second after an all-sound-off, with `gap_s` seconds of silence for release tails; then the
    rendering is cut back into clips. At rates that are multiples of 64 (fluidsynth's block) every clip
    starts on a block boundary, so a clip renders the same whatever batch it is in."""
    from audioflamingo.data.audiofile import decode

    sf2 = find_soundfont()
    if sf2 is None or shutil.which("fluidsynth") is None:
        raise RuntimeError("music synthesis needs fluidsynth and fluid-soundfont-gm (apt-get install fluidsynth fluid-soundfont-gm)")
    events: list[tuple[float, bytes]] = []
    spans = []
    cursor = 1
    for p in ps:
        ev, tempo, length = events_for(p)
        seconds = length * 60 / tempo + 0.5  # the piece plus half a second of release
        events += [(cursor - 0.5, bytes([0xB0 | ch, 120, 0])) for ch in (0, 9)]  # all sound off
        events += [(cursor + t * 60 / tempo, msg) for t, msg in ev]
        spans.append((cursor, seconds))
        cursor += int(np.ceil(seconds)) + gap_s
    with tempfile.TemporaryDirectory() as tmp:
        mid, wav = Path(tmp) / "m.mid", Path(tmp) / "m.wav"
        write_midi(mid, events, 60)
        subprocess.run(["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.6", "-r", str(rate), "-F", str(wav), sf2,
                        str(mid)], capture_output=True, check=True, timeout=600)
        x = decode(wav, rate)
    out = []
    for start, seconds in spans:
        clip = x[start * rate : start * rate + int(seconds * rate)].copy()
        fade = min(len(clip), int(0.05 * rate))
        clip[len(clip) - fade :] *= np.linspace(1, 0, fade, dtype=np.float32)
        out.append(clip)
    return out
