"""Training-image decoding and augmentation: plain, explicitly seeded, stateless TF functions.

Every function takes its randomness as an int32 (2,) stateless seed and is a pure function of
its inputs, so `sdl_tf.data.pipeline` can derive each example's seed from its position in the
epoch's stream (exact resume, per-example determinism) and run the functions in parallel map
calls in any order. No Keras layers, no hidden state; images are uint8 (H, W, 3) RGB unless a
function says otherwise.

Decoding does only the work the output needs (the JPEG's DCT scaling, `ratio=2/4/8`, when the
source is at least 2x the target; only the crop window when cropping): from a photo at full
resolution the antialiased resize costs about as much as the decoding, and the scaled decode
hands it 4-64x fewer pixels (and skips part of the inverse DCT; the entropy decoding remains).

RandAugment, applied after these, is `sdl_tf.data.rand_augment`.
"""

from __future__ import annotations

import math

import tensorflow as tf

# ImageNet mean RGB: cutout fills with it so the hole is ~0 after mean subtraction, as in
# DeVries & Taylor (paper ref. [12]) who cut out normalised images.
FILL_RGB = (124, 116, 104)
# The JPEG decoder's DCT scalings that `decode_jpeg(ratio=...)` accepts, largest first.
_RATIOS = (8, 4, 2)



def dct_ratio(height, width, size: int, max_ratio: int = 8):
    """Largest JPEG DCT scaling (1, 2, 4 or 8) that still decodes at least `size` per side.

    libjpeg's scaled decode is `ceil(side / ratio)` pixels; requiring both sides >= `size`
    means the antialiased resize that follows never upsamples, so the result differs from a
    full decode only by the DCT-domain downscale's filter (~1-2 of 255 on average; the sizes
    in docs/training.md and benchmarks/README.md).

    Args:
        height, width: int32 scalars, source (or crop window) size.
        size: output side.
        max_ratio: largest scaling allowed (1 = always a full decode).

    Returns:
        int32 scalar in {1, 2, 4, 8}.
    """
    short = tf.minimum(height, width)
    ratio = tf.constant(1, tf.int32)
    for r in [r for r in reversed(_RATIOS) if r <= max_ratio]:  # each fit replaces the smaller
        ratio = tf.where((short + r - 1) // r >= size, r, ratio)
    return ratio


def _ratio_branches(decode):
    """`tf.switch_case` branches 0-3 calling `decode(ratio)` for ratio 1, 2, 4, 8 (the op's
    `ratio` is an attribute, not a tensor, hence one branch per value)."""
    return [lambda r=r: decode(r) for r in (1, 2, 4, 8)]


def _ratio_index(ratio):
    """0, 1, 2, 3 for ratio 1, 2, 4, 8."""
    return tf.cast(tf.round(tf.math.log(tf.cast(ratio, tf.float32)) / math.log(2.0)), tf.int32)


def to_uint8(image):
    """float 0-255 -> uint8, rounded and clipped."""
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


def xla_fused(fn):
    """`fn` XLA-compiled: its chain of per-pixel ops becomes one loop over the pixels instead
    of one pass (and one temporary) per op, 3-5x faster on the CPU for these small images.
    Traced and compiled once per process and image shape (module-level `tf.function`s), and
    deterministic like the rest; tf.data map functions call it like any function."""
    return tf.function(fn, jit_compile=True, autograph=False)


def decode_resized(image_bytes, size: int, max_ratio: int = 8):
    """Decodes a JPEG at the smallest DCT scale >= `size` and resizes it (antialiased, whole
    image, aspect not kept) to `size` x `size`.

    Args:
        image_bytes: tf.string scalar (JPEG).
        size: output side.
        max_ratio: largest DCT scaling (1: a full decode, as `pipeline.decode_eval_image`).

    Returns:
        uint8 (size, size, 3).
    """
    shape = tf.image.extract_jpeg_shape(image_bytes)
    ratio = dct_ratio(shape[0], shape[1], size, max_ratio)
    image = tf.switch_case(_ratio_index(ratio), _ratio_branches(
        lambda r: tf.io.decode_jpeg(image_bytes, channels=3, ratio=r)))
    image = tf.image.resize(image, (size, size), antialias=True)
    return to_uint8(image)


def decode_random_crop(image_bytes, seed, size: int, min_area: float,
                       aspect_ratio_range=(3 / 4, 4 / 3), max_ratio: int = 8):
    """Random resized crop (Inception-style) decoding only the crop window, at the smallest
    DCT scale >= `size`.

    Args:
        image_bytes: tf.string scalar (JPEG).
        seed: int32 (2,) stateless seed.
        size: output side.
        min_area: smallest crop area as a fraction of the image.
        aspect_ratio_range: crop width / height range.
        max_ratio: largest DCT scaling (1: the window decoded at full resolution).

    Returns:
        float32 (size, size, 3) in [0, 255] (unrounded: colour changes follow).
    """
    shape = tf.image.extract_jpeg_shape(image_bytes)
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=aspect_ratio_range,
        area_range=(min_area, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    ratio = dct_ratio(crop_size[0], crop_size[1], size, max_ratio)

    def decode(r):
        # The crop window is in the scaled image's pixels: the scaled pixels covering the
        # window (at most one scaled pixel more per side than the exact window).
        top, left = begin[0] // r, begin[1] // r
        bottom = (begin[0] + crop_size[0] + r - 1) // r
        right = (begin[1] + crop_size[1] + r - 1) // r
        window = tf.stack([top, left, bottom - top, right - left])
        return tf.io.decode_and_crop_jpeg(image_bytes, window, channels=3, ratio=r)

    image = tf.switch_case(_ratio_index(ratio), _ratio_branches(decode))
    return tf.image.resize(image, (size, size), antialias=True)


def random_flip(image, seed):
    """Left-right flip with probability 1/2 (any dtype, (H, W, C))."""
    return tf.image.stateless_random_flip_left_right(image, seed)


def _colour_params(seed, brightness: float = 0.1 * 255.0, contrast=(0.8, 1.2)):
    """(delta, factor) of `random_colour`: float32 scalars."""
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    delta = tf.random.stateless_uniform([], seeds[0], -brightness, brightness)
    factor = tf.random.stateless_uniform([], seeds[1], contrast[0], contrast[1])
    return delta, factor


def _apply_colour(image, delta, factor):
    mean = tf.reduce_mean(image, axis=(0, 1))
    return image * factor + (mean * (1.0 - factor) + delta)


def random_colour(image, seed, brightness: float = 0.1 * 255.0, contrast=(0.8, 1.2)):
    """Random brightness then contrast (`tf.image.adjust_brightness` / `adjust_contrast`) as
    one per-channel affine map: (x + delta - mean') * c + mean' = x * c + (mean * (1 - c) +
    delta), mean = the channel's mean before the brightness shift.

    Args:
        image: float32 (H, W, 3), 0-255.
        seed: int32 (2,) stateless seed.
        brightness: largest |delta| added.
        contrast: contrast factor range.

    Returns:
        float32 (H, W, 3), unclipped.
    """
    return _apply_colour(image, *_colour_params(seed, brightness, contrast))


# The random draws of the fused functions below happen outside XLA: XLA's stateless random
# kernels draw other numbers than TF's, and the unfused definitions are the specification.

def _cutout_box(shape, seed, side):
    """(lo, hi) int32 (2,) row/column bounds of the cutout square (centre uniform)."""
    size = tf.stack([shape[0], shape[1]])
    center = tf.random.stateless_uniform([2], seed, 0, tf.int32.max, dtype=tf.int32) % size
    return tf.maximum(center - side // 2, 0), tf.minimum(center + (side - side // 2), size)


def _apply_cutout(image, lo, hi, fill):
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    rows, cols = tf.range(height), tf.range(width)
    # Arithmetic with broadcast (H, 1, 1) x (1, W, 1) masks: a broadcasting tf.where
    # (SelectV2) takes several times longer on the CPU.
    hole = (tf.cast((rows >= lo[0]) & (rows < hi[0]), image.dtype)[:, None, None]
            * tf.cast((cols >= lo[1]) & (cols < hi[1]), image.dtype)[None, :, None])
    return image * (1 - hole) + tf.constant(fill, image.dtype) * hole


_apply_cutout_fused = xla_fused(_apply_cutout)


def cutout(image, seed, side: int, fill=FILL_RGB):
    """Fills one side x side square, centre uniform over the image, clipped at the borders
    (DeVries & Taylor 2017).

    Args:
        image: (H, W, 3) of any dtype.
        seed: int32 (2,) stateless seed.
        side: square side in pixels.
        fill: RGB fill.

    Returns:
        `image` with the square filled, same dtype.
    """
    lo, hi = _cutout_box(tf.shape(image), seed, int(side))
    return _apply_cutout_fused(image, lo, hi, tuple(fill))


def _apply_imagenet_pixels(image, flip, delta, factor, lo, hi):
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
    image = to_uint8(_apply_colour(image, delta, factor))
    return _apply_cutout(image, lo, hi, FILL_RGB)


_apply_imagenet_pixels_fused = xla_fused(_apply_imagenet_pixels)


def _imagenet_params(shape, seed, cutout_side: int):
    seeds = tf.random.experimental.stateless_split(seed, num=3)
    # stateless_random_flip_left_right's draw: flip when uniform [0, 1) < 0.5.
    flip = tf.random.stateless_uniform([], seeds[0]) < 0.5
    lo, hi = _cutout_box(shape, seeds[2], cutout_side)
    return (flip, *_colour_params(seeds[1]), lo, hi)


def imagenet_pixels(image, seed, cutout_side: int):
    """The per-pixel part of the `imagenet` augmentation after the crop: a left-right flip
    with probability 1/2, `random_colour`, rounding to uint8 and `cutout` (none when
    `cutout_side` is 0), XLA-fused into one loop over the pixels.

    Args:
        image: float32 (H, W, 3) 0-255, e.g. from `decode_random_crop`.
        seed: int32 (2,) stateless seed.
        cutout_side: cutout square side in pixels (0 = none).

    Returns:
        uint8 (H, W, 3).
    """
    return _apply_imagenet_pixels_fused(image, *_imagenet_params(tf.shape(image), seed,
                                                                 int(cutout_side)))


def _imagenet_pixels(image, seed, cutout_side: int):
    """`imagenet_pixels` unfused (its specification, for tests)."""
    return _apply_imagenet_pixels(image, *_imagenet_params(tf.shape(image), seed, cutout_side))
