"""Tests for sdl_tf.modeling.backbones: registry, registration, weights (offline), hub models.

`tiny` is the tests' backbone (`tests.helpers.tiny_backbone`), registered by conftest.
"""

import keras
import numpy as np
import pytest

from sdl_tf.config import ModelConfig
from sdl_tf.modeling import backbones, run_dir, tresnet
from sdl_tf.modeling.model import build_model
from tests.helpers import hub_models, tiny_backbone


def test_registry_names():
    assert {"resnet50", "resnet101", "mobilenet_v3_small", "efficientnet_b0", "tiny",
            "small_cnn"} <= set(
        backbones.BACKBONES
    )
    with pytest.raises(backbones.BackboneError, match="unknown backbone 'vgg'.*resnet50"):
        backbones.build_backbone("vgg", (32, 32, 3), "none")
    # Every TResNet the converter knows is offered (tresnet_xl was in ARCHS only).
    assert set(tresnet.ARCHS) <= set(backbones.BACKBONES)


def test_register():
    spec = backbones.BACKBONES[tiny_backbone.NAME]
    assert spec.constructor is tiny_backbone.tiny and spec.preprocess == "unit"
    assert tiny_backbone.register() == spec  # the same spec again: a no-op
    with pytest.raises(ValueError, match="already registered"):
        backbones.register(tiny_backbone.NAME, tiny_backbone.tiny, "raw")
    with pytest.raises(ValueError, match="preprocess must be one of"):
        backbones.register("tiny_bgr", tiny_backbone.tiny, "bgr")
    with pytest.raises(ValueError, match="hub:"):
        backbones.register("hub:x", tiny_backbone.tiny, "unit")
    assert "tiny_bgr" not in backbones.BACKBONES
    try:
        backbones.register("tiny_raw", tiny_backbone.tiny, "raw", min_size=32)
        model, mode = backbones.build_backbone("tiny_raw", (32, 32, 3), "none")
        assert mode == "raw" and model.name == "tiny"
        with pytest.raises(backbones.BackboneError, match="needs image_size >= 32"):
            backbones.build_backbone("tiny_raw", (16, 16, 3), "none")
    finally:
        backbones.BACKBONES.pop("tiny_raw", None)


def test_tresnet_xl_builds():
    model, mode = backbones.build_backbone("tresnet_xl", (32, 32, 3), "none")
    assert mode == "unit" and model.name == "tresnet_xl"
    assert model.output.shape[-1] == tresnet.ARCHS["tresnet_xl"].num_features == 2656


def test_tiny_backbone_feature_map():
    model, mode = backbones.build_backbone("tiny", (32, 32, 3), "none")
    assert mode == "unit"
    assert model(np.zeros((2, 32, 32, 3), np.float32)).shape == (2, 2, 2, 128)
    with pytest.raises(backbones.BackboneError, match="no ImageNet weights"):
        backbones.build_backbone("tiny", (32, 32, 3), "imagenet")


def test_imagenet_offline_gives_clear_error(monkeypatch):
    # No network here: make the Keras download fail the way it does offline, immediately.
    import keras.src.utils.file_utils as file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(backbones.BackboneError,
                       match="ImageNet weights for backbone mobilenet_v3_small.*--weights"):
        backbones.build_backbone("mobilenet_v3_small", (32, 32, 3), "imagenet")


def test_weights_from_local_file(tmp_path):
    """`weights=<path>` is how pre-downloaded (e.g. ImageNet) weights are used offline."""
    keras.utils.set_random_seed(1)
    source, _ = backbones.build_backbone("mobilenet_v3_small", (32, 32, 3), "none")
    path = str(tmp_path / "mnv3.weights.h5")
    source.save_weights(path)
    keras.utils.set_random_seed(2)
    fresh, _ = backbones.build_backbone("mobilenet_v3_small", (32, 32, 3), "none")
    loaded, _ = backbones.build_backbone("mobilenet_v3_small", (32, 32, 3), path)
    assert not np.allclose(fresh.weights[0].numpy(), source.weights[0].numpy())
    for a, b in zip(loaded.weights, source.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(backbones.BackboneError, match="weights file not found"):
        backbones.build_backbone("tiny", (32, 32, 3), str(tmp_path / "missing.weights.h5"))


def test_hub_local_saved_model_frozen_and_round_trip(tmp_path):
    w = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    path = hub_models.save_features_model(str(tmp_path / "hub_model"), w)

    model = build_model(ModelConfig(backbone=f"hub:{path}", weights="none", image_size=16,
                                    num_rows=2, dim=4))
    # Frozen feature extractor: only the bias-free projection (8 -> 2 * 4) trains.
    assert [v.shape for v in model.trainable_weights] == [(8, 8)]
    images = np.random.default_rng(1).integers(0, 256, (3, 16, 16, 3)).astype(np.uint8)
    out = model.predict(images, verbose=0)
    kernel = model.get_layer("projection").kernel.numpy()
    feats = (images.astype(np.float32) / 255.0).mean(axis=(1, 2)) @ w
    np.testing.assert_allclose(out, (feats @ kernel).reshape(3, 2, 4), rtol=1e-5, atol=1e-6)

    saved = str(tmp_path / "hub.keras")
    model.save(saved)
    # safe_mode=False: Keras refuses to reload a TFSMLayer (external SavedModel) in safe mode.
    reloaded = run_dir.load_keras_file(saved, safe_mode=False)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), out, rtol=1e-6)


def test_hub_errors(tmp_path):
    with pytest.raises(backbones.BackboneError, match="saved_model.pb"):
        backbones.build_backbone(f"hub:{tmp_path}", (16, 16, 3))
    try:
        import tensorflow_hub  # noqa: F401
    except ImportError:
        with pytest.raises(backbones.BackboneError, match="tensorflow_hub is not installed"):
            backbones.build_backbone("hub:https://tfhub.dev/google/x/1", (16, 16, 3))
