"""Unit checks of the corpus pieces: rules, fingerprints, dedup, splits, mixtures, MIDI, tasks, check."""

import json
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from audioflamingo.data.audiofile import fingerprint, pcm_hash
from audioflamingo.data.check import check_manifests
from audioflamingo.data.manifest import row_problems
from audioflamingo.data.mixtures import render_mix
from audioflamingo.data.music import events_for
from audioflamingo.data.sources import _label, _stem_group
from audioflamingo.data.splits import assign_splits, dedup, group_split
from audioflamingo.data.synth import render_signal
from audioflamingo.data.tasks import make_items


def _sound(seed=0, seconds=1.0, rate=16000):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * (200 + 300 * seed) * t) * np.exp(-3 * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def test_path_rules_label_only_known_files():
    assert _label("minetest-data", "usr/share/games/minetest/default_snow_footstep.3.ogg") == (
        "sfx", {"category": "footsteps", "surface": "snow", "phrase": "footsteps on snow"})
    assert _label("lmms-common", "usr/share/lmms/samples/drums/hihat_closed02.ogg")[1]["instrument"] == "hi-hat"
    assert _label("minetest-data", "usr/share/games/minetest/default_place_node.1.ogg") is None
    assert _stem_group("minetest-data", "a/default_door_open.1.ogg") == _stem_group("minetest-data", "b/default_door_open.2.ogg")


def test_footstep_takes_are_separate_groups_other_takes_stay_together(tmp_path):
    from audioflamingo.data.sources import _cand

    def group(rel):
        kind, facts = _label("minetest-data", rel)
        return _cand("minetest-data", tmp_path, rel, kind, facts).group

    steps = [group(f"usr/share/games/minetest/default_wood_footstep.{k}.ogg") for k in (1, 2)]
    assert steps[0] != steps[1]  # each take of a surface can land in its own split
    fires = [group(f"usr/share/games/minetest/fire_fire.{k}.ogg") for k in (1, 2)]
    assert fires[0] == fires[1]  # takes of other sounds stay together


def test_0ad_rules_read_zip_member_paths():
    # 0ad-data's sounds are members of mods/public/public.zip; surfaces map onto the shared label names
    steps = {
        "audio/actor/singlesteps/fs_grass3.ogg": "grass",
        "audio/actor/singlesteps/fs_snow_14.ogg": "snow",
        "audio/actor/singlesteps/fs_rock2.ogg": "stone",
        "audio/actor/human/movement/Footsteps/Footstep_Gravel_Running.ogg": "gravel",
        "audio/actor/human/movement/Footsteps/Foorstep_Sand_Walking.ogg": "sand",
        "audio/actor/human/movement/hstep_run_dirt_MN_11.ogg": "dirt",
    }
    for member, surface in steps.items():
        kind, facts = _label("0ad-data", member)
        assert (kind, facts["category"], facts["surface"]) == ("sfx", "footsteps", surface), member
        assert facts["phrase"] == f"footsteps on {surface}"
    assert _label("0ad-data", "audio/actor/fauna/animal/cattle_03.ogg")[1]["animal"] == "cow"
    assert _label("0ad-data", "audio/actor/human/death/female_death_07.ogg")[1]["phrase"] == "a woman crying out in pain"
    assert _label("0ad-data", "audio/attack/weapon/sword_attack_01.ogg") is None  # unclear sounds stay out
    assert _label("0ad-data", "audio/music/Sunrise.ogg") is None


def test_fingerprint_survives_reencoding_but_separates_sounds():
    x = _sound(0)
    y = soxr.resample(soxr.resample(x, 16000, 44100), 44100, 16000).astype(np.float32) * 0.5
    assert pcm_hash(x) != pcm_hash(y)
    assert fingerprint(x, 16000) == fingerprint(y, 16000)
    assert fingerprint(x, 16000) != fingerprint(_sound(1), 16000)


def test_dedup_keeps_first_uid_and_split_is_by_group():
    clips = [{"uid": u, "pcm_hash": h, "fingerprint": f, "group": g, "facts": {}}
             for u, h, f, g in [("b", "h1", "f1", "g1"), ("a", "h1", "f9", "g2"), ("c", "h3", "f9", "g3"), ("d", "h4", "f4", "g1")]]
    kept, dropped = dedup(clips)
    assert [c["uid"] for c in kept] == ["a", "d"] and dropped == {"b": "a", "c": "a"}
    assign_splits(kept, seed=3)
    assert all(c["split"] == group_split(c["group"], 3) for c in kept)
    splits = [group_split(f"g{i}", 0) for i in range(2000)]
    assert 0.75 < splits.count("train") / 2000 < 0.85
    held = [{"uid": "x", "group": "gx", "facts": {"category": "door"}}, {"uid": "y", "group": "gx", "facts": {}}]
    assign_splits(held, 0)
    assert all(c["heldout"] and c["split"] == "test" for c in held)  # a held-out group is held out whole


def test_mixture_order_and_loudest(tmp_path):
    paths = []
    for i in range(2):
        p = tmp_path / f"{i}.wav"
        sf.write(p, _sound(i), 16000, subtype="PCM_16")
        paths.append(str(p))
    p = {"op": "mix", "seconds": 3.0, "bed_db": -50.0, "seed": 1, "events": [
        {"uid": "u1", "path": paths[1], "label": "b", "phrase": "second sound", "onset": 1.5, "seconds": 1.0, "gain_db": 0.0},
        {"uid": "u0", "path": paths[0], "label": "a", "phrase": "first sound", "onset": 0.2, "seconds": 1.0, "gain_db": -18.0}]}
    x, facts = render_mix(p, 16000)
    assert len(x) == 48000
    assert facts["event_order"] == ["first sound", "second sound"] and facts["event_count"] == 2
    assert facts["loudest"] == "second sound"
    assert np.abs(x[: int(0.2 * 16000)]).max() < 0.02  # only the bed before the first onset


def test_signals_count_and_midi_note_count():
    x = render_signal({"op": "beeps", "count": 4, "freq": 1000, "beep_s": 0.1, "gap_s": 0.2}, 16000)
    on = np.abs(x) > 0.1
    assert int(np.sum(on[1:] & ~on[:-1])) >= 4 and len(x) == int(16000 * (0.2 + 4 * 0.3 + 0.1))
    env = np.convolve(np.abs(x), np.ones(160) / 160, "same") > 0.05
    assert int(np.sum(env[1:] & ~env[:-1])) == 4
    ev, tempo, _ = events_for({"op": "midi", "program": 0, "form": "notes", "pitches": [60, 62, 64], "tempo": 100})
    assert tempo == 100 and sum(1 for _, m in ev if m[0] == 0x90 and m[2] > 0) == 3


def test_items_answers_follow_facts():
    clip = {"uid": "x/1", "audio": "audio/x.wav", "dataset": "d", "kind": "speech", "split": "train", "group": "g",
            "provenance": {"synthesis": {}}, "duration": 2.04, "dbfs": -20.0,
            "facts": {"transcript": "Open the window.", "language": "English", "gender": "female",
                      "phrase": "a synthetic female voice speaking English"}}
    sets = {"language": ["English", "French"], "speaker_gender": ["female", "male"]}
    items = make_items(clip, sets, seed=0, per_clip=50)
    assert all(not row_problems(it) for it in items)
    by_task = {}
    for it in items:
        by_task.setdefault(it["task"], []).append(it)
    assert by_task["caption"][0]["answer"] == "A synthetic female voice speaking English."
    assert by_task["transcription"][0]["answer"] == "Open the window."
    assert {it["answer"] for it in by_task["classification"]} == {"English", "female"}
    dlg = by_task["dialog"][0]["dialogue"]
    assert {"user": "About how long is the clip?", "assistant": "About 2.0 seconds."} in dlg


def test_check_reports_each_problem_with_its_line(tmp_path):
    good = tmp_path / "a.wav"
    sf.write(good, _sound(0), 16000)
    sf.write(tmp_path / "copy.wav", _sound(0), 16000)
    sf.write(tmp_path / "silent.wav", np.zeros(1600, np.float32), 16000)
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    base = {"dataset": "d", "task": "caption", "prompt": "p", "answer": "a", "split": "train"}
    lines = [json.dumps({**base, "id": "1", "audio": "a.wav"}), json.dumps({**base, "id": "2", "audio": "gone.wav"}),
             "{not json", json.dumps({**base, "id": "4", "audio": "silent.wav"}),
             json.dumps({**base, "id": "5", "audio": "bad.wav"}), json.dumps({**base, "id": "6", "audio": "copy.wav"}),
             json.dumps({**base, "id": "1", "audio": "a.wav", "split": "dev"}), json.dumps({"id": "8", "audio": "a.wav"})]
    m = tmp_path / "m.jsonl"
    m.write_text("\n".join(lines) + "\n")
    rep = check_manifests([m])
    assert not rep.ok
    got = {(n, msg.split(":")[0]) for _, n, msg in rep.problems}
    assert {(2, "missing audio"), (3, "malformed row"), (4, "silent audio"), (5, "unreadable audio"),
            (6, "duplicate audio"), (7, "duplicate id"), (7, "malformed row"), (8, "malformed row")} <= got
    assert not any(n == 1 for n, _ in got)


def test_hydrogen_labels_come_from_drumkit_xml(tmp_path):
    from audioflamingo.data.sources import _hydrogen

    kit = tmp_path / "usr/share/hydrogen/data/drumkits/K"
    kit.mkdir(parents=True)
    for name in ("tom-0105.wav", "x.wav", "y.wav"):
        sf.write(kit / name, _sound(0), 16000)
    (kit / "drumkit.xml").write_text(
        '<drumkit_info xmlns="http://www.hydrogen-music.org/drumkit"><name>K</name><instrumentList>'
        "<instrument><name>Kick</name><layer><filename>tom-0105.wav</filename></layer></instrument>"
        "<instrument><name>Closed HH</name><layer><filename>x.wav</filename></layer></instrument>"
        "<instrument><name>Whistle</name><layer><filename>y.wav</filename></layer></instrument>"
        "</instrumentList></drumkit_info>")
    got = {Path(c.provenance["path"]).name: c.facts["instrument"] for c in _hydrogen("hydrogen-data", tmp_path)}
    assert got == {"tom-0105.wav": "bass drum", "x.wav": "hi-hat"}  # the xml name wins over the file name


def test_reserved_packages_are_refused(tmp_path):
    import pytest

    from audioflamingo.data.debian import PackageError, fetch_package

    for pkg in ("warzone2100-data", "freeciv-data", "musescore-general-soundfont-small", "hydrogen-drumkits-effects"):
        with pytest.raises(PackageError, match="reserved"):
            fetch_package(pkg, tmp_path)


def test_continuous_sweeps_are_all_distinct_and_spread_over_groups():
    """The standard plan's sweeps have 36 parameter combinations at most (dedup then keeps <= 36 clips);
    --continuous-sweeps makes every sweep distinct, in both directions, over several split groups."""
    from audioflamingo.data.synth import render_signal, signal_candidates

    def sweeps(continuous):
        return [c for c in signal_candidates(800, np.random.default_rng(0), continuous) if c.uid.startswith("signal/sweep")]

    fixed, free = sweeps(False), sweeps(True)
    assert len(fixed) == len(free) == 200
    assert len({(c.render["f0"], c.render["f1"], c.render["seconds"]) for c in fixed}) <= 36
    assert len({(c.render["f0"], c.render["f1"], c.render["seconds"]) for c in free}) == 200
    assert {c.facts["direction"] for c in free} == {"rising", "falling"}
    assert len({c.group for c in free}) >= 8
    # the other signal kinds are drawn from their own values either way
    others = lambda cs: [c.render for c in cs if not c.uid.startswith("signal/sweep")]  # noqa: E731
    assert len(others(signal_candidates(40, np.random.default_rng(1), True))) == 30
    x = render_signal(free[0].render, 16000)
    assert abs(len(x) - free[0].render["seconds"] * 16000) <= 1 and np.abs(x).max() > 0.3


def test_varied_synthesis_makes_chords_and_noise_distinct_and_leaves_the_default_unchanged():
    """--varied-synthesis: every chord clip distinct (the default has one per instrument, root and quality, so
    deduplication caps chord quality items) and noise over many more split groups; off, the draws are the
    standard plan's."""
    from audioflamingo.data import music
    from audioflamingo.data.synth import render_signal, signal_candidates

    chords = lambda varied: [c for c in music.music_candidates(900, np.random.default_rng(3), varied) if c.uid.startswith("music/chord")]  # noqa: E731
    fixed, free = chords(False), chords(True)
    key = lambda c: tuple(sorted((k, str(v)) for k, v in c.render.items()))  # noqa: E731
    assert len(free) == len({key(c) for c in free}) == 300
    assert len({key(c) for c in fixed}) == len({(c.render["program"], c.render["root"], c.render["quality"]) for c in fixed}) < 300
    assert all(c.render["seconds"] == 2.0 and "velocity" not in c.render for c in fixed)
    assert {c.facts["chord_quality"] for c in free} == {c.facts["chord_quality"] for c in fixed}
    assert all(c.facts["root"] == music.NOTE_NAMES[c.render["root"] % 12] for c in free)  # the octave leaves the root's name
    noise = lambda varied: [c for c in signal_candidates(1200, np.random.default_rng(1), False, varied) if c.uid.startswith("signal/noise")]  # noqa: E731
    assert len({c.group for c in noise(False)}) <= 9 and len({c.group for c in noise(True)}) >= 24
    # off: exactly the draws of the standard plan before the flag existed (the shipped corpus rebuilds unchanged);
    # digests of (uid, group, render) taken from the code before the flag was added
    import hashlib
    import json

    digest = lambda cs: hashlib.sha256(json.dumps([(c.uid, c.group, c.render) for c in cs], sort_keys=True).encode()).hexdigest()[:16]  # noqa: E731
    assert digest(signal_candidates(200, np.random.default_rng(1))) == "874540d8981d925b"
    assert digest(music.music_candidates(90, np.random.default_rng(3))) == "91ae7b415ac1e1eb"
    x = render_signal(noise(True)[0].render, 16000)
    assert abs(np.abs(x).max() - noise(True)[0].render["level"]) < 1e-5
