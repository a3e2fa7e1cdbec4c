"""Tests for sdl_tf.data: the training/eval tf.data pipelines over the demo TFRecords."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from sdl_tf import data as data_lib
from sdl_tf.config import DataConfig
from sdl_tf.label_space import LabelSpace
from tests.helpers.demo_data import demo_dataset


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return demo_dataset(tmp_path_factory)


def _train(demo_dir, **kw):
    space = LabelSpace.load(demo_dir)
    data_keys = ("augment", "cutout", "shuffle_buffer", "val_fraction", "val_split")
    cfg_kw = {k: kw.pop(k) for k in data_keys if k in kw}
    args = dict(image_size=32, seen_indices=space.seen_indices, num_labels=space.num_labels,
                batch_size=8, epoch=0, seed=0, num_batches=4)
    args.update(kw)
    return data_lib.train_dataset(DataConfig(data_dir=demo_dir, **cfg_kw), **args)


def _batches(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def test_train_batches_shapes_and_targets(demo_dir):
    space = LabelSpace.load(demo_dir)
    batches = _batches(_train(demo_dir))
    assert len(batches) == 4
    for images, targets in batches:
        assert images.dtype == np.uint8 and images.shape == (8, 32, 32, 3)
        assert targets.dtype == np.float32 and targets.shape == (8, len(space.seen_indices))
        assert set(np.unique(targets)) <= {0.0, 1.0}  # demo data: no verified negatives
        assert (targets.sum(axis=1) >= 1).all()  # every demo training image has a seen label


def test_epoch_stream_is_deterministic_and_resumable(demo_dir):
    a = _batches(_train(demo_dir, epoch=1))
    b = _batches(_train(demo_dir, epoch=1))
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    # Another epoch is another order/augmentation.
    c = _batches(_train(demo_dir, epoch=2))
    assert not np.array_equal(a[0][0], c[0][0])
    # Resume: skipping 2 consumed batches yields exactly the rest of the epoch.
    rest = _batches(_train(demo_dir, epoch=1, skip_batches=2))
    assert len(rest) == 2
    for (xa, ya), (xr, yr) in zip(a[2:], rest, strict=True):
        np.testing.assert_array_equal(xa, xr)
        np.testing.assert_array_equal(ya, yr)


def test_repeat_gives_every_pipeline_enough_batches(demo_dir):
    # 96 images, batch 8: 20 batches need more than one pass; the stream repeats.
    assert len(_batches(_train(demo_dir, num_batches=20))) == 20


def test_input_pipelines_get_disjoint_shards(demo_dir):
    kw = dict(augment=False, shuffle_buffer=1, num_batches=6)  # 6 x 8 = 48 = half of 96
    def prints(i):
        return {x.tobytes() for b, _ in _batches(_train(demo_dir, num_input_pipelines=2,
                                                         input_pipeline_id=i, **kw))
                for x in b}
    p0, p1 = prints(0), prints(1)
    assert len(p0) == len(p1) == 48
    assert not p0 & p1


def test_augmentation_changes_images_but_not_targets(demo_dir):
    plain = _batches(_train(demo_dir, augment=False))
    aug = _batches(_train(demo_dir, augment=True, cutout=0.25))
    np.testing.assert_array_equal(plain[0][1], aug[0][1])
    assert not np.array_equal(plain[0][0], aug[0][0])


def test_cutout_fills_one_clipped_square():
    image = tf.zeros((32, 32, 3))
    out = data_lib._cutout(image, tf.constant([3, 4], tf.int32), 8).numpy()
    filled = (out != 0).any(axis=-1)
    rows, cols = np.nonzero(filled)
    assert 0 < filled.sum() <= 64
    assert filled.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    np.testing.assert_array_equal(out[rows[0], cols[0]], data_lib._FILL_RGB)


def test_eval_dataset_labels_match_summary(demo_dir):
    space = LabelSpace.load(demo_dir)
    ds = data_lib.eval_dataset(DataConfig(data_dir=demo_dir), "test", image_size=32,
                               num_labels=space.num_labels, batch_size=10, with_ids=True)
    counts = np.zeros(space.num_labels)
    ids = []
    for images, labels, batch_ids in ds:
        assert images.dtype == tf.uint8 and images.shape[1:] == (32, 32, 3)
        counts += labels.numpy().sum(axis=0)
        ids += [i.decode() for i in batch_ids.numpy()]
    with open(os.path.join(demo_dir, "test-summary.json")) as f:
        expected = json.load(f)["positive_counts"]
    np.testing.assert_array_equal(
        counts, [expected.get(str(i), 0) for i in range(space.num_labels)])
    assert len(ids) == len(set(ids)) == 32


def test_carved_validation_is_disjoint_from_training(demo_dir):
    space = LabelSpace.load(demo_dir)
    cfg = DataConfig(data_dir=demo_dir, val_fraction=0.25, val_split="none")
    val = data_lib.eval_dataset(cfg, "none", image_size=32, num_labels=space.num_labels,
                                batch_size=96, carve_from_train=True)
    val_prints = {x.tobytes() for b, _ in val for x in b.numpy()}
    train = _train(demo_dir, augment=False, val_fraction=0.25, val_split="none", shuffle_buffer=1,
                   num_batches=None).take(8)
    train_prints = {x.tobytes() for b, _ in train for x in b.numpy()}
    assert 10 <= len(val_prints) <= 40  # ~24 of 96 by a stable hash of the image id
    assert not val_prints & train_prints
    assert len(val_prints) + len({p for p in train_prints}) <= 96


def test_count_examples(demo_dir, tmp_path):
    assert data_lib.count_examples(demo_dir, "train") == 96
    # Without a summary the records are counted.
    shutil.copy(os.path.join(demo_dir, "test-00000-of-00001.tfrecord"), tmp_path)
    assert data_lib.count_examples(str(tmp_path), "test") == 32
    assert data_lib.has_split(demo_dir, "val") and not data_lib.has_split(demo_dir, "nope")
