"""Metrics against values computed by hand (in the comments), and against pycocoevalcap when installed."""

import importlib.util
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from audioflamingo.eval.metrics import (
    accuracy,
    average_precision,
    bleu,
    cer,
    cider_d,
    coco_tokenize,
    get_metric,
    macro_f1,
    mean_average_precision,
    meteor,
    meteor_unavailable_reason,
    multilabel_f1,
    retrieval_metrics,
    rouge_l,
    wer,
)
from audioflamingo.eval.metrics.text import asr_normalize

FIX = Path(__file__).parent / "fixtures" / "eval"
HAS_COCO = importlib.util.find_spec("pycocoevalcap") is not None


def _fixture_captions():
    preds = [json.loads(x) for x in (FIX / "captions_pred.jsonl").read_text().splitlines()]
    refs = [json.loads(x) for x in (FIX / "captions_refs.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == [r["id"] for r in refs]
    return [p["text"] for p in preds], [r["refs"] for r in refs], [p["id"] for p in preds]


# ---------------------------------------------------------------------------------------- tokeniser


def test_coco_tokenize_hand_cases():
    assert coco_tokenize("A dog's barking, loudly!") == "a dog 's barking loudly"
    assert coco_tokenize("It doesn't stop... can't.") == "it does n't stop ca n't"
    assert coco_tokenize('He said "hi" (twice).') == "he said hi -lrb- twice -rrb-"  # pycocoevalcap keeps -lrb-
    assert coco_tokenize("Mr. Smith pays $5 at 5 p.m.") == "mr. smith pays $ 5 at 5 p.m."
    assert coco_tokenize("1,000 birds,dogs; high-pitched") == "1,000 birds dogs high-pitched"
    assert coco_tokenize("Wow!! what?!") == "wow !! what ?!"


def test_asr_normalize():
    assert asr_normalize("The CAT, sat-on [noise] the mat!") == "the cat sat on the mat"
    assert asr_normalize("Don't say 'hello' (laughs) <unk>") == "don't say hello"


# ---------------------------------------------------------------------------------------- BLEU


def test_bleu_hand_computed():
    # hyp "the cat sat on the mat" vs ref "the cat is on the mat" (same length: no brevity penalty)
    # 1-gram: 5/6 match (sat misses); 2-gram: 3/5 (the cat, on the, the mat); 3-gram: 1/4 (on the mat)
    # BLEU-1 = 5/6; BLEU-2 = sqrt(5/6 * 3/5) = sqrt(1/2); BLEU-3 = (5/6 * 3/5 * 1/4)^(1/3) = 0.5
    # 4-gram: 0/3 matches -> BLEU-4 ~ (0.125 * 1e-15 / 3)^(1/4) ~ 8e-5
    s, per = bleu(["the cat sat on the mat"], [["the cat is on the mat"]], tokenize=False)
    assert s[0] == pytest.approx(5 / 6)
    assert s[1] == pytest.approx(math.sqrt(0.5))
    assert s[2] == pytest.approx(0.5)
    assert s[3] < 1e-3
    assert per[0] == pytest.approx(s)
    assert get_metric("bleu_2")(["the cat sat on the mat"], [["the cat is on the mat"]])[0] == pytest.approx(math.sqrt(0.5))


def test_bleu_brevity_penalty_and_closest_reference():
    # "the cat" (c=2) vs a 6-word reference: p1 = 1, BP = exp(1 - 6/2) = exp(-2)
    s, _ = bleu(["the cat"], [["the cat sat on the mat"]], tokenize=False)
    assert s[0] == pytest.approx(math.exp(-2))
    # hyp of 4 words, refs of 3 and 5 words: both 1 away, the shorter (3) wins -> c > r -> no penalty
    s, _ = bleu(["a b c d"], [["a b c", "a b c d e"]], tokenize=False)
    assert s[0] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------- ROUGE-L


def test_rouge_l_hand_computed():
    # "a b" vs "a b c d": LCS 2, P = 1, R = 1/2, F = (1 + 1.44) * 1 * 0.5 / (0.5 + 1.44 * 1) = 1.22 / 1.94
    s, _ = rouge_l(["a b"], [["a b c d"]], tokenize=False)
    assert s == pytest.approx(1.22 / 1.94)
    # P and R are maximised separately over references: P = 1 from "a b c d e f", R = 1 from "c"
    s, _ = rouge_l(["a b c"], [["a b c d e f", "c"]], tokenize=False)
    assert s == pytest.approx(1.0)
    assert rouge_l(["x y"], [["a b"]], tokenize=False)[0] == 0.0


# ---------------------------------------------------------------------------------------- CIDEr-D


def test_cider_d_hand_computed():
    # one item: IDF = log(1) - log(1) = 0 for every n-gram, so CIDEr-D is 0 however good the caption
    assert cider_d(["a dog barks"], [["a dog barks"]], tokenize=False)[0] == 0.0
    # two items, every n-gram in one item's refs -> idf = log 2 for all (unseen n-grams count df = 1)
    # item A: "a b" vs "a b": cosine 1 for n = 1, 2; n = 3, 4 empty -> 0; mean 0.5; x10 -> 5.0
    # item B: "c d e" vs "c d": n=1: 2 L^2 / (sqrt3 L * sqrt2 L) = 2/sqrt6; n=2: 1/sqrt2; n=3,4: 0
    #   length penalty on bigram counts 2 vs 1: exp(-1 / 72); score = 10 * (2/sqrt6 + 1/sqrt2) / 4 * exp(-1/72)
    b = 10 * (2 / math.sqrt(6) + 1 / math.sqrt(2)) / 4 * math.exp(-1 / 72)
    s, per = cider_d(["a b", "c d e"], [["a b"], ["c d"]], tokenize=False)
    assert per == pytest.approx([5.0, b])
    assert s == pytest.approx((5.0 + b) / 2)


# ---------------------------------------------------------------------------------------- against pycocoevalcap


@pytest.mark.skipif(not HAS_COCO, reason="pycocoevalcap not installed (pip install pycocoevalcap)")
def test_caption_metrics_equal_pycocoevalcap():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    preds, refs, ids = _fixture_captions()
    res = {i: [coco_tokenize(p)] for i, p in zip(ids, preds)}
    gts = {i: [coco_tokenize(r) for r in rs] for i, rs in zip(ids, refs)}
    coco_bleu, coco_bleu_items = Bleu(4).compute_score(gts, res, verbose=0)
    ours, ours_items = bleu(preds, refs)
    assert ours == pytest.approx(coco_bleu, abs=1e-12)
    assert np.array(ours_items).T == pytest.approx(np.array(coco_bleu_items), abs=1e-12)
    assert rouge_l(preds, refs)[0] == pytest.approx(Rouge().compute_score(gts, res)[0], abs=1e-12)
    coco_cider, coco_cider_items = Cider().compute_score(gts, res)
    ours_cider, ours_cider_items = cider_d(preds, refs)
    assert ours_cider == pytest.approx(coco_cider, abs=1e-12)
    assert ours_cider_items == pytest.approx(list(coco_cider_items), abs=1e-12)
    assert ours_cider > 0.5  # the fixture's predictions are decent captions: a sanity floor


@pytest.mark.skipif(not HAS_COCO or shutil.which("java") is None, reason="needs pycocoevalcap and java")
def test_python_tokenizer_equals_java_ptbtokenizer():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    preds, refs, ids = _fixture_captions()
    texts = preds + [r for rs in refs for r in rs]
    java = PTBTokenizer().tokenize({str(i): [{"caption": t}] for i, t in enumerate(texts)})
    assert [java[str(i)][0] for i in range(len(texts))] == [coco_tokenize(t) for t in texts]


@pytest.mark.skipif(meteor_unavailable_reason() is not None, reason=str(meteor_unavailable_reason()))
def test_meteor_runs():
    preds, refs, ids = _fixture_captions()
    preds, refs, ids = preds + ["a dog barks loudly"], refs + [["a dog barks loudly"]], ids + ["same"]
    score, per = meteor(preds, refs)
    assert 0.2 < score < 0.6 and len(per) == len(preds)
    assert per[-1] > 0.9 and per[-1] == max(per)  # an exact match scores highest (just under 1)


@pytest.mark.slow  # two METEOR runs load the paraphrase tables twice (~20 s on 2 cores)
@pytest.mark.skipif(meteor_unavailable_reason() is not None or not HAS_COCO, reason="needs java + pycocoevalcap")
def test_meteor_equals_pycocoevalcap():
    from pycocoevalcap.meteor.meteor import Meteor

    preds, refs, ids = _fixture_captions()
    score, _ = meteor(preds, refs)
    res = {i: [coco_tokenize(p)] for i, p in zip(ids, preds)}
    gts = {i: [coco_tokenize(r) for r in rs] for i, rs in zip(ids, refs)}
    assert score == pytest.approx(Meteor().compute_score(gts, res)[0], abs=1e-9)

# ---------------------------------------------------------------------------------------- classification


def test_accuracy_and_macro_f1_hand_computed():
    # normalised: "dog bark" == "dog bark"; "cat" != "dog"; "yes" in {"no", "yes"} -> 2/3
    assert accuracy(["Dog bark.", "cat", "Yes"], [["dog_bark"], ["dog"], ["no", "yes"]])[0] == pytest.approx(2 / 3)
    # gold a a b b, pred a b b c: F1(a) = 2*1/(2+0+1) = 2/3, F1(b) = 2/(2+1+1) = 1/2, F1(c) = 0
    s, per = macro_f1(["a", "b", "b", "c"], [["a"], ["a"], ["b"], ["b"]])
    assert s == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert per == [1.0, 0.0, 1.0, 0.0]


def test_average_precision_hand_computed():
    # ranked targets 1 0 1 0: precision at the positives 1/1 and 2/3 -> AP = 5/6
    assert average_precision(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0])) == pytest.approx(5 / 6)
    # a tie is one threshold: P = 1/2 at R = 1 -> AP = 1/2 (not 1, whatever the order)
    assert average_precision(np.array([0.5, 0.5]), np.array([0, 1])) == pytest.approx(0.5)
    scores = np.array([[0.9, 0.1, 0.3], [0.8, 0.9, 0.2], [0.7, 0.2, 0.1], [0.6, 0.3, 0.9]])
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]])  # class 2 has no positive: skipped
    assert mean_average_precision(scores, targets) == pytest.approx((5 / 6 + 1.0) / 2)


def test_map_matches_sklearn_when_installed():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    scores = np.round(rng.random((40, 6)), 1)  # rounding makes ties
    targets = (rng.random((40, 6)) < 0.3).astype(int)
    expected = np.mean([sk.average_precision_score(targets[:, c], scores[:, c]) for c in range(6) if targets[:, c].any()])
    assert mean_average_precision(scores, targets) == pytest.approx(expected)
    gold = rng.integers(0, 4, 50).astype(str).tolist()
    pred = rng.integers(0, 5, 50).astype(str).tolist()
    assert macro_f1(pred, [[g] for g in gold])[0] == pytest.approx(sk.f1_score(gold, pred, average="macro"))


def test_multilabel_f1_hand_computed():
    pred, gold = [{"a", "b"}, {"c"}], [{"a"}, {"c", "d"}]
    assert multilabel_f1(pred, gold, "micro") == pytest.approx(4 / 6)  # tp 2 (a, c), fp 1 (b), fn 1 (d)
    assert multilabel_f1(pred, gold, "macro") == pytest.approx(0.5)  # F1: a 1, b 0, c 1, d 0


# ---------------------------------------------------------------------------------------- ASR


def test_wer_cer_hand_computed():
    # "the cat sit on mat" vs "the cat sat on the mat": 1 substitution + 1 deletion over 6 words;
    # corpus with a perfect 2-word item: 2 / 8 (not the mean of per-item rates, 1/6)
    s, per = wer(["the cat sit on mat", "hello world"], [["The cat sat on the mat."], ["Hello, world!"]])
    assert s == pytest.approx(2 / 8)
    assert per == pytest.approx([2 / 6, 0.0])
    assert cer(["abd"], [["abc"]])[0] == pytest.approx(1 / 3)
    assert cer(["ab"], [["a b"]])[0] == pytest.approx(1 / 3)  # the space counts


# ---------------------------------------------------------------------------------------- retrieval


def test_retrieval_hand_computed():
    # 2 clips x 4 captions, captions 0,1 describe clip 0 and 2,3 clip 1
    sim = np.array([[0.9, 0.1, 0.8, 0.2], [0.3, 0.7, 0.6, 0.5]])
    m = retrieval_metrics(sim, [0, 0, 1, 1])
    # text->audio ranks of the true clip: 1, 2, 2, 1 -> R@1 = 1/2, mAP@10 = (1 + 1/2 + 1/2 + 1) / 4
    assert m["t2a_R@1"] == pytest.approx(0.5) and m["t2a_R@5"] == 1.0
    assert m["t2a_mAP@10"] == pytest.approx(0.75)
    # audio->text: clip 0 ranks its captions 1 and 4: AP = (1/1 + 2/4) / 2 = 0.75;
    # clip 1 ranks them 2 and 3: AP = (1/2 + 2/3) / 2; best ranks 1 and 2 -> R@1 = 1/2
    assert m["a2t_R@1"] == pytest.approx(0.5) and m["a2t_R@10"] == 1.0
    assert m["a2t_mAP@10"] == pytest.approx((0.75 + (1 / 2 + 2 / 3) / 2) / 2)


def test_retrieval_a2t_map_sorts_ranks_and_cuts_at_10():
    # clip 0's second caption ranks first: sorted ranks (1, 2) -> AP = (1/1 + 2/2) / 2 = 1 (never above 1)
    assert retrieval_metrics(np.array([[0.1, 0.9]]), [0, 0])["a2t_mAP@10"] == pytest.approx(1.0)
    # 12 clips, one caption each; caption 0's clip is ranked 11th -> contributes 0 to mAP@10
    sim = np.eye(12)
    sim[1:, 0] = 2.0  # every other clip beats clip 0 for caption 0
    m = retrieval_metrics(sim, list(range(12)))
    assert m["t2a_mAP@10"] == pytest.approx(11 / 12)
    assert m["t2a_R@10"] == pytest.approx(11 / 12)
