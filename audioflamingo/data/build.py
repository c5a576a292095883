"""The corpus builder: Debian packages + synthesis -> converted clips -> dedup -> splits -> manifests.

    audioflamingo data build-corpus --out DIR --plan tiny|small|standard [--seed N]

Layout of DIR (documented in docs/manifest.md):
    audio/<uid>.wav            every clip once, model rate, mono, 16-bit PCM
    train.jsonl val.jsonl test.jsonl             items by split (groups never cross splits)
    fewshot_support.jsonl fewshot_query.jsonl    items of categories never in training
    corpus.json                plan, seed, rate, counts, dropped duplicates
    work/measure.jsonl         per-clip measurements (the resume log)

Re-running with the same arguments resumes: clips already rendered and measured are not redone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from audioflamingo.data import audiofile, music, synth
from audioflamingo.data.debian import fetch_package
from audioflamingo.data.manifest import write_manifest
from audioflamingo.data.mixtures import mixture_candidates, render_mix
from audioflamingo.data.sources import Candidate, real_candidates
from audioflamingo.data.splits import assign_splits, dedup, fewshot_role
from audioflamingo.data.tasks import label_sets, make_items

SMALL_PACKAGES = [
    "sound-theme-freedesktop", "oxygen-sounds", "yaru-theme-sound", "deepin-sound-theme", "sound-icons",
    "minetest-data", "wordwarvi-sound", "ufoai-sound", "teeworlds-data", "frozen-bubble-data",
    "sonic-pi-samples", "lmms-common", "hydrogen-data",
    "asterisk-core-sounds-en-g722", "asterisk-core-sounds-es-g722", "asterisk-core-sounds-fr-g722",
]


@dataclass
class Plan:
    packages: list[str]
    max_real: int | None  # cap on real clips (a seeded sample), None = all
    speech: int
    music: int
    signals: int
    mixtures: int
    scale: float  # items per clip = round(scale * ITEMS_PER_CLIP[kind]), at least 1
    fortunes: bool = False  # English TTS text from Debian's fortunes-min


# Real sound effects and one-shots are the scarcest clips, speech the most plentiful: ask more
# questions (different tasks and phrasings) about each scarce clip so the label sets stay balanced.
ITEMS_PER_CLIP = {"sfx": 8, "instrument": 5, "music": 5, "mixture": 4, "signal": 3, "speech": 3}


PLANS = {
    "tiny": Plan(["sound-theme-freedesktop", "minetest-data"], 60, speech=28, music=15, signals=16, mixtures=12, scale=0.75),
    "small": Plan(SMALL_PACKAGES, None, speech=1800, music=700, signals=500, mixtures=700, scale=1.0, fortunes=True),
    "standard": Plan(SMALL_PACKAGES + ["hydrogen-drumkits", "wesnoth-1.16-music"], None, speech=8000, music=2500, signals=1500, mixtures=3000, scale=1.0,
                     fortunes=True),
}


@dataclass
class BuildConfig:
    out: str
    plan: str = "tiny"
    seed: int = 0
    rate: int = 16000
    cache: str | None = None  # where .deb files are downloaded and unpacked
    workers: int = 2
    max_seconds: float = 20.0  # longer sources are cut (and the cut is recorded in provenance)
    packages: list[str] = field(default_factory=list)  # extra packages on top of the plan's
    balance_label_sets: bool = False  # every closed label set gets val/test groups (splits.balance_label_sets)
    continuous_sweeps: bool = False  # sweeps from continuous parameters (the default plan has 36 distinct sweeps)
    varied_synthesis: bool = False  # noise and chords with varied length/level/octave (the default plan dedups chords to one per instrument, root and quality)


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "audioflamingo" / "debian"


def _fortunes(cache: Path) -> list[str]:
    root = fetch_package("fortunes-min", cache)
    out = []
    for f in sorted(p for p in root.rglob("fortunes") if p.is_file()):
        for block in f.read_text(errors="replace").split("\n%\n"):
            text = " ".join(block.split())
            if 15 <= len(text) <= 90 and re.fullmatch(r"[A-Za-z ,.'!?-]+", text) and not text.isupper():
                out.append(text)
    return out


# ----------------------------------------------------------------------------------------------------
# rendering (runs in worker processes: top-level functions only)


def render(c: Candidate, rate: int) -> tuple[np.ndarray, dict]:
    """Samples for one candidate and the facts measured while rendering (mixtures only)."""
    op = c.render["op"]
    extra: dict = {}
    if op == "decode":
        x = audiofile.decode(c.render["path"], rate, c.render.get("ffmpeg_format"))
        if "start_s" in c.render:  # an excerpt of a long track
            a = int(c.render["start_s"] * rate)
            x = x[a : a + int(c.render["seconds"] * rate)]
    elif op == "decode_zip":
        with zipfile.ZipFile(c.render["path"]) as z, tempfile.TemporaryDirectory() as tmp:
            dst = Path(tmp) / Path(c.render["member"]).name
            dst.write_bytes(z.read(c.render["member"]))
            x = audiofile.decode(dst, rate)
    elif op in ("espeak", "flite"):
        x = synth.render_speech(c.render, rate)
    elif op == "midi":
        x = music.render_music(c.render, rate)
    elif op == "mix":
        x, extra = render_mix(c.render, rate)
    else:
        x = synth.render_signal(c.render, rate)
    return x, extra


def _store(c: Candidate, path: Path, x: np.ndarray, extra: dict, rate: int, max_seconds: float) -> dict:
    if len(x) > max_seconds * rate:
        x = x[: int(max_seconds * rate)]
        extra = {**extra, "cut_to_s": max_seconds}
    audiofile.write_wav(path, x, rate)
    x, _ = sf.read(str(path), dtype="float32")  # measure exactly what is stored
    return {"uid": c.uid, "key": render_key(c), "duration": len(x) / rate, "dbfs": float(audiofile.rms_dbfs(x)),
            "pcm_hash": audiofile.pcm_hash(x), "fingerprint": audiofile.fingerprint(x, rate), "extra": extra}


def _failed(c: Candidate, e: Exception) -> dict:
    return {"uid": c.uid, "key": render_key(c), "error": f"{type(e).__name__}: {e}"[:300]}


def render_key(c: Candidate) -> str:
    """What a clip was made from (package file or every synthesis parameter): a resumed build re-renders
    a clip whose recipe changed, even under the same uid."""
    return hashlib.sha1(json.dumps(c.provenance, sort_keys=True).encode()).hexdigest()[:16]


def _job(args) -> list[dict]:
    """Render, store and measure a list of candidates; MIDI ones share one fluidsynth run."""
    cands, out, rate, max_seconds = args
    results = []
    midi = [c for c in cands if c.render["op"] == "midi"]
    if midi:
        try:
            xs = music.render_music_batch([c.render for c in midi], rate)
            results += [_store(c, out / audio_rel(c.uid), x, {}, rate, max_seconds) for c, x in zip(midi, xs)]
        except Exception as e:
            results += [_failed(c, e) for c in midi]
    for c in cands:
        if c.render["op"] == "midi":
            continue
        try:  # one bad source file must not stop a build: it is logged and skipped
            x, extra = render(c, rate)
            results.append(_store(c, out / audio_rel(c.uid), x, extra, rate, max_seconds))
        except Exception as e:
            results.append(_failed(c, e))
    return results


def render_all(cands: list[Candidate], out: Path, cfg: BuildConfig, desc: str) -> dict[str, dict]:
    """Render and measure every candidate not already in the resume log; returns uid -> measurement."""
    log = out / "work" / "measure.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    done: dict[str, dict] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            try:
                m = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interrupted build
            done[m["uid"]] = m
    todo = [c for c in cands if done.get(c.uid, {}).get("key") != render_key(c) or not (out / audio_rel(c.uid)).exists()]
    if todo:
        midi = [c for c in todo if c.render["op"] == "midi"]
        other = [c for c in todo if c.render["op"] != "midi"]
        jobs = [(other[i : i + 8], out, cfg.rate, cfg.max_seconds) for i in range(0, len(other), 8)]
        jobs += [(midi[i : i + 24], out, cfg.rate, cfg.max_seconds) for i in range(0, len(midi), 24)]
        with log.open("a") as f, ProcessPoolExecutor(max_workers=max(1, cfg.workers)) as pool, \
                tqdm(total=len(todo), desc=desc, unit="clip", file=sys.stderr) as bar:
            for results in pool.map(_job, jobs):
                for m in results:
                    done[m["uid"]] = m
                    f.write(json.dumps(m) + "\n")
                f.flush()
                bar.update(len(results))
    return {c.uid: done[c.uid] for c in cands}


def audio_rel(uid: str) -> str:
    return "audio/" + re.sub(r"[^A-Za-z0-9_./-]", "_", uid) + ".wav"


# ----------------------------------------------------------------------------------------------------


def _clips(cands: list[Candidate], measured: dict[str, dict], out: Path) -> tuple[list[dict], dict]:
    clips, problems = [], {"errors": {}, "silent": []}
    for c in cands:
        m = measured[c.uid]
        if "error" in m:
            problems["errors"][c.uid] = m["error"]
            continue
        if m["dbfs"] < audiofile.SILENCE_DBFS or m["duration"] < 0.05:
            problems["silent"].append(c.uid)
            continue
        facts = {**c.facts, **{k: v for k, v in m["extra"].items() if k != "cut_to_s"}}
        prov = dict(c.provenance)
        if "cut_to_s" in m["extra"]:
            prov["cut_to_s"] = m["extra"]["cut_to_s"]
        clips.append({"uid": c.uid, "dataset": c.dataset, "kind": c.kind, "group": c.group, "facts": facts,
                      "provenance": prov, "audio": audio_rel(c.uid), "abs_audio": str(out / audio_rel(c.uid)),
                      "duration": m["duration"], "dbfs": m["dbfs"], "pcm_hash": m["pcm_hash"],
                      "fingerprint": m["fingerprint"]})
    return clips, problems


def build_corpus(cfg: BuildConfig) -> dict:
    """Build (or resume) a corpus; returns the summary also written to OUT/corpus.json."""
    if cfg.plan not in PLANS:
        raise ValueError(f"--plan {cfg.plan!r}: choose one of {', '.join(PLANS)}")
    plan = PLANS[cfg.plan]
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "corpus.json").exists():
        before = json.loads((out / "corpus.json").read_text())
        if before.get("rate") != cfg.rate:
            raise ValueError(f"{out} holds clips at {before.get('rate')} Hz, not {cfg.rate} Hz: use another --out")
    cache = Path(cfg.cache) if cfg.cache else default_cache()
    rng = np.random.default_rng(cfg.seed)

    cands = real_candidates(plan.packages + list(cfg.packages), cache)
    if plan.max_real is not None and len(cands) > plan.max_real:
        keep = sorted(rng.choice(len(cands), size=plan.max_real, replace=False))
        cands = [cands[i] for i in keep]
    texts = _fortunes(cache) if plan.fortunes else None
    cands += synth.signal_candidates(plan.signals, np.random.default_rng([cfg.seed, 1]), cfg.continuous_sweeps, cfg.varied_synthesis)
    cands += synth.speech_candidates(plan.speech, np.random.default_rng([cfg.seed, 2]), texts)
    if music.music_available():
        cands += music.music_candidates(plan.music, np.random.default_rng([cfg.seed, 3]), cfg.varied_synthesis)
    else:
        print("[corpus] warning: fluidsynth or a GM soundfont is missing: no synthetic music", file=sys.stderr)

    measured = render_all(cands, out, cfg, f"{cfg.plan}: clips")
    clips, problems = _clips(cands, measured, out)
    clips, dropped = dedup(clips)
    assign_splits(clips, cfg.seed, balance=cfg.balance_label_sets)

    mix_cands = []
    for i, split in enumerate(("train", "val", "test")):
        pool = [c for c in clips if c["split"] == split and not c["heldout"] and c["kind"] in ("sfx", "instrument")
                and c["dataset"] != "synth-music"]
        n = round(plan.mixtures * {"train": 0.8, "val": 0.1, "test": 0.1}[split])
        mix_cands += mixture_candidates(pool, n, np.random.default_rng([cfg.seed, 4, i]), split)
    mix_measured = render_all(mix_cands, out, cfg, f"{cfg.plan}: mixtures")
    mixes, mix_problems = _clips(mix_cands, mix_measured, out)
    for m in mixes:  # uids are mix/<split>_<n>
        m["split"], m["heldout"] = m["uid"].split("/")[1].split("_")[0], False
    clips += mixes
    problems["errors"].update(mix_problems["errors"])

    trained_sets = label_sets([c["facts"] for c in clips if not c["heldout"]])
    all_sets = label_sets([c["facts"] for c in clips])
    by_file: dict[str, list[dict]] = {k: [] for k in ("train", "val", "test", "fewshot_support", "fewshot_query")}
    for c in clips:
        per_clip = max(1, round(plan.scale * ITEMS_PER_CLIP[c["kind"]]))
        items = make_items(c, all_sets if c["heldout"] else trained_sets, cfg.seed, per_clip)
        if c["heldout"]:
            key = "fewshot_" + fewshot_role(c["group"], cfg.seed)
            for it in items:
                it["heldout"], it["heldout_reason"] = True, c["heldout_reason"]
        else:
            key = c["split"]
        by_file[key] += items
    counts = {name: write_manifest(out / f"{name}.jsonl", rows) for name, rows in by_file.items()}
    summary = {"plan": cfg.plan, "seed": cfg.seed, "rate": cfg.rate, "config": asdict(cfg),
               "clips": len(clips), "items": counts, "hours": round(sum(c["duration"] for c in clips) / 3600, 3),
               "cut_clips": sorted(c["uid"] for c in clips if "cut_to_s" in c["provenance"]),
               "dropped_duplicates": dropped, "dropped_silent": problems["silent"], "errors": problems["errors"]}
    (out / "corpus.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
