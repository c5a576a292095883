"""Real recordings from Debian packages, labelled only by per-source path rules.

Every rule maps a file path pattern inside a package to facts (a sound category, an instrument, a
surface, a transcript...) and a descriptive phrase. Nothing is guessed: a file that no rule matches
is skipped. See CORPUS.md: captions may only state labels from paths or metadata, synthesis
parameters, or measured properties.
"""

from __future__ import annotations

import gzip
import re
import sys
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from audioflamingo.data.debian import fetch_package, is_reserved, package_version

AUDIO_EXT = (".ogg", ".oga", ".wav", ".flac", ".wv", ".mp3", ".g722")


@dataclass
class Candidate:
    """One clip to put in the corpus: where it comes from, how to render it, and its true facts."""

    uid: str  # stable and unique: "<dataset>/<name>"
    dataset: str  # source name (a package, or a synthesis engine)
    kind: str  # sfx | instrument | speech | music | signal | mixture
    group: str  # split group: items of one group never land on two sides
    facts: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    render: dict = field(default_factory=dict)  # how to make the audio: {"op": ..., params}


def _stem_group(package: str, name: str) -> str:
    """Group = package + file stem without its take number: footstep.1 and footstep.2 stay together."""
    stem = Path(name).stem
    stem = re.sub(r"([._\-]?\d+)+$", "", stem)
    return f"{package}:{stem.lower()}"


# ----------------------------------------------------------------------------------------------------
# rules: (regex on the path inside the package, facts). Values may use regex groups as {1}, {2}.
# "phrase" becomes the short caption; "category" is the closed sound-event label.

FOOT = {"category": "footsteps", "surface": "{1}", "phrase": "footsteps on {1}"}
_0AD_SURFACES = [("grass", "grass"), ("gravel", "gravel"), ("sand", "sand"), ("snow", "snow"), ("wood", "wood"), ("rock", "stone")]

SFX_RULES: dict[str, list[tuple[str, dict]]] = {
    "minetest-data": [
        (r"default_(wood|gravel|grass|sand|snow|metal|dirt|ice|glass)_footstep", FOOT),
        (r"default_water_footstep", {"category": "water", "phrase": "footsteps splashing through water"}),
        (r"default_break_glass", {"category": "glass breaking", "phrase": "glass breaking"}),
        (r"doors_(steel_|glass_)?door_open", {"category": "door", "phrase": "a door opening"}),
        (r"doors_(steel_|glass_)?door_close", {"category": "door", "phrase": "a door closing"}),
        (r"doors_fencegate_open", {"category": "door", "phrase": "a gate opening"}),
        (r"doors_fencegate_close", {"category": "door", "phrase": "a gate closing"}),
        (r"fire_(fire|large|small)", {"category": "fire", "phrase": "a fire burning"}),
        (r"env_sounds_water", {"category": "water", "phrase": "flowing water"}),
        (r"tnt_explode", {"category": "explosion", "phrase": "an explosion"}),
        (r"default_dig_(choppy|cracky|crumbly)", {"category": "digging", "phrase": "digging"}),
        (r"default_gravel_dig", {"category": "digging", "phrase": "digging in gravel"}),
        (r"carts_cart_moving", {"category": "vehicle", "phrase": "a cart rolling on rails"}),
    ],
    "wordwarvi-sound": [
        (r"metalbang", {"category": "metal impact", "phrase": "a metal object being struck"}),
        (r"stonebang", {"category": "stone impact", "phrase": "stone being struck"}),
        (r"(big_explosion|bombexplosion|missile_explosion)", {"category": "explosion", "phrase": "an explosion"}),
        (r"(aaaah_it_burns|ooooof|ow_my_spine|fallingscreamhi)", {"category": "human voice", "phrase": "a person crying out"}),
        (r"volcano_eruption", {"category": "explosion", "phrase": "a volcanic eruption"}),
        (r"toyota_celica_cardoor", {"category": "door", "phrase": "a car door"}),
    ],
    "ufoai-sound": [
        (r"footsteps/(carpet|dirt|grass|gravel|sand|snow|stone|tile|wood|metal)\d*\.", FOOT),
        (r"footsteps/linoleum", {"category": "footsteps", "surface": "linoleum", "phrase": "footsteps on linoleum"}),
        (r"footsteps/splash", {"category": "water", "phrase": "splashing in water"}),
        (r"doors/door\d-open", {"category": "door", "phrase": "a door opening"}),
        (r"doors/door\d-close", {"category": "door", "phrase": "a door closing"}),
        (r"ambience/(fire\d*|smallfire|firesoft)\.", {"category": "fire", "phrase": "a fire burning"}),
        (r"ambience/(water\d*|waterfontain)\.", {"category": "water", "phrase": "running water"}),
        (r"ambience/thunder", {"category": "thunder", "phrase": "thunder"}),
        (r"ambience/arcticwind", {"category": "wind", "phrase": "wind blowing"}),
        (r"ambience/cricket_loop", {"category": "animal", "animal": "cricket", "phrase": "crickets chirping"}),
    ],
    "teeworlds-data": [
        (r"foley_foot_(left|right)", {"category": "footsteps", "phrase": "a footstep"}),
        (r"wp_(gun|shotty)_fire", {"category": "gunshot", "phrase": "a gun being fired"}),
        (r"wp_flump_explo|wp_grenade_explo", {"category": "explosion", "phrase": "an explosion"}),
        (r"vo_teefault_pain", {"category": "human voice", "phrase": "a cry of pain"}),
    ],
    "frozen-bubble-data": [
        (r"snd/applause", {"category": "applause", "phrase": "applause"}),
        (r"snd/snore", {"category": "human voice", "phrase": "snoring"}),
        (r"snd/typewriter", {"category": "typing", "phrase": "a typewriter"}),
    ],
    # 0 A.D.: audio lives inside mods/public/public.zip (paths below are zip members)
    "0ad-data": [
        # (file name's surface, label): "rock" is the label set's "stone"
        *[(rf"singlesteps/fs_{name}_?\d", {**FOOT, "surface": s, "phrase": f"footsteps on {s}"}) for name, s in _0AD_SURFACES],
        *[(rf"Footsteps/Foo[rt]step_{name.title()}_(Walking|Running)", {**FOOT, "surface": s, "phrase": f"footsteps on {s}"})
          for name, s in _0AD_SURFACES],
        (r"movement/hstep_(run_)?dirt", {**FOOT, "surface": "dirt", "phrase": "footsteps on dirt"}),
        (r"mounted/movement/mstep", {"category": "animal", "animal": "horse", "phrase": "a horse's hooves"}),
        (r"fauna/animal/cattle_", {"category": "animal", "animal": "cow", "phrase": "a cow mooing"}),
        (r"fauna/animal/chicken_", {"category": "animal", "animal": "chicken", "phrase": "a chicken clucking"}),
        (r"fauna/animal/horse_", {"category": "animal", "animal": "horse", "phrase": "a horse"}),
        (r"fauna/animal/pig_", {"category": "animal", "animal": "pig", "phrase": "a pig"}),
        (r"fauna/animal/sheep_", {"category": "animal", "animal": "sheep", "phrase": "sheep bleating"}),
        (r"fauna/death/goat_", {"category": "animal", "animal": "goat", "phrase": "a goat bleating"}),
        (r"fauna/animal/elephant_", {"category": "animal", "animal": "elephant", "phrase": "an elephant"}),
        (r"fauna/animal/lion_", {"category": "animal", "animal": "lion", "phrase": "a lion roaring"}),
        (r"fauna/animal/peacock_", {"category": "animal", "animal": "peacock", "phrase": "a peacock calling"}),
        (r"voice/global/civ_dog_bark", {"category": "animal", "animal": "dog", "phrase": "a dog barking"}),
        (r"human/death/male_death_", {"category": "human voice", "phrase": "a man crying out in pain"}),
        (r"human/death/female_death_", {"category": "human voice", "phrase": "a woman crying out in pain"}),
        (r"weather/rain_", {"category": "rain", "phrase": "rain falling"}),
        (r"weather/thunder_", {"category": "thunder", "phrase": "thunder"}),
        (r"weather/wind(gust|storm)?_", {"category": "wind", "phrase": "wind blowing"}),
        (r"weather/windleaves_", {"category": "wind", "phrase": "wind in the leaves"}),
        (r"ambient/water/river_", {"category": "water", "phrase": "a river flowing"}),
        (r"ambient/water/waterfall_", {"category": "water", "phrase": "a waterfall"}),
        (r"ambient/water/wave", {"category": "water", "phrase": "waves breaking"}),
        (r"construction/con_saw_", {"category": "sawing", "phrase": "a saw cutting wood"}),
        (r"lumbering/lumber_tree_\d", {"category": "chopping wood", "phrase": "an axe chopping wood"}),
        (r"mining/mine_stone_", {"category": "stone impact", "phrase": "a pickaxe striking stone"}),
        (r"mining/mine_metal_", {"category": "metal impact", "phrase": "a pickaxe striking metal"}),
        (r"weapon/swordhit_", {"category": "metal impact", "phrase": "swords clashing"}),
        (r"weapon/Musket_", {"category": "gunshot", "phrase": "a musket being fired"}),
    ],
    "sonic-pi-samples": [
        (r"misc_crow", {"category": "animal", "animal": "crow", "phrase": "a crow cawing"}),
        (r"perc_bell", {"category": "bell", "phrase": "a bell ringing"}),
        (r"perc_door", {"category": "door", "phrase": "a door"}),
        (r"vinyl_(scratch|backspin|rewind)", {"category": "record scratch", "phrase": "a vinyl record being scratched"}),
    ],
    "sound-icons": [
        (r"canary", {"category": "animal", "animal": "canary", "phrase": "a canary singing"}),
        (r"glass-water", {"category": "water", "phrase": "water in a glass"}),
    ],
}
# desktop sound themes: every file is a user-interface sound; the event name is the phrase.
THEMES = ("sound-theme-freedesktop", "oxygen-sounds", "yaru-theme-sound", "deepin-sound-theme")
THEME_SKIP = r"audio-channel|audio-test-signal"  # spoken channel names and test noise, not UI sounds
THEME_SPECIAL = [
    (r"phone-incoming|phone-ring", {"category": "telephone", "phrase": "a telephone ringing"}),
    (r"phone-outgoing", {"category": "telephone", "phrase": "a telephone line tone"}),
    (r"camera-shutter|screen-capture$", {"category": "camera shutter", "phrase": "a camera shutter"}),
    (r"^bell$", {"category": "bell", "phrase": "a bell"}),
    (r"alarm-clock", {"category": "alarm", "phrase": "an alarm clock"}),
]

INSTRUMENT_RULES: dict[str, list[tuple[str, str]]] = {
    # (regex on the file name, instrument)
    "sonic-pi-samples": [
        (r"^(bd_|drum_bass|drum_heavy_kick)", "bass drum"), (r"^(sn_|drum_snare)", "snare drum"),
        (r"^drum_cymbal|^drum_splash", "cymbal"), (r"^drum_tom", "tom"), (r"^drum_cowbell", "cowbell"),
        (r"^tabla_(?!.*loop)", "tabla"), (r"^guit_", "electric guitar"), (r"^ambi_piano", "piano"),
    ],
    "lmms-common": [
        (r"drums/(bassdrum|kick)", "bass drum"), (r"drums/snare", "snare drum"), (r"drums/hihat", "hi-hat"),
        (r"drums/(crash|ride)", "cymbal"), (r"drums/tom", "tom"), (r"drums/clap", "hand clap"),
        (r"drums/shaker", "shaker"), (r"instruments/cello", "cello"), (r"instruments/(church_|e_)organ", "organ"),
        (r"instruments/e_piano", "electric piano"), (r"instruments/flute", "flute"),
        (r"instruments/harpsichord", "harpsichord"), (r"instruments/piano", "piano"),
        (r"instruments/steel_guitar", "electric guitar"), (r"instruments/trumpet", "trumpet"),
        (r"instruments/violin", "violin"), (r"instruments/bassslap", "bass guitar"),
    ],
    # Hydrogen kits: the rules apply to the instrument <name> in each drumkit.xml, not to file names
    "hydrogen": [
        (r"kick|bass ?drum|^bd", "bass drum"), (r"snare", "snare drum"), (r"hh|hat", "hi-hat"),
        (r"crash|ride|splash|cymbal|china", "cymbal"), (r"tom", "tom"), (r"cowbell", "cowbell"),
        (r"clap", "hand clap"), (r"conga", "conga"), (r"shaker", "shaker"), (r"tambourine", "tambourine"),
    ],
    "sound-icons": [
        (r"^cembalo", "harpsichord"), (r"^guitar", "guitar"), (r"^piano", "piano"), (r"^trumpet", "trumpet"),
        (r"^violoncello", "cello"), (r"^electric-piano", "electric piano"), (r"^xylofon", "xylophone"),
    ],
}

MUSIC_RULES: dict[str, list[tuple[str, dict]]] = {
    "frozen-bubble-data": [(r"snd/(frozen-mainzik|introzik)", {"title": "Frozen Bubble"})],
    "teeworlds-data": [(r"audio/music_menu", {"title": "Teeworlds"})],
    "wesnoth-1.16-music": [(r"music/.*\.ogg$", {"title": "The Battle for Wesnoth"})],
    "sonic-pi-samples": [(r"loop_(amen|breakbeat|compus|perc\d|industrial|safari|tabla|electric|mika)", {"title": "Sonic Pi"})],
}

SPEECH_PACKAGES = {  # g722 package -> (transcript package, language)
    "asterisk-core-sounds-en-g722": ("asterisk-core-sounds-en", "English"),
    "asterisk-core-sounds-es-g722": ("asterisk-core-sounds-es", "Spanish"),
    "asterisk-core-sounds-fr-g722": ("asterisk-core-sounds-fr", "French"),
}


def _fill(facts: dict, m: re.Match) -> dict:
    return {k: (v.format(*([""] + list(m.groups()))) if isinstance(v, str) else v) for k, v in facts.items()}


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXT)


def _zip_members(zpath: Path) -> list[str]:
    with zipfile.ZipFile(zpath) as z:
        return sorted(n for n in z.namelist() if n.lower().endswith(AUDIO_EXT))


def _cand(package, root, rel, kind, facts, member=None, zpath=None, ffmpeg_format=None) -> Candidate:
    name = rel if member is None else member
    prov = {"package": package, "deb": package_version(root), "path": "/" + rel}
    render = {"op": "decode", "path": str(root / rel), "ffmpeg_format": ffmpeg_format}
    if member is not None:
        prov["member"] = member
        render = {"op": "decode_zip", "path": str(zpath), "member": member}
    short = re.sub(r"^usr/(share/)?(games/)?", "", Path(name).with_suffix("").as_posix())
    uid = f"{package}/{re.sub(r'[^A-Za-z0-9_.-]+', '_', short)}"
    # Footstep takes are separate recordings of steps on one surface: each is its own group. With all takes of a
    # package's surface in one group, every evaluated surface had been heard in training only from the other game,
    # if at all (footstep surface stayed at chance; 12 surfaces, one group each per package).
    group = f"{package}:{Path(name).as_posix().lower()}" if "surface" in facts else _stem_group(package, name)
    return Candidate(uid, package, kind, group, facts, prov, render)


def real_candidates(packages: list[str], cache: Path) -> list[Candidate]:
    """Every file in `packages` that a rule labels, as Candidates (packages are fetched as needed)."""
    out: list[Candidate] = []
    for package in tqdm(packages, desc="packages", unit="pkg", file=sys.stderr, disable=len(packages) < 2):
        if is_reserved(package):
            raise ValueError(f"package {package!r} is reserved for outside evaluation (CORPUS.md)")
        root = fetch_package(package, cache)
        if package in SPEECH_PACKAGES:
            out += _speech(package, root, cache)
            continue
        if package.startswith("hydrogen-"):
            out += _hydrogen(package, root)
            continue
        entries: list[tuple[str, str | None, Path | None]] = []
        for p in _files(root):
            entries.append((p.relative_to(root).as_posix(), None, None))
        for z in sorted([*root.rglob("*.pk3"), *root.rglob("*.zip")]):  # ufoai, 0ad: sounds live in a zip
            entries += [(z.relative_to(root).as_posix(), m, z) for m in _zip_members(z)]
        for rel, member, zpath in entries:
            name = member or rel
            ffmpeg = "g722" if name.endswith(".g722") else None
            c = _label(package, name)
            if c is None:
                continue
            kind, facts = c
            cand = _cand(package, root, rel, kind, facts, member, zpath, ffmpeg)
            out += _segments(cand, root / rel) if kind == "music" and member is None else [cand]
    return out


MUSIC_SEGMENT_S, MUSIC_SEGMENT_EVERY_S, MUSIC_SEGMENTS = 20.0, 60.0, 3


def _segments(c: Candidate, path: Path) -> list[Candidate]:
    """A long track becomes up to 3 excerpts of 20 s, 60 s apart (one group: the track)."""
    try:
        seconds = sf.info(str(path)).duration
    except Exception:
        return [c]
    out = []
    for k in range(MUSIC_SEGMENTS):
        start = k * MUSIC_SEGMENT_EVERY_S
        if k and start + 10.0 > seconds:
            break
        seg = Candidate(f"{c.uid}_seg{k}", c.dataset, c.kind, c.group, dict(c.facts),
                        {**c.provenance, "start_s": start, "seconds": MUSIC_SEGMENT_S},
                        {**c.render, "start_s": start, "seconds": MUSIC_SEGMENT_S})
        out.append(seg)
    return out


def _label(package: str, name: str) -> tuple[str, dict] | None:
    """(kind, facts) for one file by the package's rules, or None when no rule says what it is."""
    base = Path(name).stem
    for pattern, facts in MUSIC_RULES.get(package, []):
        m = re.search(pattern, name)
        if m:
            return "music", {**facts, "phrase": f"instrumental music from {facts['title']}"}
    for pattern, instrument in INSTRUMENT_RULES.get(package, []):
        target = base.lower() if pattern.startswith("^") else name.lower()
        if re.search(pattern, target):
            return "instrument", {"instrument": instrument, "phrase": f"a single {instrument} note"
                                  if instrument not in _PERCUSSION else f"a {instrument} hit"}
    for pattern, facts in SFX_RULES.get(package, []):
        m = re.search(pattern, name)
        if m:
            return "sfx", _fill(facts, m)
    if package in THEMES and not re.search(THEME_SKIP, base.lower()):
        event = re.sub(r"^(oxygen|x-deepin)-", "", base.lower()).replace("-", " ").replace("_", " ")
        for pattern, facts in THEME_SPECIAL:
            if re.search(pattern, base.lower().replace("oxygen-", "")):
                return "sfx", dict(facts)
        return "sfx", {"category": "notification", "event": event, "phrase": f"a desktop notification sound ({event})"}
    return None


_PERCUSSION = {"bass drum", "snare drum", "hi-hat", "cymbal", "tom", "cowbell", "hand clap", "shaker", "tabla", "conga",
               "tambourine"}


def _speech(package: str, root: Path, cache: Path) -> list[Candidate]:
    """Telephony prompts with exact transcripts from the matching `core-sounds-<lang>.txt.gz`."""
    text_pkg, language = SPEECH_PACKAGES[package]
    troot = fetch_package(text_pkg, cache)
    texts: dict[str, str] = {}
    for gz in troot.rglob("core-sounds-*.txt.gz"):
        for line in gzip.open(gz, "rt", encoding="utf-8", errors="replace"):
            if ":" in line and not line.startswith(";"):
                key, text = line.split(":", 1)
                if text.strip():
                    texts[key.strip()] = " ".join(text.split())
    out = []
    for p in _files(root):
        rel = p.relative_to(root).as_posix()
        m = re.search(r"sounds/([a-z]{2})_([A-Z]{2})_([fm])_([A-Za-z]+)/(.+)\.g722$", rel)
        if not m or m.group(5) not in texts:
            continue
        text = texts[m.group(5)]
        if len(text) > 160 or re.search(r"[\[\]<>]", text):  # skip long prompts and annotated lines
            continue
        facts = {"transcript": text, "language": language, "speaker": m.group(4),
                 "gender": "female" if m.group(3) == "f" else "male", "real_speech": True,
                 "phrase": f"a {'woman' if m.group(3) == 'f' else 'man'} speaking {language}"}
        c = _cand(package, root, rel, "speech", facts, ffmpeg_format="g722")
        c.group = f"text:{text.lower()}"  # one sentence never on two sides
        out.append(c)
    return out


def _hydrogen(package: str, root: Path) -> list[Candidate]:
    """Hydrogen drum kits: every layer file of an instrument whose drumkit.xml <name> a rule knows."""
    out = []
    for xml in sorted(root.rglob("drumkit.xml")):
        try:
            tree = ET.parse(xml)
        except ET.ParseError:
            continue
        for el in tree.iter():
            el.tag = el.tag.split("}")[-1]  # drop the XML namespace
        kit = (tree.getroot().findtext("name") or xml.parent.name).strip()
        for inst in tree.getroot().iter("instrument"):
            name = (inst.findtext("name") or "").strip()
            label = next((lab for pat, lab in INSTRUMENT_RULES["hydrogen"] if re.search(pat, name.lower())), None)
            if label is None:
                continue
            files = {f.text.strip() for f in inst.iter("filename") if f.text and f.text.strip()}
            for fname in sorted(files):
                path = xml.parent / fname
                if not path.is_file():
                    continue
                facts = {"instrument": label, "phrase": f"a {label} hit" if label in _PERCUSSION else f"a single {label} note",
                         "kit_instrument": name}
                c = _cand(package, root, path.relative_to(root).as_posix(), "instrument", facts)
                c.group = f"{package}:{kit}:{name}".lower()
                c.provenance["drumkit"] = kit
                out.append(c)
    return out
