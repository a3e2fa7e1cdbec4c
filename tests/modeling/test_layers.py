"""Tests for sdl_tf.modeling.layers: preprocessing modes, row normalisation (the attention
pooling is tested through `build_model` in tests/modeling/test_model.py)."""

import keras
import numpy as np
import pytest

from sdl_tf.modeling import layers


def test_preprocessing_modes_by_hand():
    x = np.array([[[[10.0, 20.0, 30.0]]]], np.float32)  # one RGB pixel
    caffe = layers.ImagePreprocessing("caffe")(x).numpy().ravel()
    # BGR order minus the ImageNet BGR means (103.939, 116.779, 123.68).
    np.testing.assert_allclose(caffe, [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-6)
    np.testing.assert_allclose(layers.ImagePreprocessing("unit")(x).numpy().ravel(),
                               [10 / 255, 20 / 255, 30 / 255], rtol=1e-6)
    np.testing.assert_allclose(layers.ImagePreprocessing("symmetric")(x).numpy().ravel(),
                               [10 / 127.5 - 1, 20 / 127.5 - 1, 30 / 127.5 - 1], rtol=1e-6)
    with pytest.raises(ValueError, match="mode"):
        layers.ImagePreprocessing("bgr")


def test_row_normalization_keeps_zero_rows_finite():
    layer = layers.RowNormalization(4.0)
    rows = keras.ops.convert_to_tensor(np.zeros((1, 2, 3), np.float32))
    assert np.all(np.asarray(layer(rows)) == 0)
    with pytest.raises(ValueError, match="scale"):
        layers.RowNormalization(0.0)


def test_layers_keep_their_registered_names():
    """Models saved when these layers lived in `backbones` / `model` name them so."""
    for cls in (layers.ImagePreprocessing, layers.RowNormalization, layers.RowAttentionPooling):
        assert keras.saving.get_registered_name(cls) == f"sdl_tf>{cls.__name__}"
