"""Tests for data_prep.demo: determinism and the seen/unseen rules of the synthetic set."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from data_prep import demo
from data_prep.common import DataPrepError
from sdl_tf.data import tfrecord_schema as schema
from sdl_tf.labels.label_space import LabelSpace
from sdl_tf.labels.word_vectors import load_word_vectors


def _make(out, seed=0):
    cfg = demo.DemoConfig(output_dir=str(out), seed=seed, num_train=30, num_val=8, num_test=12,
                          image_size=32, vector_dim=8, num_samples=3, train_shards=2,
                          progress=False)
    return demo.prepare(cfg)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    _make(out)
    return str(out)


def _files(d):
    return sorted(os.path.relpath(os.path.join(r, f), d)
                  for r, _, fs in os.walk(d) for f in fs)


def _examples(d, split):
    ds = tf.data.TFRecordDataset(schema.list_shards(d, split)).map(schema.parse_example)
    return [(ex["image_bytes"].numpy(), set(ex["positives"].numpy().tolist())) for ex in ds]


def test_same_seed_same_bytes_other_seed_differs(demo_dir, tmp_path):
    again = tmp_path / "again"
    _make(again)
    assert _files(demo_dir) == _files(str(again))
    for rel in _files(demo_dir):
        with open(os.path.join(demo_dir, rel), "rb") as a, open(again / rel, "rb") as b:
            assert a.read() == b.read(), rel
    # A rerun into the same directory resumes (finished shards are kept, bytes unchanged).
    summaries = _make(again)
    assert summaries["train"]["shards_resumed_this_run"] == 2
    assert summaries["train"]["shards_written_this_run"] == 0
    other = tmp_path / "other"
    _make(other, seed=1)
    with open(os.path.join(demo_dir, "train-00000-of-00002.tfrecord"), "rb") as a, open(
            other / "train-00000-of-00002.tfrecord", "rb") as b:
        assert a.read() != b.read()


def test_layout_and_counts(demo_dir):
    files = _files(demo_dir)
    for name in ["labels.json", "label_vectors.npy", "attribute_vectors.txt",
                 "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord",
                 "val-00000-of-00001.tfrecord", "test-00000-of-00001.tfrecord",
                 "train-summary.json", "val-summary.json", "test-summary.json",
                 "samples/ground_truth.json"]:
        assert name in files
    assert len([f for f in files if f.startswith("samples/") and f.endswith(".jpg")]) == 3
    assert not [f for f in files if "demo-images" in f]  # temporary images removed
    for split, n in [("train", 30), ("val", 8), ("test", 12)]:
        summary = json.load(open(schema.summary_path(demo_dir, split)))
        assert summary["num_examples"] == n and summary["num_skipped"] == 0
        assert len(_examples(demo_dir, split)) == n


def test_seen_unseen_rules(demo_dir):
    space = LabelSpace.load(demo_dir)
    assert space.num_labels == len(demo.COLOURS) * len(demo.SHAPES)
    assert 0 < len(space.unseen_names) < space.num_labels
    seen_words = {w for n in space.seen_names for w in n.split()}
    assert seen_words == set(demo.COLOURS) | set(demo.SHAPES)
    unseen = set(space.unseen_indices.tolist())
    for _, labels in _examples(demo_dir, "train"):
        assert 1 <= len(labels) <= 8 and not labels & unseen
    for split in ("val", "test"):
        for _, labels in _examples(demo_dir, split):
            assert 1 <= len(labels) <= 8 and labels & unseen
    # The unseen 2x2 block: swaps among unseen labels exist (ZSL sees the confusion too).
    assert demo.swapped(demo.label_names().index("red circle"),
                        demo.label_names().index("green square")) == (
        demo.label_names().index("red square"), demo.label_names().index("green circle"))
    assert {"red square", "green circle"} <= set(space.unseen_names)


def _swap_pairs(labels):
    """Pairs of positives with different colour and shape whose swapped labels are negatives."""
    return [(a, b) for a in labels for b in labels if a < b
            and not set(demo.swapped(a, b)) & labels
            and all(x != y for x, y in zip(divmod(a, 5), divmod(b, 5), strict=True))]


def test_label_diversity_and_attribute_swaps():
    """Many-object images (Table 4's "diverse" subset) and swapped pairs, in every split."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        samples = [set(demo.sample_labels(rng, split)) for _ in range(400)]
        counts = np.bincount([len(s) for s in samples], minlength=9)
        assert counts[0] == 0 and counts[1:].min() > 20  # 1..8 objects, roughly uniform
        assert sum(len(s) > 6 for s in samples) > 50
        assert sum(bool(_swap_pairs(s)) for s in samples) > 100
    # On test, some swaps are entirely among unseen labels.
    names = demo.label_names()
    block = {names.index(n) for n in ("red circle", "green square", "red square", "green circle")}
    assert any(set(p) <= block for s in samples for p in _swap_pairs(s))
    # No single direction ranks a swapped pair above its swapped negatives: the label vectors'
    # (unnormalised) means satisfy t_rc + t_gs = t_rs + t_gc, so any linear score sums equal.
    words = {w: np.random.default_rng(len(w)).normal(size=8) for n in names for w in n.split()}
    vec = {n: (words[n.split()[0]] + words[n.split()[1]]) / 2 for n in names}
    np.testing.assert_allclose(vec["red circle"] + vec["green square"],
                               vec["red square"] + vec["green circle"])


def test_images_are_rgb_jpegs_of_the_configured_size(demo_dir):
    data, _ = _examples(demo_dir, "test")[0]
    img = tf.io.decode_jpeg(data)
    assert img.shape == (32, 32, 3)
    sample = sorted(f for f in os.listdir(os.path.join(demo_dir, "samples")) if f.endswith(".jpg"))
    assert Image.open(os.path.join(demo_dir, "samples", sample[0])).size == (32, 32)


def test_label_vectors_come_from_the_word2vec_text_file(demo_dir):
    space = LabelSpace.load(demo_dir)
    kv = load_word_vectors(os.path.join(demo_dir, "attribute_vectors.txt"), "word2vec_text")

    def unit(v):
        return v / np.linalg.norm(v)

    # Hand rule: a label's vector is the normalised mean of its two words' unit vectors.
    for i, name in enumerate(space.names):
        colour, shape = name.split()
        expected = unit(unit(kv[colour]) + unit(kv[shape]))
        np.testing.assert_allclose(space.vectors[i], expected, atol=1e-5)


def test_bad_config_raises(tmp_path):
    with pytest.raises(DataPrepError, match="num_train"):
        demo.prepare(demo.DemoConfig(output_dir=str(tmp_path), num_train=0))
