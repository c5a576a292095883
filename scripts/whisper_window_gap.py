"""Measure how Whisper-initialised encoder features of a short window change with 30 s of context.

Whisper always sees 30 s (shorter audio is zero-padded); our windows are 5-7 s and the encoder runs on
them alone. For a few real recordings from Debian packages this prints, per model and window length,
how far `frames(window)` is from the first frames of `frames(window zero-padded to 30 s)`.

    PYTHONPATH=$PWD python scripts/whisper_window_gap.py --root ~/.cache/audioflamingo/debian/root

`--root` is a folder holding extracted Debian packages (asterisk-core-sounds-en-g722, hydrogen-data,
sonic-pi-samples, lmms-common, oxygen-sounds). Needs ffmpeg for the G.722 speech prompts.
"""

from __future__ import annotations

import argparse
import gzip
import subprocess
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from audioflamingo.model.encoder import AudioEncoder
from audioflamingo.model import whisper_init as wi

RATE = 16000


def _read(path: Path) -> np.ndarray:
    if path.suffix == ".g722":
        raw = subprocess.run(["ffmpeg", "-v", "error", "-f", "g722", "-i", str(path), "-ar", str(RATE), "-ac", "1",
                              "-f", "f32le", "-"], check=True, capture_output=True).stdout
        return np.frombuffer(raw, dtype=np.float32).copy()
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    return soxr.resample(x.mean(axis=1), sr, RATE).astype(np.float32)


def _fill(parts: list[np.ndarray], seconds: float, gap: float = 0.3) -> np.ndarray:
    """Concatenate clips with short silences, cycling, up to `seconds`; peak-normalise to 0.5."""
    n, out, i = int(seconds * RATE), [], 0
    while sum(len(p) for p in out) < n:
        out += [parts[i % len(parts)], np.zeros(int(gap * RATE), np.float32)]
        i += 1
    x = np.concatenate(out)[:n]
    return 0.5 * x / max(float(np.abs(x).max()), 1e-6)


def signals(root: Path, seconds: float) -> dict[str, tuple[np.ndarray, str]]:
    ast = root / "asterisk-core-sounds-en-g722/usr/share/asterisk/sounds/en_US_f_Allison"
    names = ["conf-onlyperson", "vm-tomakecall", "queue-callswaiting"]
    texts = dict(line.split(": ", 1) for line in gzip.open(
        root / "asterisk-core-sounds-en/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz", "rt")
        if ": " in line)
    kit = root / "hydrogen-data/usr/share/hydrogen/data/drumkits/GMRockKit"
    drums = [_read(kit / f)[: int(0.25 * RATE)] for f in ("Kick-Hard.wav", "HatClosed-Med.wav", "Snare-Hard.wav", "HatClosed-Med.wav")]
    return {
        "speech (asterisk en prompts)": (_fill([_read(ast / f"{n}.g722") for n in names], seconds),
                                         " ".join(texts[n].strip() for n in names)),
        "drum loop (hydrogen GMRockKit)": (_fill(drums, seconds, gap=0.0), ""),
        "ambient piano (sonic-pi)": (_fill([_read(root / "sonic-pi-samples/usr/share/sonic-pi/samples/ambi_piano.flac")], seconds), ""),
        "effects (lmms, oxygen)": (_fill([_read(root / "lmms-common/usr/share/lmms/samples/effects/explode01.ogg"),
                                          _read(root / "oxygen-sounds/usr/share/sounds/Oxygen-Window-Minimize.ogg")], seconds), ""),
    }


@torch.no_grad()
def gap(enc: AudioEncoder, x: np.ndarray) -> dict[str, float]:
    w = torch.from_numpy(x)[None]  # (1, S)
    alone = enc.frames(w)[0]  # (F', E)
    padded = torch.nn.functional.pad(w, (0, 30 * RATE - w.shape[1]))  # (1, 30 s)
    ctx = enc.frames(padded)[0, : alone.shape[0]]  # (F', E)
    cos = torch.nn.functional.cosine_similarity(alone, ctx, dim=-1)  # (F',)
    tail = max(1, alone.shape[0] // 14)  # last ~0.5 s of a 7 s window
    pooled = torch.nn.functional.cosine_similarity(alone.mean(0), ctx.mean(0), dim=0)
    return {"rel_l2": float((alone - ctx).norm() / ctx.norm()), "cos_mean": float(cos.mean()),
            "cos_min": float(cos.min()), "cos_tail": float(cos[-tail:].mean()), "cos_pooled": float(pooled)}


def transcribe(x: np.ndarray, enc: AudioEncoder) -> str:
    """tiny.en's own decoder (ctranslate2) on OUR log-mel of the zero-padded audio: a front-end sanity check."""
    import ctranslate2
    import tokenizers

    folder = wi.whisper_model_files("tiny.en")[0].parent
    tok = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    model = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="float32", intra_threads=2)
    padded = torch.nn.functional.pad(torch.from_numpy(x)[None], (0, 30 * RATE - len(x)))  # (1, 30 s)
    mel = enc.mel(padded).numpy()  # (1, 80, 3000)
    prompt = [tok.token_to_id("<|startoftranscript|>"), tok.token_to_id("<|notimestamps|>")]
    out = model.generate(ctranslate2.StorageView.from_array(mel), [prompt], beam_size=1)
    return tok.decode(out[0].sequences_ids[0]).strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, required=True, help="folder of extracted Debian packages")
    p.add_argument("--models", nargs="+", default=["tiny.en", "base"])
    p.add_argument("--seconds", nargs="+", type=float, default=[7.0, 5.0])
    args = p.parse_args()
    torch.manual_seed(0)
    print("| model | window | signal | rel L2 | mean frame cos | min frame cos | last 0.5 s cos | mean-pooled cos |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        enc = AudioEncoder(wi.whisper_encoder_config(name), RATE, 30 * RATE).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wi.init_encoder_from_whisper(enc, name)
        for seconds in args.seconds:
            for label, (x, _) in signals(args.root, seconds).items():
                g = gap(enc, x)
                print(f"| {name} | {seconds:g} s | {label} | {g['rel_l2']:.3f} | {g['cos_mean']:.3f} | {g['cos_min']:.3f} "
                      f"| {g['cos_tail']:.3f} | {g['cos_pooled']:.4f} |", flush=True)
        if name == "tiny.en":
            x, text = signals(args.root, 7.0)["speech (asterisk en prompts)"]
            print(f"\ntiny.en transcript of the 7 s speech window via our log-mel: {transcribe(x, enc)!r}\nreference: {text!r}\n")


if __name__ == "__main__":
    main()
