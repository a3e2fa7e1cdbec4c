"""Tests for sdl_tf.data.tfrecord_schema: serialisation round trip, targets, shard naming."""

import os

import numpy as np
import pytest
import tensorflow as tf

from sdl_tf.data import tfrecord_schema as schema


def test_serialize_parse_round_trip():
    data = schema.serialize_example("img_7", b"\xff\xd8jpegbytes", [3, 0], [5])
    out = schema.parse_example(tf.constant(data))
    assert out["image_id"].numpy() == b"img_7"
    assert out["image_bytes"].numpy() == b"\xff\xd8jpegbytes"
    assert out["positives"].dtype == tf.int64
    np.testing.assert_array_equal(out["positives"].numpy(), [3, 0])
    np.testing.assert_array_equal(out["negatives"].numpy(), [5])


def test_empty_negatives_parse_as_empty_int64():
    out = schema.parse_example(tf.constant(schema.serialize_example("a", b"x", [1])))
    assert out["negatives"].shape == (0,)
    assert out["negatives"].dtype == tf.int64


def test_parse_inside_tf_data_map(tmp_path):
    path = str(tmp_path / schema.shard_name("train", 0, 1))
    with tf.io.TFRecordWriter(path) as w:
        for i in range(3):
            w.write(schema.serialize_example(f"id{i}", bytes([i]), [i], []))
    ds = tf.data.TFRecordDataset(path).map(schema.parse_example)
    ids = [ex["image_id"].numpy() for ex in ds]
    assert ids == [b"id0", b"id1", b"id2"]


def test_serialize_rejects_contradictory_or_negative_labels():
    with pytest.raises(ValueError, match="positive and negative"):
        schema.serialize_example("a", b"x", [1, 2], [2])
    with pytest.raises(ValueError, match="negative label index"):
        schema.serialize_example("a", b"x", [-1])


def test_train_targets_tri_state_over_seen_labels():
    # C = 6 labels; seen = 0, 2, 3, 5 (1 and 4 unseen). Positives {0, 1, 5}, verified negative {3}.
    # Over seen labels in order [0, 2, 3, 5]: 0 -> 1, 2 -> unknown 0, 3 -> -1, 5 -> 1.
    # The unseen positive 1 does not appear (zero-shot protocol).
    t = schema.train_targets(tf.constant([0, 1, 5], tf.int64), tf.constant([3], tf.int64),
                             np.array([0, 2, 3, 5]), 6)
    np.testing.assert_array_equal(t.numpy(), [1.0, 0.0, -1.0, 1.0])
    assert t.dtype == tf.float32


def test_train_targets_empty_and_duplicate_inputs():
    empty = tf.constant([], tf.int64)
    t = schema.train_targets(empty, empty, np.array([0, 1, 2]), 3)
    np.testing.assert_array_equal(t.numpy(), [0.0, 0.0, 0.0])
    # Duplicates count once; a label both positive and negative counts as positive.
    t = schema.train_targets(tf.constant([1, 1], tf.int64), tf.constant([1, 2], tf.int64),
                             np.array([0, 1, 2]), 3)
    np.testing.assert_array_equal(t.numpy(), [0.0, 1.0, -1.0])


def test_eval_targets_multi_hot_over_all_labels():
    t = schema.eval_targets(tf.constant([4, 0, 4], tf.int64), 5)
    np.testing.assert_array_equal(t.numpy(), [1.0, 0.0, 0.0, 0.0, 1.0])


def test_targets_in_graph_mode_with_dataset():
    ds = tf.data.Dataset.from_tensor_slices(
        [schema.serialize_example("a", b"x", [0, 2], [1])]).map(schema.parse_example)
    ds = ds.map(lambda ex: (schema.train_targets(ex["positives"], ex["negatives"], [0, 1], 3),
                            schema.eval_targets(ex["positives"], 3)))
    train, ev = next(iter(ds))
    np.testing.assert_array_equal(train.numpy(), [1.0, -1.0])
    np.testing.assert_array_equal(ev.numpy(), [1.0, 0.0, 1.0])


def test_shard_names_and_summary_path():
    assert schema.shard_name("train", 3, 12) == "train-00003-of-00012.tfrecord"
    assert schema.summary_path("/d", "test") == os.path.join("/d", "test-summary.json")
    with pytest.raises(ValueError):
        schema.shard_name("train", 2, 2)


def test_list_shards(tmp_path):
    d = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="no shards 'train"):
        schema.list_shards(d, "train")
    for i in (1, 0):
        open(os.path.join(d, schema.shard_name("train", i, 3)), "wb").close()
    # A hidden temp file from a running/crashed writer and another split are ignored.
    open(os.path.join(d, ".train-00002-of-00003.tfrecord.tmp-1"), "wb").close()
    open(os.path.join(d, schema.shard_name("train_extra", 0, 1)), "wb").close()
    with pytest.raises(ValueError, match="missing train-00002-of-00003"):
        schema.list_shards(d, "train")
    open(os.path.join(d, schema.shard_name("train", 2, 3)), "wb").close()
    assert [os.path.basename(p) for p in schema.list_shards(d, "train")] == [
        "train-00000-of-00003.tfrecord", "train-00001-of-00003.tfrecord",
        "train-00002-of-00003.tfrecord"]
    open(os.path.join(d, schema.shard_name("train", 0, 1)), "wb").close()
    with pytest.raises(ValueError, match="different sizes"):
        schema.list_shards(d, "train")
