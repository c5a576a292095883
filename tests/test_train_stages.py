"""Each stage trains exactly its parameters; loss only on answer tokens; blending; activation checkpointing."""

import json

import numpy as np
import pytest
import torch

from audioflamingo.train import train
from audioflamingo.train.blend import epoch_mix, mix_counts
from audioflamingo.train.data import ClipStore, SampleBuilder, read_manifest, sample_rng
from audioflamingo.train.optim import build_optimizer, set_trainable
from audioflamingo.train.stages import LMStep, lm_batch, prepare_model
from audioflamingo.text import IGNORE, MediaIds
from train_fixtures import tiny_config, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


EXPECTED = {"clap": {"encoder"}, "pretrain": {"transform", "xattn", "embeddings"}, "sft": {"transform", "xattn", "embeddings", "lm"},
            "chat": {"transform", "xattn", "embeddings", "lm"}}


@pytest.mark.parametrize("stage", ["clap", "pretrain", "sft", "chat"])
def test_exactly_the_stage_parameters_change(corpus, tmp_path, stage, monkeypatch):
    """Frozen parameters stay bit-identical; every trainable parameter moves (weight decay 0 here, so a
    change can only come from a gradient); in pretrain only the added tokens' embedding rows move."""
    captured = {}
    import audioflamingo.train.loop as loop

    real = loop.prepare_model

    def spy(cfg, out, main):
        m = real(cfg, out, main)
        captured["model"], captured["before"] = m, _snapshot(m)
        return m

    monkeypatch.setattr(loop, "prepare_model", spy)
    cfg = tiny_config(corpus, tmp_path / stage, stage, **{"optim.weight_decay": 0.0, "max_steps": 3})
    train(cfg)
    model, before = captured["model"], captured["before"]
    after = _snapshot(model)
    groups = model.param_groups()
    media = model.media
    new_rows = [media.audio, media.eoc, media.sep]
    for group, named in groups.items():
        for name, _ in named:
            changed = not torch.equal(before[name], after[name])
            if group == "embeddings" and stage == "pretrain":
                other = torch.ones(before[name].shape[0], dtype=torch.bool)
                other[new_rows] = False
                assert torch.equal(before[name][other], after[name][other]), f"{name}: an old token's row moved"
                assert not torch.equal(before[name][new_rows], after[name][new_rows]), f"{name}: new token rows did not train"
            elif group in EXPECTED[stage]:
                assert changed, f"{stage}: {name} ({group}) should train but did not change"
            else:
                assert not changed, f"{stage}: {name} ({group}) is frozen but changed"


def test_new_token_rows_only_even_with_weight_decay(corpus):
    """AdamW decays every parameter it holds; embeddings get decay 0 so zero-gradient rows stay exact."""
    cfg = tiny_config(corpus, corpus / "unused", "pretrain")
    model = prepare_model(cfg, corpus / "unused", True)
    set_trainable(model, ["transform", "xattn", "embeddings:new"])
    opt = build_optimizer(model, cfg.optim)
    emb = model.lm.get_input_embeddings().weight
    assert cfg.optim.weight_decay == 0.1
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups if any(p is emb for p in g["params"]))
    before = emb.detach().clone()
    for _ in range(3):
        (emb.sum() * 1.0 + sum((p ** 2).sum() for p in model.transform.parameters())).backward()
        opt.step()
        opt.zero_grad()
    rows = torch.tensor([model.media.audio, model.media.eoc, model.media.sep])
    keep = torch.ones(len(before), dtype=torch.bool)
    keep[rows] = False
    assert torch.equal(before[keep], emb.detach()[keep])
    assert not torch.equal(before[rows], emb.detach()[rows])


def test_loss_only_on_answer_tokens_and_equals_hand_computation(corpus, tmp_path):
    cfg = tiny_config(corpus, tmp_path, "sft")
    model = prepare_model(cfg, tmp_path, True).eval()
    rows = read_manifest(corpus / "train.jsonl")[:3]
    builder = SampleBuilder(model.tokenizer, "sft", 512)
    batch, n = lm_batch(list(enumerate(rows)), builder, 0, 0, "cpu")
    media = MediaIds.of(model.tokenizer)
    for ids, labels, row in zip(batch["input_ids"], batch["labels"], rows):
        kept = labels[labels != IGNORE]
        text = model.tokenizer.decode(kept)
        assert text == row["answer"] + "<|endofchunk|></s>"  # answer, end of chunk, end of sequence; nothing else
        sep = (ids == media.sep).nonzero()[0, 0]
        assert (labels[: sep + 1] == IGNORE).all()
    assert n == sum(int((l != IGNORE).sum()) for l in batch["labels"])
    step = LMStep(model, ClipStore(16000, model.config.audio))
    with torch.no_grad():
        total = step(**batch)
        clips = [[step.clips(k) for k in keys] for keys in batch["audios"]]
        logits, mean = model(batch["input_ids"], batch["attention_mask"], model.encode_audio(clips), batch["labels"])
        logp = logits.log_softmax(-1)
        manual = 0.0
        for b in range(logits.shape[0]):
            for t in range(1, logits.shape[1]):
                if batch["labels"][b, t] != IGNORE:
                    manual -= float(logp[b, t - 1, batch["labels"][b, t]])
    assert abs(float(total) - manual) < 1e-3
    assert abs(float(mean) - manual / n) < 1e-5


def test_truncated_answer_gets_no_loss(corpus, tmp_path):
    cfg = tiny_config(corpus, tmp_path, "sft")
    model = prepare_model(cfg, tmp_path, True)
    row = read_manifest(corpus / "train.jsonl")[0]
    full = SampleBuilder(model.tokenizer, "sft", 512).build(row, sample_rng(0, 0, 0))
    sep_at = int((full.ids == model.media.sep).nonzero()[0, 0])
    cut = SampleBuilder(model.tokenizer, "sft", sep_at + 3).build(row, sample_rng(0, 0, 0))
    assert len(cut.ids) == sep_at + 3
    assert (cut.labels == IGNORE).all()
    assert (full.labels != IGNORE).sum() > 0


def test_blend_weights_are_passes_per_epoch():
    names = ["a"] * 10 + ["b"] * 8 + ["c"] * 6
    order = epoch_mix(names, {"a": 2.0, "b": 0.5, "c": 1.5}, 1.0, seed=3, epoch=0)
    counts = mix_counts(order, names)
    assert counts == {"a": 20, "b": 4, "c": 9}
    assert sorted(i for i in order if names[i] == "a") == sorted(list(range(10)) * 2)
    assert len({i for i in order if names[i] == "b"}) == 4  # a subsample: distinct items
    assert order == epoch_mix(names, {"a": 2.0, "b": 0.5, "c": 1.5}, 1.0, seed=3, epoch=0)  # seeded
    other = epoch_mix(names, {"a": 2.0, "b": 0.5, "c": 1.5}, 1.0, seed=3, epoch=1)
    assert other != order and mix_counts(other, names) == counts
    assert mix_counts(epoch_mix(names, {"a": 0}, 1.0, 0, 0), names) == {"b": 8, "c": 6}


def test_label_set_weights_multiply_the_rows_of_a_label_set_only():
    from audioflamingo.train.blend import Blend, MixSource

    rows = ([{"dataset": "music", "task": "classification", "label_set": "tempo"}] * 4
            + [{"dataset": "music", "task": "classification", "label_set": "instrument"}] * 6
            + [{"dataset": "music", "task": "aqa", "label_set": "tempo"}] * 2
            + [{"dataset": "music", "task": "caption"}] * 5 + [{"dataset": "noise", "task": "caption"}] * 3)
    blend = Blend({"music": 1.5}, 1.0, {}, {"tempo": 3.0})
    assert blend.name(rows[0]) == "music/classification/tempo" and blend.name(rows[-1]) == "noise/caption"
    counts = MixSource(rows, blend, seed=0, batch_size=1).counts(0)
    # tempo rows: 1.5 x 3 = 4.5 passes (of classification and AQA alike); the others keep their dataset weight
    # (captions: 5 once + round(0.5 x 5) = 2 of a seeded half)
    assert counts == {"music/aqa/tempo": 9, "music/caption": 5 + 2, "music/classification/instrument": 9,
                      "music/classification/tempo": 18, "noise/caption": 3}
    # without label-set weights the names (and the logged mix) stay per dataset
    assert MixSource(rows, Blend({"music": 1.5}), seed=0, batch_size=1).counts(0) == {"music": 17 + 8, "noise": 3}


def test_epoch_mix_is_logged(corpus, tmp_path):
    cfg = tiny_config(corpus, tmp_path, "sft", **{"data.weights": {"noise": 2.0, "tones": 0.5}, "max_steps": 1})
    train(cfg)
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    mix = [r for r in rows if r.get("event") == "epoch_mix"]
    assert mix and mix[0]["mix"] == {"noise": 6, "tones": 12}
    assert any("loss" in r for r in rows) and any("val_loss" in r for r in rows)


def test_activation_checkpointing_gives_the_same_losses(corpus, tmp_path, monkeypatch):
    import audioflamingo.train.loop as loop

    models, real = [], loop.prepare_model
    monkeypatch.setattr(loop, "prepare_model", lambda *a: models.append(real(*a)) or models[-1])
    a = train(tiny_config(corpus, tmp_path / "a", "sft"))["losses"]
    b = train(tiny_config(corpus, tmp_path / "b", "sft", activation_checkpointing=True))["losses"]
    flags = [l.decoder_layer.gradient_checkpointing for l in models[1].lm.transformer.h]
    assert flags == [True, True] and not models[0].lm.transformer.h[0].decoder_layer.gradient_checkpointing
    assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    assert a[-1] < a[0]


def test_recall_at_k_hand_computed():
    from audioflamingo.train.clap import recall_at, retrieval_metrics

    sim = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.7, 0.6, 0.1]])
    rel = torch.eye(3, dtype=torch.bool)
    r = recall_at(sim, rel, ks=(1, 2))
    assert r[1] == pytest.approx(1 / 3)  # only query 0 ranks its own item first
    assert r[2] == pytest.approx(2 / 3)  # query 2 ranks its item third
    # two clips share caption 0: either retrieves it at rank 1
    a = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), dim=-1)
    t = torch.nn.functional.normalize(torch.tensor([[1.0, 0.05], [0.0, 1.0]]), dim=-1)
    m = retrieval_metrics(a, t, torch.tensor([0, 0, 1]))
    assert m["a2t_R@1"] == 1.0 and m["t2a_R@1"] == 1.0


def test_contrastive_loss_treats_shared_captions_as_positives():
    from audioflamingo.train.clap import contrastive_loss

    a = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]), dim=-1)
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # clips 0 and 1 share one caption
    scale = torch.tensor(1.0)
    shared = contrastive_loss(a, t, torch.tensor([0, 0, 1]), scale)
    distinct = contrastive_loss(a, t, torch.tensor([0, 1, 2]), scale)
    assert shared < distinct  # clip 1 is not pushed away from its own caption
    lg = scale.exp() * a @ t.T  # (3, 3)
    pa, pt = lg.log_softmax(1), lg.T.log_softmax(1)
    a2t = -(0.5 * (pa[0, 0] + pa[0, 1]) + 0.5 * (pa[1, 0] + pa[1, 1]) + pa[2, 2]) / 3
    t2a = -(0.5 * (pt[0, 0] + pt[0, 1]) + 0.5 * (pt[1, 0] + pt[1, 1]) + pt[2, 2]) / 3
    assert float(shared) == pytest.approx(float(0.5 * (a2t + t2a)), rel=1e-5)


def test_time_budget_finishes_like_a_last_step(corpus, tmp_path):
    out = train(tiny_config(corpus, tmp_path, "sft", max_steps=50, max_minutes=0.0, export=True, save_every=0))
    assert out["step"] == 1 and len(out["losses"]) == 1  # the first step passes a zero budget
    assert (tmp_path / "model" / "model.safetensors").is_file() and out["val"]  # validated and exported
    assert (tmp_path / "checkpoints" / "step-000001").is_dir()  # and resumable


def test_chat_can_mix_single_turn_items_with_task_weights(corpus, tmp_path):
    cfg = tiny_config(corpus, tmp_path, "chat", max_steps=1,
                      **{"data.chat_plain": True, "data.task_weights": {"caption": 0.5, "classification": 0.0}})
    train(cfg)
    mix = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines() if "epoch_mix" in l][0]["mix"]
    # 12 tone clips: 12 dialogs (weight 1), 12 captions x 0.5, no classification; noise: 3 captions x 0.5 -> round(1.5) = 2
    assert mix == {"noise/caption": 2, "tones/caption": 6, "tones/dialog": 12}


def test_relabel_renames_labels_consistently_and_only_when_copyable():
    from audioflamingo.train.data import relabel, relabel_pool

    rows = [{"task": "classification", "answer": a} for a in ["dog", "cat", "dog"]]
    rows.append({"task": "caption", "answer": "A bell rings twice."})
    pool = relabel_pool(rows)
    assert pool == ["bell", "cat", "dog", "rings", "twice"]  # labels + caption words of 3+ letters
    shots = [{"audio": f"s{i}", "prompt": "Which animal? OPTIONS: dog, cat.", "answer": a} for i, a in enumerate(["dog", "cat", "dog"])]
    query = {"task": "classification", "prompt": "Which animal? OPTIONS: dog, cat.", "answer": "cat", "audio": "q"}
    seen = set()
    for seed in range(20):
        new_shots, new_query = relabel(shots, query, pool, np.random.default_rng(seed))
        names = [s["answer"] for s in new_shots]
        assert names[0] == names[2] != names[1]  # same label -> same name, different labels -> different names
        assert new_query["answer"] == names[1]  # the query's label is renamed like the shot that had it
        assert new_query["prompt"] == "Which animal?" and all(s["prompt"] == "Which animal?" for s in new_shots)
        assert [s["audio"] for s in new_shots] == ["s0", "s1", "s2"]
        seen.add(tuple(names))
    assert len(seen) > 5  # names are drawn at random
    # nothing to copy (the query's label is not among the shots) or another task: unchanged
    other = {**query, "answer": "cow"}
    assert relabel(shots, other, pool, np.random.default_rng(0)) == (shots, other)
    cap = {**query, "task": "caption"}
    assert relabel(shots, cap, pool, np.random.default_rng(0)) == (shots, cap)


def test_copyable_loss_keeps_only_answers_seen_earlier_in_the_sample():
    """data.icl_loss: copyable: a renamed label's first mention carries no loss (nothing predicts a random
    name); its later mentions, the query's answer among them, do."""
    from audioflamingo.text import IGNORE, encode, icl_text
    from audioflamingo.config import load_model_config
    from audioflamingo.model.loading import build_model
    from audioflamingo.train.data import SampleBuilder, keep_copyable

    tok = build_model(load_model_config("tiny")).tokenizer
    bos, eos = tok.bos_token or tok.eos_token, tok.eos_token
    answers = ["zebra", "apple", "zebra", "apple"]  # shots, then the query
    text = icl_text([("Which?", a) for a in answers[:3]], "Which?", answers[3], bos, eos, 1)
    ids, labels = encode(tok, text)
    kept = keep_copyable(labels, answers)
    spans = lambda lab: [tok.decode(ids[i]) for i in range(len(lab)) if lab[i] != IGNORE]  # noqa: E731
    assert "".join(spans(labels)).count("zebra") == 2 and "".join(spans(labels)).count("apple") == 2
    got = "".join(spans(kept))
    assert got.count("zebra") == 1 and got.count("apple") == 1  # shot 3 and the query
    last = max(i for i in range(len(ids)) if labels[i] != IGNORE)
    assert kept[last] == labels[last]  # the query's answer (through its end of chunk / EOS) keeps its loss
    # truncation: an answer cut off has no labels, and the spans before it still map to their answers
    cut = encode(tok, text, max_length=len(ids) - 3)[1]
    assert "".join(spans(keep_copyable(cut, answers))).count("zebra") == 1
    with pytest.raises(Exception, match="icl_loss"):
        SampleBuilder(tok, "sft", 64, icl_loss="last")


def test_copy_drill_puts_the_query_itself_among_its_shots():
    """data.icl_self: in that share of interleaved samples one shot is the query item (same audio and answer);
    the others stay the retrieved ones, and the query is still last."""
    from audioflamingo.config import load_model_config
    from audioflamingo.model.loading import build_model
    from audioflamingo.train.data import RowShots

    tok = build_model(load_model_config("tiny")).tokenizer
    row = {"id": "q", "audio": "q.wav", "task": "caption", "prompt": "Describe.", "answer": "A quiet hum.",
           "shots": [{"audio": f"s{i}.wav", "prompt": "Describe.", "answer": f"Shot {i}."} for i in range(4)]}
    counts = {0.0: 0, 1.0: 0}
    for p in counts:
        b = SampleBuilder(tok, "sft", 256, icl_fraction=1.0, icl_shots=[4], shots=RowShots(), icl_self=p)
        for seed in range(20):
            s = b.build(row, np.random.default_rng(seed))
            assert s.audios[-1] == "q.wav" and len(s.audios) == 5
            own = s.audios[:-1].count("q.wav")
            assert own == (1 if p == 1.0 else 0)
            counts[p] += own
            assert s.text.count("A quiet hum.") == 1 + own  # the shot carries the query's answer
    assert counts == {0.0: 0, 1.0: 20}


def test_recall_drill_is_text_only_and_trains_only_the_copyable_name():
    """data.recall: a drill has no audio; k (key, name) chunks, then one key again, and the loss falls on
    that key's name alone, which the sample showed earlier beside the same key."""
    from audioflamingo.config import load_model_config
    from audioflamingo.model.loading import build_model
    from audioflamingo.text import AUDIO, EOC, IGNORE, SEP
    from audioflamingo.train.data import RECALL_PROMPTS

    tok = build_model(load_model_config("tiny")).tokenizer
    pool = [f"name{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    row = {"id": "r", "audio": "r.wav", "task": "caption", "prompt": "Describe.", "answer": "A hum."}
    b = SampleBuilder(tok, "sft", 512, icl_shots=[2, 4, 8], label_pool=pool, recall=1.0)
    ks = set()
    for seed in range(30):
        s = b.build(row, np.random.default_rng(seed))
        assert s.audios == [] and AUDIO not in s.text and s.row_id == "r#recall"
        chunks = s.text.split("similar examples. ", 1)[1].split(EOC)[:-1]  # every (prompt, answer) chunk, the query last
        pairs = [(c.split(SEP)[0].split("Answer:")[0], c.split(SEP)[1]) for c in chunks]
        ks.add(len(pairs) - 1)
        assert pairs[-1] in pairs[:-1]  # the query repeats one shot, key and name
        assert len({p for p, _ in pairs[:-1]}) == len(pairs) - 1  # the keys are distinct
        trained = tok.decode([int(t) for t, l in zip(s.ids, s.labels) if l != IGNORE], skip_special_tokens=True)
        assert trained.strip() == pairs[-1][1].strip()
    assert ks == {2, 4, 8}
    # a drill that would not fit max_length gets fewer pairs instead of a cut (untrainable) query
    short = SampleBuilder(tok, "sft", 160, icl_shots=[8], label_pool=pool, recall=1.0).build(row, np.random.default_rng(0))
    assert short.text.count(EOC) < 9 and (short.labels != IGNORE).any()
    assert any(t.split("{}")[0] in s.text for t in RECALL_PROMPTS)
    # off by default, and never in the chat stage
    assert SampleBuilder(tok, "sft", 256).build(row, np.random.default_rng(0)).audios == ["r.wav"]
    chat = SampleBuilder(tok, "chat", 256, icl_shots=[2], label_pool=pool, recall=1.0)
    assert all(chat.build(row, np.random.default_rng(seed)).audios == ["r.wav"] for seed in range(5))
    with pytest.raises(Exception, match="label pool"):
        SampleBuilder(tok, "sft", 256, icl_shots=[8], label_pool=pool[:5], recall=1.0).build(row, np.random.default_rng(0))


@pytest.mark.parametrize("stage", ["pretrain", "sft"])
def test_recall_drills_train_beside_audio_samples(corpus, tmp_path, stage):
    """data.recall mixes text-only drills into batches of audio samples (the encoder cache too)."""
    for p in (0.5, 1.0):  # 1.0: batches without any audio
        out = train(tiny_config(corpus, tmp_path / str(p), stage, max_steps=3, **{"data.recall": p, "data.icl_shots": [2, 4]}))
        assert out["step"] == 3 and all(np.isfinite(out["losses"]))
