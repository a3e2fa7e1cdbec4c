"""Tests for scripts/make_attribute_set.py (the demo recipe's tuning sets)."""

import csv
import os

import numpy as np
import pytest

from sdl_tf.labels.label_space import LabelSpace
from tests.helpers.scripts import load_script


def _load():
    return load_script("make_attribute_set")


@pytest.mark.parametrize("family", ["texture_shape", "size_shape"])
def test_manifest_set_rules(tmp_path, family):
    mod = _load()
    out = str(tmp_path / family)
    assert mod.main([f"--family={family}", "--seed=3", f"--out={out}", "--num_train=24",
                     "--num_test=12", "--image_size=32", "--dim=8"]) == 0
    space = LabelSpace.load(os.path.join(out, "data"))
    assert space.num_labels == 20 and len(space.unseen_names) == 5 and space.dim == 8
    seen_words = [w for n in space.seen_names for w in n.split()]
    assert min(seen_words.count(w) for n in space.names for w in n.split()) >= 2
    unseen = set(space.unseen_names)
    for split, n in (("train", 24), ("test", 12)):
        with open(os.path.join(out, f"{split}.csv"), encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == n
        for row in rows:
            labels = set(row["labels"].split("|"))
            assert 1 <= len(labels) <= 3
            assert (labels & unseen) if split == "test" else not (labels & unseen)
            assert os.path.isfile(os.path.join(out, row["image"]))


def test_same_seed_same_set(tmp_path):
    mod = _load()
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    for out in (a, b):
        mod.make(out, "pattern_colour", seed=5, num_train=6, num_test=3, image_size=32, dim=4)
    for name in ("train.csv", "test.csv", "unseen.txt", "vectors.txt",
                 "images/train_00003.jpg"):
        with open(os.path.join(a, name), "rb") as fa, open(os.path.join(b, name), "rb") as fb:
            assert fa.read() == fb.read(), name
    assert np.asarray(mod._texture_mask("striped", 8, np.random.default_rng(0))).mean() == 0.5
