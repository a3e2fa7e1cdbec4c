"""Tests for sdl_tf.data.feature_cache: the model split it relies on, the epoch order, the
per-pipeline batches, the on-disk store reused across runs, and the settings it refuses.
(Training on cached features: tests/training/test_loop.py; `evaluate --feature_cache_dir`:
tests/evaluation/test_evaluator.py.)"""

import glob
import json
import os

import numpy as np
import pytest

from sdl_tf.config import DataConfig, ModelConfig, TrainConfig
from sdl_tf.data import feature_cache
from sdl_tf.modeling import model as model_lib
from sdl_tf.training import loop
from tests.helpers.demo_data import demo_dataset


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return demo_dataset(tmp_path_factory)


@pytest.mark.parametrize("pooling,row_scale", [("avg", 0.0), ("avg", 8.0), ("attention", 0.0),
                                               ("attention", 8.0)])
def test_split_model_composes_to_the_model(pooling, row_scale):
    cfg = ModelConfig(backbone="tiny", weights="none", image_size=32, num_rows=3, dim=8,
                      pooling=pooling, row_scale=row_scale)
    model = model_lib.build_model(cfg)
    features_of, head = model_lib.split_model(model)
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    features = features_of(images, training=False)
    assert features.shape == (4, 2, 2, 128)  # tiny: 4 stride-2 convs, 128 channels
    np.testing.assert_allclose(head(features, training=False), model(images, training=False),
                               rtol=1e-5, atol=1e-6)
    # The head holds exactly the model's non-backbone weights (shared, not copies).
    head_ids = {id(v) for v in head.weights}
    assert head_ids and head_ids <= {id(v) for v in model.weights}
    assert not head_ids & {id(v) for v in features_of.weights}


def test_epoch_order_is_seeded_and_covers_every_example():
    a = feature_cache.epoch_order(10, 2, num_steps=3, batch_size=4, seed=1, epoch=0)
    b = feature_cache.epoch_order(10, 2, num_steps=3, batch_size=4, seed=1, epoch=0)
    c = feature_cache.epoch_order(10, 2, num_steps=3, batch_size=4, seed=1, epoch=1)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert len(a[0]) == 12 and sorted(a[0][:10]) == list(range(10))  # one pass, then more
    assert set(a[1]) <= {0, 1}


def test_feature_dataset_splits_global_batches_between_pipelines():
    cache = feature_cache.FeatureCache(
        features=np.arange(8, dtype=np.float16).reshape(8, 1, 1),
        targets=np.arange(8, dtype=np.float32).reshape(8, 1))
    kw = dict(global_batch_size=4, per_replica_batch=2, replicas_per_pipeline=1, epoch=0,
              seed=3, skip_steps=0, num_steps=2)
    whole = feature_cache.feature_dataset(cache, input_pipeline_id=0,
                                          **{**kw, "per_replica_batch": 4})
    p0 = feature_cache.feature_dataset(cache, input_pipeline_id=0, **kw)
    p1 = feature_cache.feature_dataset(cache, input_pipeline_id=1, **kw)
    whole = [f.numpy().ravel() for f, _ in whole]
    parts = [np.concatenate([a.numpy().ravel(), b.numpy().ravel()])
             for (a, _), (b, _) in zip(p0, p1, strict=True)]
    np.testing.assert_array_equal(whole, parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(whole)), np.arange(8))
    for f, t in feature_cache.feature_dataset(cache, input_pipeline_id=0, **kw):
        np.testing.assert_array_equal(f.numpy()[:, 0], t.numpy()[:, 0])  # rows stay paired


def _config(demo_dir, model_dir, **kw):
    base = dict(
        model_dir=str(model_dir),
        data=DataConfig(data_dir=demo_dir, val_split="none", val_fraction=0.2,
                        augment_mode="flip"),
        model=ModelConfig(backbone="tiny", weights="none", image_size=32, num_rows=2, dim=16,
                          trainable_backbone=False, pooling="attention"),
        epochs=2, steps_per_epoch=4, batch_size=16, learning_rate=1e-3,
        checkpoint_every_steps=2, log_every_steps=2, eval_batch_size=32,
        cache_backbone_features=True,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_feature_cache_dir_reuses_features_across_runs(demo_dir, tmp_path, capsys):
    store = str(tmp_path / "features")
    short = dict(epochs=1, steps_per_epoch=3, feature_cache_dir=store)
    first = loop.train(_config(demo_dir, tmp_path / "a", **short), progress=False)
    err = capsys.readouterr().err
    assert "computed once" in err and "stored as" in err
    again = loop.train(_config(demo_dir, tmp_path / "b", **short), progress=False)
    err = capsys.readouterr().err
    assert "loaded from" in err and "computed once" not in err
    assert again["last_loss"] == first["last_loss"]
    np.testing.assert_equal(again["val"], first["val"])  # NaN ZSL (no unseen) equal too
    # Another head (M = 1) reuses them; another validation carve does not.
    loop.train(_config(demo_dir, tmp_path / "c", **short, model=ModelConfig(
        backbone="tiny", weights="none", image_size=32, num_rows=1, dim=16,
        trainable_backbone=False, pooling="attention")), progress=False)
    assert "loaded from" in capsys.readouterr().err
    loop.train(_config(demo_dir, tmp_path / "d", **short, data=DataConfig(
        data_dir=demo_dir, val_split="none", val_fraction=0.3, augment_mode="flip")),
        progress=False)
    assert "computed once" in capsys.readouterr().err
    keys = [json.load(open(p)) for p in glob.glob(os.path.join(store, "*.json"))]
    assert sorted(k["val_fraction"] for k in keys) == [0.2, 0.3]


def test_no_images_or_too_many_features_are_user_errors(demo_dir, monkeypatch):
    import tensorflow as tf

    from sdl_tf import errors
    from sdl_tf.labels.label_space import LabelSpace

    model = model_lib.build_model(ModelConfig(backbone="tiny", weights="none", image_size=32,
                                              num_rows=2, dim=16))
    features_of, _ = model_lib.split_model(model)
    empty = tf.data.Dataset.from_tensor_slices(
        (np.zeros((0, 32, 32, 3), np.uint8), np.zeros((0, 3), np.float32))).batch(4)
    with pytest.raises(errors.SDLError, match="no validation images"):
        feature_cache.eval_features(features_of, empty)
    space = LabelSpace.load(demo_dir)
    monkeypatch.setattr(feature_cache, "MAX_CACHED_FEATURE_BYTES", 1)
    with pytest.raises(errors.ConfigError, match="smaller --image_size"):
        feature_cache.extract_train_features(features_of, DataConfig(data_dir=demo_dir), 32,
                                             space.seen_indices, space.num_labels, flips=False)


@pytest.mark.parametrize("kw,message", [
    (dict(model=ModelConfig(backbone="tiny", weights="none", trainable_backbone=True)),
     "frozen backbone"),
    (dict(data=DataConfig(augment_mode="imagenet")), "augment_mode 'imagenet'"),
    (dict(data=DataConfig(augment_mode="flip", cache_train_images=True)),
     "drop --cache_train_images"),
    (dict(cache_backbone_features=False, feature_cache_dir="x"), "add --cache_backbone_features"),
])
def test_cache_backbone_features_refuses_settings_it_would_ignore(kw, message):
    base = dict(model_dir="x", cache_backbone_features=True,
                model=ModelConfig(backbone="tiny", weights="none", trainable_backbone=False),
                data=DataConfig(augment_mode="flip"))
    base.update(kw)
    with pytest.raises(ValueError, match=message):
        TrainConfig(**base)
