"""scripts/probe_label_sets.py: the linear probe separates what the features carry and nothing else."""

import json

import torch

from conftest import load_script


def test_probe_finds_a_carried_label_set_and_not_a_random_one(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    feats, rows = {}, {"train": [], "val": [], "test": []}
    for i in range(120):
        split = "train" if i < 80 else ("val" if i < 100 else "test")
        carried, random_label = ["low", "mid", "high"][i % 3], ["a", "b", "c"][int(torch.randint(3, (1,), generator=g))]
        x = torch.randn(2, 4, 16, generator=g)  # (W, T, D) as the encoder cache stores it
        x[..., 0] += 3.0 * (i % 3)  # the carried label moves one feature; the random one nothing
        feats[str(tmp_path / f"audio/c{i}.wav")] = x
        for ls, lab in (("carried", carried), ("random", random_label)):
            rows[split].append({"audio": f"audio/c{i}.wav", "task": "classification", "label_set": ls, "label": lab})
        rows[split].append({"audio": f"audio/c{i}.wav", "task": "caption", "answer": "a clip"})  # no label set: ignored
    for split, rs in rows.items():
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rs))
    torch.save({"fingerprint": "f", "feats": feats}, tmp_path / "cache.pt")
    mod = load_script("probe_label_sets")
    mod.main(["--corpus", str(tmp_path), "--cache", str(tmp_path / "cache.pt"), "--out", str(tmp_path / "out.json")])
    res = json.loads((tmp_path / "out.json").read_text())["label_sets"]
    assert set(res) == {"carried", "random"}
    assert res["carried"]["train_clips"] == 80 and res["carried"]["eval_clips"] == 40 and res["carried"]["labels"] == 3
    assert res["carried"]["probe"] >= 0.95 and res["carried"]["nearest"] > res["random"]["nearest"]
    assert res["random"]["probe"] < 0.6  # 3 classes: chance 1/3
    assert "carried" in capsys.readouterr().out


def _chords(tmp_path, sr: int = 16000) -> dict[str, list[dict]]:
    """Write 1 s major and minor triads on 24 roots under tmp_path/audio; -> manifest rows per split (held-out roots)."""
    import math

    import soundfile as sf

    rows = {"train": [], "val": [], "test": []}
    (tmp_path / "audio").mkdir()
    t = torch.arange(sr) / sr
    for root in range(45, 69):
        for quality, third in (("major", 4), ("minor", 3)):
            f0 = [440 * 2 ** ((root + k - 69) / 12) for k in (0, third, 7)]
            x = sum(0.6**h * torch.sin(2 * math.pi * f * (h + 1) * t) for f in f0 for h in range(3)) / 6
            name = f"audio/{quality}_{root}.wav"
            sf.write(tmp_path / name, x.numpy(), sr)
            split = "train" if root % 3 else ("val" if root % 2 else "test")  # held-out roots
            rows[split].append({"audio": name, "task": "classification", "label_set": "chord_quality", "label": quality})
    return rows


def test_pitch_mode_separates_major_from_minor_chords_across_roots(tmp_path):
    """--pitch probes the pitch branch's features from the audio: major vs minor at unseen roots is separable
    (the triad profile does not depend on the root); the trunk's 25 ms mel frames could not do this."""
    rows = _chords(tmp_path)
    for split, rs in rows.items():
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rs))
    load_script("probe_label_sets").main(["--corpus", str(tmp_path), "--pitch", "--out", str(tmp_path / "out.json")])
    res = json.loads((tmp_path / "out.json").read_text())["label_sets"]["chord_quality"]
    assert res["eval_clips"] == 16 and res["probe"] >= 0.9


def test_summary_mode_separates_chord_qualities_and_tempi(tmp_path):
    """--summary probes what transform.pitch / rhythm give the LM: chord quality at held-out roots and slow vs
    fast click tracks at held-out tempi."""
    import soundfile as sf

    sr, rows = 16000, _chords(tmp_path)
    g = torch.Generator().manual_seed(0)
    for i, bpm in enumerate(range(60, 180, 2)):
        x = torch.zeros(5 * sr)
        for k in range(int(5 * bpm / 60)):
            at = int((0.05 + k * 60 / bpm) * sr)
            x[at : at + 200] = torch.randn(200, generator=g) * torch.linspace(0.8, 0, 200)
        name = f"audio/clicks_{bpm}.wav"
        sf.write(tmp_path / name, x.numpy(), sr)
        label = "slow" if bpm < 90 else "fast" if bpm > 140 else None
        if label:
            rows["train" if i % 3 else "test"].append({"audio": name, "task": "classification", "label_set": "tempo", "label": label})
    for split, rs in rows.items():
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rs))
    load_script("probe_label_sets").main(["--corpus", str(tmp_path), "--summary", "--out", str(tmp_path / "out.json")])
    res = json.loads((tmp_path / "out.json").read_text())["label_sets"]
    assert res["chord_quality"]["eval_clips"] == 16 and res["chord_quality"]["probe"] >= 0.9
    assert res["tempo"]["eval_clips"] == 11 and res["tempo"]["probe"] >= 0.9
