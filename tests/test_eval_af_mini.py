"""scripts/eval_af_mini.py: word F1 and the paired bootstrap of a model's gain over the nearest-neighbour copy."""

from conftest import load_script

ev = load_script("eval_af_mini")


def test_word_f1_counts_shared_words():
    assert ev.word_f1("A dog barking.", "a dog barking") == 1.0
    assert ev.word_f1("a cat", "a dog") == 0.5
    assert ev.word_f1("", "a dog") == 0.0


def test_paired_gain_interval_is_above_zero_only_for_a_consistent_gain():
    rows = [{"answer": f"a {w} barking loudly"} for w in ("dog", "fox", "seal", "cow", "owl", "bat", "elk", "yak")] * 5  # 40 items
    right = [r["answer"] for r in rows]
    wrong = ["a cat barking loudly"] * len(rows)
    same = ev.paired_gain(right, right, rows)
    assert same["mean"] == 0 and same["ci95"] == [0.0, 0.0] and same["wins"] == same["losses"] == 0
    better = ev.paired_gain(right, wrong, rows)
    assert better["mean"] > 0 and better["ci95"][0] > 0 and better["wins"] == 40
    # right on half the items, wrong on the other half, against a baseline right on the other half: no gain
    half = [r if i % 2 else w for i, (r, w) in enumerate(zip(right, wrong))]
    other = [w if i % 2 else r for i, (r, w) in enumerate(zip(right, wrong))]
    tie = ev.paired_gain(half, other, rows)
    assert tie["mean"] == 0 and tie["ci95"][0] < 0 < tie["ci95"][1]
    assert ev.paired_gain(half, other, rows) == tie  # seeded


def test_chance_p_value_is_the_exact_tail_of_guessing():
    from math import comb

    assert ev.chance_p_value(0, [0.25] * 5) == 1.0
    assert abs(ev.chance_p_value(2, [0.25] * 2) - 0.0625) < 1e-12  # 2 of 2 at 1/4: not small
    binomial = sum(comb(13, j) * 0.25**j * 0.75 ** (13 - j) for j in range(7, 14))
    assert abs(ev.chance_p_value(7, [0.25] * 13) - binomial) < 1e-12
    # mixed option counts: the sum of independent Bernoulli variables, here 1/2 and 1/4 -> P(both) = 1/8
    assert abs(ev.chance_p_value(2, [0.5, 0.25]) - 0.125) < 1e-12 and abs(ev.chance_p_value(1, [0.5, 0.25]) - 0.625) < 1e-12


def test_knn_decoding_is_the_lm_at_weight_zero_and_the_neighbours_vote_near_one(make_wav):
    """--knn: the LM mixed with neighbours' captions that are not in the prompt (kNN-LM). λ = 0 leaves the greedy
    answer as it was; λ near 1 writes the caption with the larger softmax(cosine / τ) share, neighbours with the
    same caption pooling their shares."""
    import torch

    from conftest import tiny_model

    from audioflamingo.train.data import ClipStore, FeatureCache

    torch.manual_seed(0)
    model = tiny_model()
    wav = str(make_wav("q.wav", seconds=1.0))
    cache = FeatureCache(model, ClipStore(model.config.audio.sample_rate, model.config.audio), None)
    cache.fill([wav])
    rows = [{"audio": wav, "prompt": "Describe the sound."}] * 2
    near = [[("a dog barking", 0.9), ("rain on a roof", 0.5)], [("a dog barking", 0.2), ("rain on a roof", 0.6)]]
    plain = ev.greedy(model, cache.feats, rows, 12)
    assert ev.greedy_knn(model, cache.feats, rows, near, 0.0, 0.02, 12) == plain
    assert ev.greedy_knn(model, cache.feats, rows, near, 0.999, 0.02, 40) == ["a dog barking", "rain on a roof"]
    # a flat vote (τ large): two neighbours saying "rain on a roof" outweigh one nearer "a dog barking"
    pooled = [[("a dog barking", 0.9), ("rain on a roof", 0.5), ("rain on a roof", 0.4)]] * 2
    assert ev.greedy_knn(model, cache.feats, rows, pooled, 0.999, 100.0, 40) == ["rain on a roof"] * 2
    assert ev.greedy_knn(model, cache.feats, rows, pooled, 0.999, 0.02, 40) == ["a dog barking"] * 2


def test_scripted_mbr_is_the_library_mbr(make_wav):
    """--mbr scores what `ask --preset mbr` answers: the script's samples (cached features) are the library's, and
    choosing among greedy + samples by mbr_select gives model.ask(..., mbr_samples=n)'s answers."""
    import torch

    from conftest import tiny_model

    from audioflamingo.model.mbr import mbr_select
    from audioflamingo.train.data import ClipStore, FeatureCache

    model = tiny_model(gates=1.5, seed=3)
    wavs = [str(make_wav("a.wav", seconds=1.0, freq=300)), str(make_wav("b.wav", seconds=0.6, freq=1200, seed=1))]
    cache = FeatureCache(model, ClipStore(model.config.audio.sample_rate, model.config.audio), None)
    cache.fill(wavs)
    rows = [{"audio": w, "prompt": p} for w, p in zip(wavs, ["Describe the sound.", "What is it?"])]
    with torch.no_grad():
        plain = ev.greedy(model, cache.feats, rows, 8)
        samples = ev.sample_answers(model, cache.feats, rows, 5, 3.0, 8, seed=0)
    assert len(samples) == 2 and all(len(s) == 5 for s in samples)
    assert any(len(set(s)) > 1 for s in samples)  # hot samples differ: the choice below is not trivially the greedy one
    picked = [([g] + s)[mbr_select([g] + s, [(x, 0.2) for x in s])] for g, s in zip(plain, samples)]
    assert model.ask(wavs, [r["prompt"] for r in rows], max_new_tokens=8, mbr_samples=5, mbr_temperature=3.0) == picked
