"""Label-set balancing of the group split: every closed label set gets val and test groups."""

from collections import defaultdict

from audioflamingo.data.splits import assign_splits, balance_label_sets


def _clips():
    """Noise clips, 3 per group, 3 colours x 3 lengths = 9 groups; the hash split puts some in val, maybe none in test."""
    clips = []
    for colour in ("white", "pink", "brown"):
        for length in (1.0, 2.0, 3.0):
            for i in range(3):
                clips.append({"uid": f"noise/{colour}_{length}_{i}", "group": f"noise:{colour}:{length}",
                              "facts": {"noise_colour": colour}, "heldout": False, "split": "train"})
    clips += [{"uid": f"door/{i}", "group": "door", "facts": {"category": "door"}, "heldout": True, "split": "test"}
              for i in range(2)]
    clips += [{"uid": f"sweep/{i}", "group": f"sweep:{i}", "facts": {"direction": "rises"}, "heldout": False, "split": "train"}
              for i in range(4)]  # too few groups to balance: left alone
    return clips


def _groups(clips, key):
    out = defaultdict(set)
    for c in clips:
        if key in c["facts"] and not c["heldout"]:
            out[c["split"]].add(c["group"])
    return out


def test_every_label_set_gets_val_and_test_groups_and_keeps_each_value_trained():
    clips = _clips()
    for c in clips:
        if c["group"] == "noise:brown:1.0":
            c["split"] = "val"  # already in val: stays there, counts toward val
    moved = balance_label_sets(clips, seed=0)
    g = _groups(clips, "noise_colour")
    assert len(g["test"]) >= 2 and len(g["val"]) >= 2
    assert "noise:brown:1.0" in g["val"]
    assert sorted(moved["test"] + moved["val"]) == sorted((g["test"] | g["val"]) - {"noise:brown:1.0"})
    assert moved["train"] == []
    value = {c["group"]: c["facts"].get("noise_colour") for c in clips}
    train_values = {value[x] for x in g["train"]}
    assert train_values == {"white", "pink", "brown"}  # no value lost from training
    assert len({value[x] for x in g["test"]}) == len(g["test"])  # different values first
    by_group = defaultdict(set)
    for c in clips:
        by_group[c["group"]].add(c["split"])
    assert all(len(s) == 1 for s in by_group.values())  # groups move whole
    assert all(c["split"] == "test" for c in clips if c["heldout"])
    assert all(c["split"] == "train" for c in clips if c["group"].startswith("sweep"))  # < 6 groups


def test_balancing_is_seeded_and_optional():
    a, b, c = _clips(), _clips(), _clips()
    balance_label_sets(a, seed=3)
    balance_label_sets(b, seed=3)
    assert [x["split"] for x in a] == [x["split"] for x in b]
    for clip in c:
        del clip["split"], clip["heldout"]
    plain, balanced = [dict(x) for x in c], [dict(x) for x in c]
    assign_splits(plain, seed=0)
    assign_splits(balanced, seed=0, balance=True)
    unchanged = [dict(x) for x in c]
    assign_splits(unchanged, seed=0)
    assert [x["split"] for x in plain] == [x["split"] for x in unchanged]  # off by default
    assert len(_groups(balanced, "noise_colour")["test"]) >= 2


def test_a_value_with_no_train_group_gets_one_back():
    clips = _clips()
    for c in clips:
        if c["group"].startswith("noise:pink"):
            c["split"] = "val"  # every pink group in val: pink would be scored but never trained
    moved = balance_label_sets(clips, seed=0)
    g = _groups(clips, "noise_colour")
    assert len(moved["train"]) == 1 and moved["train"][0].startswith("noise:pink")
    value = {c["group"]: c["facts"].get("noise_colour") for c in clips}
    assert {value[x] for x in g["train"]} == {"white", "pink", "brown"}
