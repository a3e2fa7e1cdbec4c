"""Tests for sdl_tf.modeling.demo_net: the demo backbone `small_cnn` (through the backbone
registry, as a run builds it) and its `GaussianBlur` layer."""

import keras
import numpy as np
import pytest

from sdl_tf.config import ModelConfig
from sdl_tf.modeling import backbones, demo_net
from sdl_tf.modeling.model import build_model


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
        **{f"texture{i}_conv": fs for i, fs in enumerate(demo_net.SMALL_CNN_TEXTURE)},
        **{f"shape{i}_conv": fs for i, fs in enumerate(demo_net.SMALL_CNN_SHAPE)}}
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
    layer = demo_net.GaussianBlur(2.0)
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
    clone = demo_net.GaussianBlur.from_config(layer.get_config())
    assert clone.sigma == 2.0
    with pytest.raises(ValueError, match="sigma must be > 0"):
        demo_net.GaussianBlur(0.0)


def test_gaussian_blur_keeps_its_registered_name():
    """Demo models saved when the layer lived in `backbones` name it `sdl_tf>GaussianBlur`."""
    assert keras.saving.get_registered_name(demo_net.GaussianBlur) == "sdl_tf>GaussianBlur"
    assert backbones.BACKBONES["small_cnn"].constructor is demo_net.small_cnn
