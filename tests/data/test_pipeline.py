"""Tests for sdl_tf.data.pipeline: the training/eval tf.data pipelines over the demo TFRecords."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from sdl_tf.config import DataConfig
from sdl_tf.data import pipeline as data_lib
from sdl_tf.labels.label_space import LabelSpace
from tests.helpers.demo_data import demo_dataset
from tests.helpers.paths import REPO_ROOT


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return demo_dataset(tmp_path_factory)


def _train(demo_dir, **kw):
    space = LabelSpace.load(demo_dir)
    data_keys = ("augment", "cutout", "shuffle_buffer", "val_fraction", "val_split",
                 "augment_mode", "rand_augment", "rand_augment_factor", "cache_train_images")
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


@pytest.mark.parametrize("mode", [dict(augment_mode="flip"), dict(augment=False),
                                  dict(augment_mode="resize", cutout=0.25, rand_augment=True),
                                  dict(augment_mode="flip", val_fraction=0.25, val_split="none")])
def test_cached_training_images_give_the_same_batches(demo_dir, mode):
    kw = dict(mode, epoch=2, skip_batches=1, num_batches=14)  # 14 x 8 > 96: the stream repeats
    plain = _batches(_train(demo_dir, **kw))
    decoded = data_lib.decode_train_images(
        DataConfig(data_dir=demo_dir, cache_train_images=True, **mode), 32)
    assert decoded.images.shape[1:] == (32, 32, 3) and len(decoded.keys) == len(decoded.images)
    # All 96 training images, or those left after the carved validation part (~24).
    assert len(decoded.keys) == 96 if "val_fraction" not in mode else 56 <= len(decoded.keys) < 86
    for cached in (_batches(_train(demo_dir, cache_train_images=True, decoded=decoded, **kw)),
                   _batches(_train(demo_dir, cache_train_images=True, **kw))):  # builds its own
        assert len(cached) == len(plain) == 13
        for (xp, yp), (xc, yc) in zip(plain, cached, strict=True):
            np.testing.assert_array_equal(xp, xc)
            np.testing.assert_array_equal(yp, yc)


def test_cached_training_images_are_refused_when_they_cannot_match(demo_dir, monkeypatch):
    with pytest.raises(ValueError, match="augment_mode flip or resize"):
        DataConfig(data_dir=demo_dir, cache_train_images=True, augment_mode="imagenet")
    cfg = DataConfig(data_dir=demo_dir, cache_train_images=True, augment_mode="flip")
    monkeypatch.setattr(data_lib, "MAX_CACHED_TRAIN_BYTES", 40 * 32 * 32 * 3)
    with pytest.raises(ValueError, match=r"take more than .* decoded at 32 px"):
        data_lib.decode_train_images(cfg, 32)
    monkeypatch.undo()
    # A key shared by two different images would feed one image for the other: refused.
    monkeypatch.setattr(data_lib, "_image_key", lambda image_bytes: tf.constant(7, tf.int64))
    with pytest.raises(ValueError, match="differ but share one 64-bit key"):
        data_lib.decode_train_images(cfg, 32)


def test_resize_mode_is_the_whole_image_plus_cutout(demo_dir):
    plain = _batches(_train(demo_dir, augment=False, shuffle_buffer=1))
    resized = _batches(_train(demo_dir, augment=True, augment_mode="resize", cutout=0.0,
                              shuffle_buffer=1))
    # No crop, flip or colour change: exactly the evaluation decode.
    for (xp, yp), (xr, yr) in zip(plain, resized, strict=True):
        np.testing.assert_array_equal(xp, xr)
        np.testing.assert_array_equal(yp, yr)
    cut = _batches(_train(demo_dir, augment=True, augment_mode="resize", cutout=0.25,
                          shuffle_buffer=1))
    changed = (cut[0][0] != plain[0][0]).any(axis=-1)  # (8, 32, 32) pixels touched
    for mask in changed:  # at most one 8 x 8 square per image, nothing else
        rows, cols = np.nonzero(mask)
        if rows.size:
            assert rows.max() - rows.min() < 8 and cols.max() - cols.min() < 8


def test_rand_augment_runs_in_tf_data_deterministically(demo_dir):
    import keras

    kw = dict(augment=True, augment_mode="resize", cutout=0.0, rand_augment=True,
              rand_augment_factor=0.5, epoch=1)
    a = _batches(_train(demo_dir, **kw))
    plain = _batches(_train(demo_dir, **{**kw, "rand_augment": False}))
    changed = []
    for (xa, ya), (xp, yp) in zip(a, plain, strict=True):
        assert xa.dtype == np.uint8 and xa.shape == (8, 32, 32, 3)
        np.testing.assert_array_equal(ya, yp)  # labels untouched
        changed += [not np.array_equal(xa[i], xp[i]) for i in range(8)]
    assert sum(changed) >= 16  # most of the 32 images (an op can be near-identity)
    # Per-example stateless seeds: the same stream in a rebuilt pipeline after a resume skip,
    # and under a mixed-precision policy (the augmentation never reads the Keras policy).
    rest = _batches(_train(demo_dir, skip_batches=2, **kw))
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = _batches(_train(demo_dir, **kw))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    for (xa, _), (xm, _) in zip(a, mixed, strict=True):
        np.testing.assert_array_equal(xa, xm)
    for (xa, _), (xr, _) in zip(a[2:], rest, strict=True):
        np.testing.assert_array_equal(xa, xr)
    other = _batches(_train(demo_dir, **{**kw, "epoch": 2}))
    assert not np.array_equal(a[0][0], other[0][0])


def test_train_images_match_the_eval_decode_on_small_photos(demo_dir):
    # The demo's 64 px JPEGs are < 2x the 32 px target: no DCT scaling, so the training decode
    # (augment.decode_resized) is exactly the eval path's.
    ds = data_lib.eval_dataset(DataConfig(data_dir=demo_dir), "train", image_size=32,
                               num_labels=LabelSpace.load(demo_dir).num_labels, batch_size=96)
    images = next(iter(ds))[0].numpy()
    plain = np.concatenate([x for x, _ in _batches(_train(
        demo_dir, augment=False, shuffle_buffer=1, num_batches=12))])
    assert {x.tobytes() for x in images} == {x.tobytes() for x in plain}


@pytest.fixture
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(data_lib, "_WARNED", set())


@pytest.mark.parametrize("kw, flag", [
    (dict(rand_augment_factor=0.3), "--rand_augment_factor=0.3 does nothing without"),
    (dict(augment_mode="flip", cutout=0.25), "--cutout=0.25 does nothing with --augment_mode=flip"),
    (dict(augment_mode="resize", min_crop_area=0.5), "--min_crop_area=0.5 does nothing"),
    (dict(augment_mode="flip", min_crop_area=0.5), "--min_crop_area=0.5 does nothing"),
    (dict(augment_mode="imagenet", cache_train_images=True), "cache_train_images needs"),
])
def test_flags_that_would_do_nothing_are_refused(kw, flag):
    with pytest.raises(ValueError, match=flag):
        DataConfig(data_dir="d", **kw)


def test_flag_defaults_that_do_nothing_warn_once(demo_dir, fresh_warnings, capsys):
    # configs/base.flags sets --cutout=0.5 (the default) and demo.flags --augment_mode=flip:
    # not an error, but the training pipeline says once that it ignores it.
    DataConfig(data_dir="d", augment_mode="flip")
    assert capsys.readouterr().err == ""  # building a config (e.g. to report an error) is quiet
    _train(demo_dir, augment_mode="flip", num_batches=1)
    _train(demo_dir, augment_mode="flip", num_batches=1)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--cutout=0.5 does nothing with --augment_mode=flip" in err
    data_lib._warn_ignored_flags(DataConfig(data_dir="d", augment=False, augment_mode="flip",
                                            rand_augment=True))
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--augment=false" in err and "--augment_mode=flip, --rand_augment=True" in err
    for kw in (dict(augment_mode="flip", cutout=0.0), dict(augment=False),
               dict(augment_mode="resize", rand_augment=True, rand_augment_factor=0.3),
               dict(min_crop_area=0.5), dict(augment_mode="resize", cache_train_images=True)):
        data_lib._warn_ignored_flags(DataConfig(data_dir="d", **kw))  # effective: silent
    assert capsys.readouterr().err == ""


def test_shipped_configs_build(fresh_warnings, capsys):
    from absl import flags

    from sdl_tf import config_flags
    from sdl_tf.config import TrainConfig

    root = REPO_ROOT
    names = sorted(f for f in os.listdir(os.path.join(root, "configs")) if f.endswith(".flags"))
    assert len(names) >= 5
    cwd = os.getcwd()
    os.chdir(root)  # flag files include each other by repo-relative paths
    try:
        for name in names:
            fv = flags.FlagValues()
            config_flags.define_flags(TrainConfig, flag_values=fv)
            fv(["x", f"--flagfile=configs/{name}", "--data_dir=d", "--model_dir=m"])
            config_flags.config_from_flags(TrainConfig, fv)
    finally:
        os.chdir(cwd)
    assert capsys.readouterr().err == ""  # the demo configs' warning comes with training
