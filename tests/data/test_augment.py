"""Tests for sdl_tf.data.augment: seeded stateless decoding and augmentation functions."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from sdl_tf.data import augment
from sdl_tf.data import pipeline as data_lib


def _photo(height=384, width=512, seed=0) -> bytes:
    """A smooth photo-like JPEG (gradients + blobs; JPEG noise on random pixels would swamp a
    comparison of decoders)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    image = np.stack([np.sin(6 * x + c) + np.cos(5 * y * (c + 1)) for c in range(3)], -1)
    for _ in range(6):
        cy, cx, r = rng.random(3)
        image += 1.5 * (((y - cy) ** 2 + (x - cx) ** 2) < (0.2 * r) ** 2)[..., None]
    image = (image - image.min()) / (image.max() - image.min()) * 255
    buf = io.BytesIO()
    Image.fromarray(image.astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _image(seed=0, size=(40, 48)):
    return tf.constant(np.random.default_rng(seed).integers(0, 256, (*size, 3)), tf.uint8)


@pytest.mark.parametrize("h, w, size, ratio", [(384, 512, 64, 4), (384, 512, 192, 2),
                                                (384, 512, 193, 1), (129, 4000, 16, 8),
                                                (127, 512, 17, 4), (64, 64, 64, 1)])
def test_dct_ratio_keeps_both_sides_at_least_the_target(h, w, size, ratio):
    assert int(augment.dct_ratio(h, w, size)) == ratio
    assert int(augment.dct_ratio(h, w, size, max_ratio=1)) == 1
    assert -(-h // ratio) >= size and -(-w // ratio) >= size


def test_decode_resized_is_the_eval_decode_up_to_the_dct_scaling():
    data = tf.constant(_photo())
    full = data_lib.decode_eval_image(data, 64).numpy().astype(float)
    np.testing.assert_array_equal(augment.decode_resized(data, 64, max_ratio=1).numpy(), full)
    out = augment.decode_resized(data, 64)  # decoded at 1/4 scale (128 x 96)
    assert out.dtype == tf.uint8 and out.shape == (64, 64, 3)
    diff = np.abs(out.numpy() - full)
    assert diff.mean() < 2.0 and np.percentile(diff, 99) < 12


def test_decode_random_crop_is_seeded_and_close_to_a_full_resolution_crop():
    data = tf.constant(_photo())
    for s in range(4):
        seed = tf.constant([s, 1])
        a = augment.decode_random_crop(data, seed, 48, 0.25)
        assert a.dtype == tf.float32 and a.shape == (48, 48, 3)
        np.testing.assert_array_equal(a, augment.decode_random_crop(data, seed, 48, 0.25))
        full = augment.decode_random_crop(data, seed, 48, 0.25, max_ratio=1)
        # The scaled window may be up to one scaled pixel larger: a small shift, small diff.
        assert np.abs(a.numpy() - full.numpy()).mean() < 4.0
    crops = {augment.decode_random_crop(data, tf.constant([s, 1]), 48, 0.25).numpy().tobytes()
             for s in range(4)}
    assert len(crops) == 4


@pytest.mark.parametrize("dtype", [tf.uint8, tf.float32])
def test_cutout_fills_one_clipped_square(dtype):
    for s in range(5):
        out = augment.cutout(tf.zeros((32, 40, 3), dtype), tf.constant([3, s]), 8).numpy()
        filled = (out != 0).any(axis=-1)
        rows, cols = np.nonzero(filled)
        assert 0 < filled.sum() <= 64
        assert filled.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        np.testing.assert_array_equal(out[rows[0], cols[0]], augment.FILL_RGB)


def test_random_colour_is_adjust_brightness_then_contrast():
    image = tf.cast(_image(), tf.float32)
    seed = tf.constant([5, 6])
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    delta = tf.random.stateless_uniform([], seeds[0], -25.5, 25.5)
    factor = tf.random.stateless_uniform([], seeds[1], 0.8, 1.2)
    expected = tf.image.adjust_contrast(tf.image.adjust_brightness(image, delta), factor)
    np.testing.assert_allclose(augment.random_colour(image, seed), expected, atol=1e-3)


def test_fused_functions_equal_their_unfused_definitions():
    image = tf.cast(_image(3, (32, 32)), tf.float32)
    for s in range(4):
        seed = tf.constant([4, s])
        fused = augment.imagenet_pixels(image, seed, 8).numpy().astype(int)
        plain = augment._imagenet_pixels(image, seed, 8).numpy().astype(int)
        assert np.abs(fused - plain).max() <= 1  # XLA may round a .5 the other way
