"""Tests for sdl_tf.modeling.backbones: registry, preprocessing, weights (offline), hub models."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sdl_tf.config import ModelConfig
from sdl_tf.modeling import backbones
from sdl_tf.modeling.model import build_model, load_model


def test_registry_names():
    assert {"resnet50", "resnet101", "mobilenet_v3_small", "efficientnet_b0", "tiny",
            "small_cnn"} <= set(
        backbones.BACKBONES
    )
    with pytest.raises(backbones.BackboneError, match="unknown backbone 'vgg'.*resnet50"):
        backbones.build_backbone("vgg", (32, 32, 3), "none")


def test_preprocessing_modes_by_hand():
    x = np.array([[[[10.0, 20.0, 30.0]]]], np.float32)  # one RGB pixel
    caffe = backbones.ImagePreprocessing("caffe")(x).numpy().ravel()
    # BGR order minus the ImageNet BGR means (103.939, 116.779, 123.68).
    np.testing.assert_allclose(caffe, [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-6)
    np.testing.assert_allclose(backbones.ImagePreprocessing("unit")(x).numpy().ravel(),
                               [10 / 255, 20 / 255, 30 / 255], rtol=1e-6)
    np.testing.assert_allclose(backbones.ImagePreprocessing("symmetric")(x).numpy().ravel(),
                               [10 / 127.5 - 1, 20 / 127.5 - 1, 30 / 127.5 - 1], rtol=1e-6)
    with pytest.raises(ValueError, match="mode"):
        backbones.ImagePreprocessing("bgr")


def test_tiny_backbone_feature_map():
    model, mode = backbones.build_backbone("tiny", (32, 32, 3), "none")
    assert mode == "unit"
    assert model(np.zeros((2, 32, 32, 3), np.float32)).shape == (2, 2, 2, 128)
    with pytest.raises(backbones.BackboneError, match="no ImageNet weights"):
        backbones.build_backbone("tiny", (32, 32, 3), "imagenet")


def test_small_cnn_backbone():
    """The demo backbone: a full-resolution texture path (13 px receptive field) and a shape
    path on the Gaussian-blurred image, both at H/8, plus the shape path's upsampled H/16."""
    model, mode = backbones.build_backbone("small_cnn", (64, 64, 3), "none")
    assert mode == "unit"
    images = np.random.default_rng(0).uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)
    features = model(images).numpy()
    assert features.shape == (2, 8, 8, 32 + 64 + 128)

    def output(layer, x=images):
        return keras.Model(model.input, model.get_layer(layer).output)(x).numpy()

    texture = output("texture3_relu")  # (2, 16, 16, 32)
    pooled = texture.reshape(2, 8, 2, 8, 2, 32).mean(axis=(2, 4))
    np.testing.assert_allclose(features[..., :32], pooled, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(features[..., 32:96], output("shape3_relu"), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(features[..., 96:], output("shape5_relu").repeat(2, 1).repeat(2, 2),
                               rtol=1e-5, atol=1e-6)
    # Sides that are no multiple of 16 (ceil(40/8) = 5, ceil(40/16) = 3): the maps still align.
    odd, _ = backbones.build_backbone("small_cnn", (40, 40, 3), "none")
    assert odd(np.zeros((1, 40, 40, 3), np.float32)).shape == (1, 5, 5, 224)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert {c.name: (c.filters, c.strides[0]) for c in convs} == {
        **{f"texture{i}_conv": fs for i, fs in enumerate(backbones.SMALL_CNN_TEXTURE)},
        **{f"shape{i}_conv": fs for i, fs in enumerate(backbones.SMALL_CNN_SHAPE)}}
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == 10
    assert 2.5e5 < model.count_params() < 3.5e5
    assert not model.get_layer("blur").weights  # a fixed filter, nothing to train
    # The shape path cannot see texture: a checkered square and a solid one of the same mean
    # colour give the same features once blurred (up to the pattern's residue at the edges).
    yy, xx = np.mgrid[:64, :64]
    square = (abs(yy - 32) < 12) & (abs(xx - 32) < 12)
    checks = ((yy // 3 + xx // 3) % 2 == 0)
    checkered = np.where(square, np.where(checks, 0.9, 0.3), 0.5)[None, ..., None].repeat(3, -1)
    solid = np.where(square, 0.6, 0.5)[None, ..., None].repeat(3, -1)
    blurred = [output("blur", x.astype(np.float32))[0, 24:40, 24:40] for x in (checkered, solid)]
    np.testing.assert_allclose(blurred[0], blurred[1], atol=0.6 * 0.02)  # < 2 % of the contrast
    assert np.ptp(checkered[0, 24:40, 24:40]) == pytest.approx(0.6)
    with pytest.raises(backbones.BackboneError, match="no ImageNet weights"):
        backbones.build_backbone("small_cnn", (64, 64, 3), "imagenet")
    # In the full model it trains like any backbone (BatchNorm in training mode).
    sdl = build_model(ModelConfig(backbone="small_cnn", weights="none", image_size=32,
                                  num_rows=2, dim=8))
    assert sdl(np.zeros((3, 32, 32, 3), np.uint8), training=True).shape == (3, 2, 8)


def test_gaussian_blur_layer():
    """Two 1-D passes equal the 2-D Gaussian (sum 1, sigma as given); it serializes."""
    layer = backbones.GaussianBlur(2.0)
    impulse = np.zeros((1, 31, 31, 2), np.float32)
    impulse[0, 15, 15] = 1.0
    out = layer(impulse).numpy()[0, ..., 0]
    t = np.arange(-5, 6)
    g = np.exp(-t**2 / 8.0)
    g /= g.sum()
    expected = np.zeros((31, 31))
    expected[10:21, 10:21] = np.outer(g, g)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out.sum() == pytest.approx(1.0, abs=1e-5)
    clone = backbones.GaussianBlur.from_config(layer.get_config())
    assert clone.sigma == 2.0
    with pytest.raises(ValueError, match="sigma must be > 0"):
        backbones.GaussianBlur(0.0)


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


class _Features(tf.Module):
    """A stand-in TF-Hub feature-vector model: mean RGB (inputs in [0, 1]) times W."""

    def __init__(self, w):
        super().__init__()
        self.w = tf.Variable(w)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, images):
        return {"feature_vector": tf.reduce_mean(images, axis=[1, 2]) @ self.w}


def test_hub_local_saved_model_frozen_and_round_trip(tmp_path):
    w = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    module = _Features(w)
    path = str(tmp_path / "hub_model")
    tf.saved_model.save(module, path, signatures={"serving_default": module.__call__})

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
    reloaded = load_model(saved, safe_mode=False)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), out, rtol=1e-6)


def test_hub_errors(tmp_path):
    with pytest.raises(backbones.BackboneError, match="saved_model.pb"):
        backbones.build_backbone(f"hub:{tmp_path}", (16, 16, 3))
    try:
        import tensorflow_hub  # noqa: F401
    except ImportError:
        with pytest.raises(backbones.BackboneError, match="tensorflow_hub is not installed"):
            backbones.build_backbone("hub:https://tfhub.dev/google/x/1", (16, 16, 3))
