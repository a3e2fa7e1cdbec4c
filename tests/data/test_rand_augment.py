"""Tests for sdl_tf.data.rand_augment: the 14 ops (PIL semantics, identity at magnitude 0)
and RandAugment as a pure function of its seed."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from sdl_tf.data import rand_augment


def _image(seed=0, size=(40, 48)):
    return tf.constant(np.random.default_rng(seed).integers(0, 256, (*size, 3)), tf.uint8)


@pytest.mark.parametrize("op", rand_augment.RAND_AUGMENT_OPS)
def test_ops_keep_shape_and_are_identity_at_magnitude_zero(op):
    image = _image()
    for sign in (1.0, -1.0):
        out = rand_augment.apply_op(image, op, 0.0, sign)
        assert out.dtype == tf.uint8 and out.shape == image.shape
        if op not in ("auto_contrast", "equalize"):  # the two ops without a magnitude
            np.testing.assert_array_equal(out, image)
    narrow = image // 2 + 40  # not already full range (auto_contrast) or flat (equalize)
    strong = rand_augment.apply_op(narrow, op, 1.0)
    assert strong.shape == image.shape
    if op != "identity":
        assert not np.array_equal(strong, narrow)


def test_ops_match_pil_semantics():
    image = _image(1)
    x = image.numpy().astype(int)
    np.testing.assert_array_equal(rand_augment.apply_op(image, "solarize", 1.0), 255 - x)
    np.testing.assert_array_equal(rand_augment.apply_op(image, "posterize", 1.0), x & 0xF0)
    pil = Image.fromarray(image.numpy())
    np.testing.assert_array_equal(rand_augment.apply_op(image, "equalize", 0.5),
                                  np.asarray(ImageOps.equalize(pil)))
    auto = rand_augment.apply_op(image, "auto_contrast", 0.5).numpy().astype(int)
    assert np.abs(auto - np.asarray(ImageOps.autocontrast(pil), int)).max() <= 1
    # Translate moves the content by whole pixels and fills with mid grey.
    out = rand_augment.apply_op(image, "translate_x", 0.1).numpy()  # 0.045 x 48 -> 2 px
    np.testing.assert_array_equal(out[:, 2:], x[:, :-2])
    assert (out[:, :2] == 128).all()
    # A constant channel is left alone by auto_contrast and equalize.
    flat = tf.concat([image[..., :2], tf.fill([40, 48, 1], tf.constant(7, tf.uint8))], -1)
    for op in ("auto_contrast", "equalize"):
        assert (rand_augment.apply_op(flat, op, 0.5).numpy()[..., 2] == 7).all()


def test_rotate_turns_the_image_about_its_centre():
    image = np.zeros((41, 41, 3), np.uint8)
    image[20, 25:35] = 255  # a horizontal bar right of the centre
    out = rand_augment.apply_op(image, "rotate", 1.0).numpy()[..., 0]  # 30 degrees
    ys, xs = np.nonzero(out == 255)
    assert len(ys) >= 8
    angles = np.degrees(np.arctan2(ys - 20, xs - 20))
    assert abs(abs(np.median(angles)) - 30) < 4


def test_rand_augment_is_a_pure_function_of_its_seed():
    image = _image(2, (24, 24))

    def augmented(s):
        return rand_augment.rand_augment(image, tf.stack([tf.cast(s, tf.int32), 0]), 2, 1.0)

    outs = [rand_augment.rand_augment(image, tf.constant([s, 0]), 2, 1.0).numpy()
            for s in range(12)]
    np.testing.assert_array_equal(outs[0],
                                  rand_augment.rand_augment(image, tf.constant([0, 0]), 2, 1.0))
    assert all(o.dtype == np.uint8 and o.shape == (24, 24, 3) for o in outs)
    assert len({o.tobytes() for o in outs}) >= 8
    # In a parallel tf.data map (graph mode, any order): the same images as eagerly.
    ds = tf.data.Dataset.range(12).map(augmented, num_parallel_calls=4, deterministic=False)
    assert {x.tobytes() for x in ds.as_numpy_iterator()} == {o.tobytes() for o in outs}


def test_rand_augment_static_shape_survives_the_switch():
    @tf.function(input_signature=[tf.TensorSpec([32, 32, 3], tf.uint8)])
    def f(x):
        out = rand_augment.rand_augment(x, tf.constant([1, 2]), 2, 0.5)
        assert out.shape == (32, 32, 3)
        return out

    assert f(_image(0, (32, 32))).shape == (32, 32, 3)


def test_fused_ops_equal_their_unfused_definitions():
    image = tf.cast(_image(3, (32, 32)), tf.float32)
    pixels = tf.cast(image, tf.uint8)
    for op in rand_augment.RAND_AUGMENT_OPS:
        unfused = getattr(rand_augment._OPS[op], "python_function", rand_augment._OPS[op])
        for sign in (1.0, -1.0):
            a = rand_augment.apply_op(pixels, op, 0.7, sign).numpy().astype(int)
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
        out = rand_augment.apply_op(image, op, m, sign).numpy().astype(int)
        pil = getattr(ImageEnhance, enhance)(Image.fromarray(image.numpy()))
        expected = np.asarray(pil.enhance(1.0 + sign * 0.9 * m), int)
        # PIL rounds its degenerate image (grey, mean, blur) to uint8 before blending.
        assert np.abs(out - expected).max() <= 2, (m, sign)
