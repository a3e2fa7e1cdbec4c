"""Tests for scripts/make_attribute_set.py (the demo recipe's tuning sets)."""

import csv
import os

import numpy as np
import pytest

from sdl_tf.labels.label_space import LabelSpace
from tests.helpers.paths import REPO_ROOT
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


def _write_set(path, test_images, unseen):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "unseen.txt"), "w", encoding="utf-8") as f:
        f.write("".join(n + "\n" for n in unseen))
    for split, images in (("train", [["a x"], ["b x"]]), ("test", test_images)):
        with open(os.path.join(path, f"{split}.csv"), "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", "labels"])
            w.writerows((f"{split}_{i}.jpg", "|".join(ls)) for i, ls in enumerate(images))


def test_ceiling_bag_of_words_cannot_bind_a_swap(tmp_path):
    mod = load_script("attribute_set_ceiling")
    # Image 0 holds "a x" + "b y", image 1 the swap "a y" + "b x": a bag of words sees the same
    # four words in both, so every label "a/b x/y" scores the same on both images.
    _write_set(str(tmp_path), [["a x", "b y"], ["a y", "b x"]], unseen=["b y", "a y"])
    names, unseen, images = mod.read_set(str(tmp_path))
    assert names == ["a x", "a y", "b x", "b y"] and unseen == [False, True, False, True]
    scores = mod.oracle_scores(names, images, "bag_of_words")
    np.testing.assert_allclose(scores[0], scores[1], atol=1e-5)
    np.testing.assert_allclose(scores[0], 2 / np.sqrt(2), atol=1e-5)


def test_ceiling_normalisation_makes_scores_comparable_across_images(tmp_path):
    mod = load_script("attribute_set_ceiling")
    # "b y" alone vs three objects that hold b and y in other labels: raw counts tie (2 and 2),
    # the per-image normalised score ranks the true image first (2 vs 2 / sqrt(3)).
    _write_set(str(tmp_path), [["b y"], ["a y", "b x", "a x"]], unseen=["b y", "a y"])
    result = mod.ceiling(str(tmp_path))
    assert result["bag_of_words"][0] == pytest.approx(100.0)
    assert mod.main([str(tmp_path)]) == 0


@pytest.mark.slow  # a 5-step training on a generated set: ~40 s on 2 cores
def test_attribute_sets_script_trains_evaluates_and_tabulates(tmp_path):
    import subprocess
    import sys

    repo = REPO_ROOT
    env = dict(os.environ, SETS="size_shape:5", ATTR_OUT=str(tmp_path),
               EXTRA_FLAGS="--epochs=1 --steps_per_epoch=5", PYTHON=sys.executable)
    subprocess.run(["bash", "scripts/attribute_sets.sh"], cwd=repo, env=env, check=True,
                   capture_output=True)
    table = (tmp_path / "attribute_sets.md").read_text().splitlines()
    assert table[0].startswith("| Set (family, seed) | SDL ZSL / GZSL mAP")
    row = table[2].split(" | ")
    assert row[0] == "| size x shape, 5"
    zsl, gzsl = (float(v) for v in row[1].split(" / "))
    assert 0 < zsl <= 100 and 0 < gzsl <= 100
    assert int(row[2]) > 0
    assert (tmp_path / "size_shape_5" / "sdl" / "flags.txt").exists()
    # A run trained by hand into the folder has no timing: the table says "-" instead of failing.
    (tmp_path / "size_shape_5" / "sdl" / "train_seconds.txt").unlink()
    subprocess.run(["bash", "scripts/attribute_sets.sh"], cwd=repo, env=env, check=True,
                   capture_output=True)
    row = (tmp_path / "attribute_sets.md").read_text().splitlines()[2].split(" | ")
    assert row[2] == "-"
