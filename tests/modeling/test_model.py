"""Tests for sdl_tf.modeling.model: the input/output contract, save/load round trip (loaded
with `run_dir.load_keras_file`, as the commands do), row normalisation, attention pooling."""

import keras
import numpy as np
import pytest

from sdl_tf.config import ModelConfig
from sdl_tf.modeling import layers
from sdl_tf.modeling.model import build_model
from sdl_tf.modeling.run_dir import load_keras_file

CFG = ModelConfig(backbone="tiny", weights="none", image_size=32, num_rows=3, dim=8)


def _images(n=4, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype(np.uint8)


def test_contract():
    model = build_model(CFG)
    assert model.inputs[0].name == "images"
    assert model.inputs[0].dtype == "uint8"
    assert tuple(model.inputs[0].shape) == (None, 32, 32, 3)
    assert model.output_names == ["matrices"]
    out = model(_images())
    assert tuple(out.shape) == (4, 3, 8) and out.dtype == "float32"
    # Bias-free projection (Figure 2's modified last FC layer) and dropout 0.5 by default.
    proj = model.get_layer("projection")
    assert proj.use_bias is False and proj.kernel.shape == (128, 24)
    assert model.get_layer("dropout").rate == 0.5


def test_dropout_only_in_training():
    model = build_model(CFG)
    x = _images()
    a, b = model(x, training=False), model(x, training=False)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(model(x, training=True), a)


def test_preprocessing_is_inside_the_model():
    """Serving sends raw 0-255 RGB: the model output must depend on pixel values as uint8."""
    model = build_model(CFG)
    x = _images()
    np.testing.assert_allclose(model(x), model(x.astype(np.float32)), rtol=1e-6)


def test_keras_round_trip_identical(tmp_path):
    model = build_model(CFG)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = load_keras_file(path)
    x = _images(seed=3)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert [w.shape for w in loaded.weights] == [w.shape for w in model.weights]


def test_compiled_round_trip_keeps_sdl_loss(tmp_path):
    from sdl_tf.modeling.losses import SDLLoss

    vectors = np.eye(5, 8, dtype=np.float32)
    model = build_model(CFG)
    model.compile(optimizer="adam", loss=SDLLoss(vectors, reg_lambda=0.2, use_sdw=False))
    path = str(tmp_path / "c.keras")
    model.save(path)
    loaded = load_keras_file(path, compile=True)
    loss = loaded.loss
    assert isinstance(loss, SDLLoss)
    assert loss.reg_lambda == 0.2 and loss.use_sdw is False
    np.testing.assert_array_equal(loss.label_vectors, vectors)


def test_mixed_precision_output_stays_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(CFG)
        assert model.get_layer("tiny").get_layer("conv0").compute_dtype == "float16"
        assert model(_images()).dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_dim_required():
    with pytest.raises(ValueError, match="dim"):
        build_model(ModelConfig(backbone="tiny", weights="none", image_size=32, dim=0))


def test_row_scale_gives_rows_of_equal_norm_and_round_trips(tmp_path):
    import dataclasses

    model = build_model(dataclasses.replace(CFG, row_scale=8.0))
    assert model.output_names == ["matrices"]
    x = _images(seed=5)
    out = np.asarray(model(x))
    assert out.shape == (4, 3, 8)
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 8.0, rtol=1e-5)
    # Same directions as the raw projection: normalising changes only the row lengths.
    raw = np.asarray(keras.Model(model.inputs, model.get_layer("rows").output)(x))
    np.testing.assert_allclose(out, 8.0 * raw / np.linalg.norm(raw, axis=-1, keepdims=True),
                               rtol=1e-5, atol=1e-6)
    path = str(tmp_path / "m.keras")
    model.save(path)
    np.testing.assert_array_equal(load_keras_file(path).predict(x, verbose=0),
                                  model.predict(x, verbose=0))
    # Off by default (the paper): no normalisation layer.
    assert "rows" not in [layer.name for layer in build_model(CFG).layers]
    with pytest.raises(ValueError, match="row_scale"):
        ModelConfig(row_scale=-1.0)


def test_attention_pooling_starts_as_average_pooling_and_round_trips(tmp_path):
    import dataclasses

    model = build_model(dataclasses.replace(CFG, pooling="attention", dropout=0.0))
    assert model.output_names == ["matrices"]
    layer = model.get_layer("matrices")
    assert isinstance(layer, layers.RowAttentionPooling)
    x = _images(seed=7)
    feature_model = keras.Model(model.inputs, layer.input)
    features = np.asarray(feature_model(x))  # (B, h, w, C)
    kernel = np.asarray(layer.projection_kernel)  # (M, C, d)
    # Zero attention logits: every row is global average pooling, each with its own projection.
    expected = np.einsum("bc,mcd->bmd", features.mean(axis=(1, 2)), kernel)
    np.testing.assert_allclose(np.asarray(model(x)), expected, rtol=1e-4, atol=1e-5)
    # A row whose logits favour one position reads (mostly) that position's features.
    flat = features.reshape(len(x), -1, features.shape[-1])
    w = np.zeros((features.shape[-1], 3), np.float32)
    w[:, 0] = 50.0 * (flat[0, 0] - flat[0].mean(axis=0))  # row 0 locks onto image 0's corner
    layer.attention_kernel.assign(w)
    out = np.asarray(model(x))
    logit = flat[0] @ w[:, 0]
    soft = np.exp(logit - logit.max()) / np.exp(logit - logit.max()).sum()
    np.testing.assert_allclose(out[0, 0], soft @ flat[0] @ kernel[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out[0, 1], flat[0].mean(axis=0) @ kernel[1], rtol=1e-4,
                               atol=1e-5)
    path = str(tmp_path / "m.keras")
    model.save(path)
    np.testing.assert_allclose(load_keras_file(path).predict(x, verbose=0),
                               model.predict(x, verbose=0), rtol=1e-6)
    # With row_scale the normalisation comes after the pooling, as for average pooling.
    scaled = build_model(dataclasses.replace(CFG, pooling="attention", row_scale=8.0))
    assert isinstance(scaled.get_layer("rows"), layers.RowAttentionPooling)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(scaled(x)), axis=-1), 8.0, rtol=1e-5)
    with pytest.raises(ValueError, match="pooling"):
        ModelConfig(pooling="max")
