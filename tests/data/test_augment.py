"""Tests for sdl_tf.data.augment: seeded stateless decoding and augmentation functions."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

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


@pytest.mark.parametrize("op", augment.RAND_AUGMENT_OPS)
def test_ops_keep_shape_and_are_identity_at_magnitude_zero(op):
    image = _image()
    for sign in (1.0, -1.0):
        out = augment.apply_op(image, op, 0.0, sign)
        assert out.dtype == tf.uint8 and out.shape == image.shape
        if op not in ("auto_contrast", "equalize"):  # the two ops without a magnitude
            np.testing.assert_array_equal(out, image)
    narrow = image // 2 + 40  # not already full range (auto_contrast) or flat (equalize)
    strong = augment.apply_op(narrow, op, 1.0)
    assert strong.shape == image.shape
    if op != "identity":
        assert not np.array_equal(strong, narrow)


def test_ops_match_pil_semantics():
    image = _image(1)
    x = image.numpy().astype(int)
    np.testing.assert_array_equal(augment.apply_op(image, "solarize", 1.0), 255 - x)
    np.testing.assert_array_equal(augment.apply_op(image, "posterize", 1.0), x & 0xF0)
    pil = Image.fromarray(image.numpy())
    np.testing.assert_array_equal(augment.apply_op(image, "equalize", 0.5),
                                  np.asarray(ImageOps.equalize(pil)))
    auto = augment.apply_op(image, "auto_contrast", 0.5).numpy().astype(int)
    assert np.abs(auto - np.asarray(ImageOps.autocontrast(pil), int)).max() <= 1
    # Translate moves the content by whole pixels and fills with mid grey.
    out = augment.apply_op(image, "translate_x", 0.1).numpy()  # 0.045 x 48 -> 2 px
    np.testing.assert_array_equal(out[:, 2:], x[:, :-2])
    assert (out[:, :2] == 128).all()
    # A constant channel is left alone by auto_contrast and equalize.
    flat = tf.concat([image[..., :2], tf.fill([40, 48, 1], tf.constant(7, tf.uint8))], -1)
    for op in ("auto_contrast", "equalize"):
        assert (augment.apply_op(flat, op, 0.5).numpy()[..., 2] == 7).all()


def test_rotate_turns_the_image_about_its_centre():
    image = np.zeros((41, 41, 3), np.uint8)
    image[20, 25:35] = 255  # a horizontal bar right of the centre
    out = augment.apply_op(image, "rotate", 1.0).numpy()[..., 0]  # 30 degrees
    ys, xs = np.nonzero(out == 255)
    assert len(ys) >= 8
    angles = np.degrees(np.arctan2(ys - 20, xs - 20))
    assert abs(abs(np.median(angles)) - 30) < 4


def test_rand_augment_is_a_pure_function_of_its_seed():
    image = _image(2, (24, 24))
    outs = [augment.rand_augment(image, tf.constant([s, 0]), 2, 1.0).numpy() for s in range(12)]
    np.testing.assert_array_equal(outs[0], augment.rand_augment(image, tf.constant([0, 0]), 2,
                                                                1.0))
    assert all(o.dtype == np.uint8 and o.shape == (24, 24, 3) for o in outs)
    assert len({o.tobytes() for o in outs}) >= 8
    # In a parallel tf.data map (graph mode, any order): the same images as eagerly.
    ds = tf.data.Dataset.range(12).map(
        lambda s: augment.rand_augment(image, tf.stack([tf.cast(s, tf.int32), 0]), 2, 1.0),
        num_parallel_calls=4, deterministic=False)
    assert {x.tobytes() for x in ds.as_numpy_iterator()} == {o.tobytes() for o in outs}


def test_rand_augment_static_shape_survives_the_switch():
    @tf.function(input_signature=[tf.TensorSpec([32, 32, 3], tf.uint8)])
    def f(x):
        out = augment.rand_augment(x, tf.constant([1, 2]), 2, 0.5)
        assert out.shape == (32, 32, 3)
        return out

    assert f(_image(0, (32, 32))).shape == (32, 32, 3)


def test_fused_functions_equal_their_unfused_definitions():
    image = tf.cast(_image(3, (32, 32)), tf.float32)
    for s in range(4):
        seed = tf.constant([4, s])
        fused = augment.imagenet_pixels(image, seed, 8).numpy().astype(int)
        plain = augment._imagenet_pixels(image, seed, 8).numpy().astype(int)
        assert np.abs(fused - plain).max() <= 1  # XLA may round a .5 the other way
    pixels = tf.cast(image, tf.uint8)
    for op in augment.RAND_AUGMENT_OPS:
        unfused = getattr(augment._OPS[op], "python_function", augment._OPS[op])
        for sign in (1.0, -1.0):
            a = augment.apply_op(pixels, op, 0.7, sign).numpy().astype(int)
            b = unfused(pixels, tf.constant(0.7), tf.constant(sign)).numpy().astype(int)
            # Rounding of a .5 (pixel values, or source coordinates of the geometric ops).
            assert np.mean(a != b) < 0.02 and (op in GEOMETRIC or np.abs(a - b).max() <= 1), op


GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")


@pytest.mark.parametrize("op, enhance", [("color", "Color"), ("contrast", "Contrast"),
                                         ("brightness", "Brightness"),
                                         ("sharpness", "Sharpness")])
def test_enhance_ops_match_pil(op, enhance):
    from PIL import ImageEnhance

    image = _image(4)
    for m, sign in ((0.5, 1.0), (1.0, -1.0), (1.0, 1.0)):
        out = augment.apply_op(image, op, m, sign).numpy().astype(int)
        pil = getattr(ImageEnhance, enhance)(Image.fromarray(image.numpy()))
        expected = np.asarray(pil.enhance(1.0 + sign * 0.9 * m), int)
        # PIL rounds its degenerate image (grey, mean, blur) to uint8 before blending.
        assert np.abs(out - expected).max() <= 2, (m, sign)
