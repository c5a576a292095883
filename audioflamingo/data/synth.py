"""Synthesised clips whose labels are true by construction: tones, beeps, DTMF, noise, and speech.

Each `*_candidates` function draws parameters from a seeded generator and returns Candidates whose
`render` dict holds every parameter; `render_signal` / `render_speech` turn one into samples. The
same seed gives the same parameters, so a build is reproducible and resumable.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from audioflamingo.data.debian import RESERVED_VOICES
from audioflamingo.data.sources import Candidate

# ----------------------------------------------------------------------------------------------------
# tones, beeps, DTMF, noise

DTMF = {"1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "4": (770, 1209), "5": (770, 1336),
        "6": (770, 1477), "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "*": (941, 1209),
        "0": (941, 1336), "#": (941, 1477)}
NOISE_COLOURS = ("white", "pink", "brown")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def signal_candidates(n: int, rng: np.random.Generator, continuous_sweeps: bool = False, varied_noise: bool = False) -> list[Candidate]:
    """n clips spread over beeps (count, frequency), DTMF digit strings, coloured noise and sweeps.
    Sweeps draw their ends and length from 3 x 3 x 2 values (at most 36 distinct clips survive
    deduplication), or with `continuous_sweeps` from continuous ranges (every sweep distinct; grouped by
    direction and octave band so near-identical sweeps stay on one side of the split). Coloured noise lasts
    1, 2 or 3 s (9 split groups in all), or with `varied_noise` 0.8-3.0 s at a random level (grouped by colour
    and quarter second: ~27 groups, so every colour can have train, val and test groups)."""
    out = []
    for i in range(n):
        kind = ("beeps", "dtmf", "noise", "sweep")[i % 4]
        if kind == "beeps":
            p = {"op": "beeps", "count": int(rng.integers(1, 7)), "freq": int(rng.choice([440, 660, 880, 1000, 1200, 1500])),
                 "beep_s": float(rng.choice([0.1, 0.15, 0.2])), "gap_s": float(rng.choice([0.15, 0.25, 0.35]))}
            facts = {"beep_count": p["count"], "frequency_hz": p["freq"],
                     "phrase": f"{NUMBER_WORDS[p['count']]} beep{'s' if p['count'] > 1 else ''} at {p['freq']} Hz"}
            group = f"beeps:{p['count']}:{p['freq']}"
        elif kind == "dtmf":
            digits = "".join(rng.choice(list("0123456789"), size=int(rng.integers(3, 8))))
            p = {"op": "dtmf", "digits": digits, "tone_s": 0.12, "gap_s": 0.08}
            facts = {"digits": digits, "beep_count": len(digits), "phrase": f"telephone keypad tones dialling {digits}"}
            group = f"dtmf:{digits}"
        elif kind == "noise":
            colour = NOISE_COLOURS[int(rng.integers(0, 3))]
            if varied_noise:
                p = {"op": "noise", "colour": colour, "seconds": round(float(rng.uniform(0.8, 3.0)), 2),
                     "seed": int(rng.integers(1 << 31)), "level": round(float(rng.uniform(0.1, 0.4)), 3)}
                group = f"noise:{colour}:{int(p['seconds'] * 4)}"
            else:
                p = {"op": "noise", "colour": colour, "seconds": float(rng.choice([1.0, 2.0, 3.0])), "seed": int(rng.integers(1 << 31))}
                group = f"noise:{colour}:{p['seconds']}"
            facts = {"noise_colour": colour, "phrase": f"steady {colour} noise"}
        elif continuous_sweeps:
            lo, hi = float(np.exp(rng.uniform(np.log(80), np.log(400)))), float(np.exp(rng.uniform(np.log(1500), np.log(5000))))
            up = bool(rng.integers(0, 2))
            p = {"op": "sweep", "f0": round(lo if up else hi, 1), "f1": round(hi if up else lo, 1),
                 "seconds": round(float(rng.uniform(0.8, 2.5)), 2)}
            facts = {"direction": "rising" if up else "falling", "phrase": f"a {'rising' if up else 'falling'} tone sweep"}
            group = f"sweep:{'up' if up else 'down'}:{int(np.log2(lo / 80))}:{int(np.log2(hi / 1500))}"
        else:
            lo, hi = int(rng.choice([100, 200, 300])), int(rng.choice([2000, 3000, 4000]))
            up = bool(rng.integers(0, 2))
            p = {"op": "sweep", "f0": lo if up else hi, "f1": hi if up else lo, "seconds": float(rng.choice([1.0, 2.0]))}
            facts = {"direction": "rising" if up else "falling", "phrase": f"a {'rising' if up else 'falling'} tone sweep"}
            group = f"sweep:{p['f0']}:{p['f1']}"
        out.append(Candidate(f"signal/{kind}_{i:05d}", "synth-signal", "signal", group, facts, {"synthesis": p}, p))
    return out


def _tone(freqs, seconds, rate) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs)
    ramp = min(len(t) // 2, int(0.005 * rate))  # 5 ms fades: no clicks (a click would be an extra onset)
    env = np.ones_like(t)
    env[:ramp] = np.linspace(0, 1, ramp)
    env[len(t) - ramp:] = np.linspace(1, 0, ramp)
    return (0.5 * x * env).astype(np.float32)


def render_signal(p: dict, rate: int) -> np.ndarray:
    sil = lambda s: np.zeros(int(s * rate), np.float32)  # noqa: E731
    if p["op"] == "beeps":
        parts = [sil(0.2)]
        for _ in range(p["count"]):
            parts += [_tone([p["freq"]], p["beep_s"], rate), sil(p["gap_s"])]
        return np.concatenate(parts + [sil(0.1)])
    if p["op"] == "dtmf":
        parts = [sil(0.2)]
        for d in p["digits"]:
            parts += [_tone(DTMF[d], p["tone_s"], rate), sil(p["gap_s"])]
        return np.concatenate(parts + [sil(0.1)])
    if p["op"] == "noise":
        rng = np.random.default_rng(p["seed"])
        n = int(p["seconds"] * rate)
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.maximum(np.fft.rfftfreq(n, 1 / rate), 1.0)
        spec *= {"white": 1.0, "pink": 1 / np.sqrt(f), "brown": 1 / f}[p["colour"]]
        x = np.fft.irfft(spec, n)
        return (p.get("level", 0.3) * x / (np.max(np.abs(x)) + 1e-9)).astype(np.float32)
    if p["op"] == "sweep":
        t = np.arange(int(p["seconds"] * rate)) / rate
        k = np.log(p["f1"] / p["f0"]) / p["seconds"]  # exponential sweep
        phase = 2 * np.pi * p["f0"] * (np.exp(k * t) - 1) / k
        return (0.4 * np.sin(phase)).astype(np.float32)
    raise ValueError(f"unknown signal op {p['op']!r}")


# ----------------------------------------------------------------------------------------------------
# speech: espeak-ng voices in several languages, flite voices; transcripts are the input text

LANGS = {  # espeak-ng voice -> (language name, sentence templates); {n} is a number said as digits
    "en-us": ("English", ["Please call me back at {n}.", "The meeting starts at {n} o'clock.", "Turn left after {n} metres.",
                          "Open the window, please.", "I would like a cup of tea.", "The train is late again.",
                          "Where is the nearest station?", "It is raining outside.", "Set a timer for {n} minutes.",
                          "The answer is {n}."]),
    "es": ("Spanish", ["Llámame al número {n}.", "La reunión empieza a las {n}.", "Abre la ventana, por favor.",
                       "Quiero una taza de café.", "El tren llega tarde.", "¿Dónde está la estación?",
                       "Hoy hace mucho calor.", "La respuesta es {n}."]),
    "fr": ("French", ["Rappelle-moi au {n}.", "La réunion commence à {n} heures.", "Ouvre la fenêtre, s'il te plaît.",
                      "Je voudrais un café.", "Le train est en retard.", "Où est la gare?", "Il pleut dehors.",
                      "La réponse est {n}."]),
    "de": ("German", ["Ruf mich unter {n} an.", "Das Treffen beginnt um {n} Uhr.", "Mach bitte das Fenster auf.",
                      "Ich hätte gern einen Kaffee.", "Der Zug hat Verspätung.", "Wo ist der Bahnhof?",
                      "Es regnet draußen.", "Die Antwort ist {n}."]),
    "it": ("Italian", ["Richiamami al {n}.", "La riunione inizia alle {n}.", "Apri la finestra, per favore.",
                       "Vorrei un caffè.", "Il treno è in ritardo.", "Dov'è la stazione?", "Fuori piove.",
                       "La risposta è {n}."]),
    "pt": ("Portuguese", ["Ligue para o número {n}.", "A reunião começa às {n}.", "Abra a janela, por favor.",
                          "Eu quero um café.", "O comboio está atrasado.", "Onde fica a estação?", "Está a chover.",
                          "A resposta é {n}."]),
    "nl": ("Dutch", ["Bel me terug op {n}.", "De vergadering begint om {n} uur.", "Doe het raam open, alsjeblieft.",
                     "Ik wil graag koffie.", "De trein is te laat.", "Waar is het station?", "Het regent buiten.",
                     "Het antwoord is {n}."]),
}
FLITE_VOICES = {"kal16": "male", "awb": "male", "rms": "male"}  # "slt" is reserved: never used


def espeak_variants() -> dict[str, str]:
    """espeak-ng voice variants -> gender, read from each variant file's `gender` line (metadata)."""
    try:
        out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True).stdout
    except (FileNotFoundError, subprocess.CalledProcessError):
        return {}
    data = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout
    m = re.search(r"Data at: (\S+)", data)
    root = Path(m.group(1)) if m else Path("/usr/lib/x86_64-linux-gnu/espeak-ng-data")
    variants = {}
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5 and cols[4].startswith("!v/"):
            vf = root / "voices" / cols[4]
            g = re.search(r"^gender\s+(male|female)", vf.read_text(errors="replace"), re.M) if vf.exists() else None
            if g:  # only variants whose file states a gender
                variants[cols[4][3:]] = g.group(1)
    return variants


def speech_candidates(n: int, rng: np.random.Generator, english_texts: list[str] | None = None,
                      use_flite: bool = True) -> list[Candidate]:
    """n synthetic utterances across languages, voice variants, speeds and pitches."""
    variants = sorted(espeak_variants().items())
    if not variants:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng): it is needed for synthetic speech")
    langs = sorted(LANGS)
    out = []
    for i in range(n):
        lang = langs[i % len(langs)]
        language, templates = LANGS[lang]
        if lang == "en-us" and english_texts and rng.random() < 0.4:
            text = english_texts[int(rng.integers(len(english_texts)))]
        else:
            text = templates[int(rng.integers(len(templates)))].format(n=int(rng.integers(2, 100)))
        engine = "flite" if use_flite and lang == "en-us" and rng.random() < 0.25 else "espeak-ng"
        if engine == "flite":
            voice = sorted(FLITE_VOICES)[int(rng.integers(len(FLITE_VOICES)))]
            assert voice not in RESERVED_VOICES
            gender, speed, pitch = FLITE_VOICES[voice], float(rng.choice([0.85, 1.0, 1.2])), None
            p = {"op": "flite", "voice": voice, "text": text, "stretch": speed}
        else:
            variant, gender = variants[int(rng.integers(len(variants)))]
            speed, pitch = int(rng.integers(120, 221)), int(rng.integers(20, 81))
            voice = f"{lang}+{variant}"
            p = {"op": "espeak", "voice": voice, "text": text, "speed": speed, "pitch": pitch}
        facts = {"transcript": text, "language": language, "gender": gender, "voice": f"{engine}:{voice}",
                 "phrase": f"a synthetic {gender} voice speaking {language}"}
        rate_word = "slow" if (engine == "espeak-ng" and speed < 150) else "fast" if (engine == "espeak-ng" and speed > 190) else None
        if rate_word:
            facts["speech_rate"] = rate_word
        out.append(Candidate(f"tts/{engine}_{i:05d}", f"tts-{engine}", "speech", f"text:{text.lower()}",
                             facts, {"synthesis": p}, p))
    return out


def render_speech(p: dict, rate: int) -> np.ndarray:
    from audioflamingo.data.audiofile import decode, trim_silence

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "tts.wav"
        if p["op"] == "espeak":
            cmd = ["espeak-ng", "-v", p["voice"], "-s", str(p["speed"]), "-p", str(p["pitch"]), "-w", str(wav), p["text"]]
        else:
            cmd = ["flite", "-voice", p["voice"], "--setf", f"duration_stretch={p['stretch']}", "-t", p["text"], "-o", str(wav)]
        subprocess.run(cmd, capture_output=True, check=True, timeout=60)
        x = trim_silence(decode(wav, rate), rate)
    pad = np.zeros(int(0.15 * rate), np.float32)
    return np.concatenate([pad, x, pad])
