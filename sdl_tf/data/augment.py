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

RandAugment (Cubuk et al. 2020, "RandAugment: Practical automated data augmentation with a
reduced search space"): N ops drawn uniformly from the 14 of the paper, each at magnitude M,
in the PIL semantics that AutoAugment/RandAugment implementations share (Model Garden's
`official/vision/ops/augment.py`, timm's `auto_augment.py`): each op rounds back to uint8.
"""

from __future__ import annotations

import math

import tensorflow as tf

# ImageNet mean RGB: cutout fills with it so the hole is ~0 after mean subtraction, as in
# DeVries & Taylor (paper ref. [12]) who cut out normalised images.
FILL_RGB = (124, 116, 104)
# Geometric RandAugment ops fill what they uncover with mid grey (Model Garden, timm).
_GEOMETRIC_FILL = 128
# The JPEG decoder's DCT scalings that `decode_jpeg(ratio=...)` accepts, largest first.
_RATIOS = (8, 4, 2)

RAND_AUGMENT_OPS = ("identity", "auto_contrast", "equalize", "rotate", "solarize", "color",
                    "posterize", "contrast", "brightness", "sharpness", "shear_x", "shear_y",
                    "translate_x", "translate_y")
# Op strength at magnitude 1 (the paper's M = 10 of AutoAugment's 0-10 scale): rotate up to
# 30 degrees, shear 0.3, translate 45 % of the side (timm's translate_pct), enhance factors
# 1 +- 0.9; solarize threshold and posterize bits fall as the magnitude rises ("increasing"
# variants), so a larger magnitude is always a stronger change.
_MAX_DEGREES = 30.0
_MAX_SHEAR = 0.3
_MAX_TRANSLATE = 0.45
_MAX_ENHANCE = 0.9


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


def _to_uint8(image):
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


def _fused(fn):
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
    return _to_uint8(image)


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


_apply_cutout_fused = _fused(_apply_cutout)


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
    image = _to_uint8(_apply_colour(image, delta, factor))
    return _apply_cutout(image, lo, hi, FILL_RGB)


_apply_imagenet_pixels_fused = _fused(_apply_imagenet_pixels)


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


# --- RandAugment ops: uint8 (H, W, 3) in, uint8 out; `m` float32 magnitude in [0, 1], `sign`
# float32 +-1 (the direction of the signed ops). ---

def _blend(degenerate, image, factor):
    """PIL ImageEnhance: degenerate + factor * (image - degenerate), float32 in, uint8 out."""
    return _to_uint8(degenerate + factor * (image - degenerate))


def _grey(image):
    """float32 (H, W, 1) luma (ITU-R 601-2, as PIL's convert("L"))."""
    return tf.image.rgb_to_grayscale(image)


def _color(image, m, sign):
    x = tf.cast(image, tf.float32)
    return _blend(_grey(x), x, 1.0 + sign * _MAX_ENHANCE * m)


def _contrast(image, m, sign):
    x = tf.cast(image, tf.float32)
    return _blend(tf.reduce_mean(_grey(x)), x, 1.0 + sign * _MAX_ENHANCE * m)


def _brightness(image, m, sign):
    x = tf.cast(image, tf.float32)
    return _blend(0.0, x, 1.0 + sign * _MAX_ENHANCE * m)


def _sharpness(image, m, sign):
    # PIL's SMOOTH filter [[1,1,1],[1,5,1],[1,1,1]] / 13 = (3x3 box sum + 4 x centre) / 13
    # inside, border pixels unchanged. The box sum as a 3x3 average pool: fused by XLA, ~2x
    # faster than the depthwise convolution unfused and ~15x faster than it under XLA.
    x = tf.cast(image, tf.float32)
    inner = x[1:-1, 1:-1]
    box = 9.0 * tf.nn.avg_pool2d(x[None], 3, 1, "VALID")[0]  # (H - 2, W - 2, 3)
    blurred = (box + 4.0 * inner) / 13.0
    # The degenerate image: x with its interior replaced by the blur (no broadcasting where).
    degenerate = x + tf.pad(blurred - inner, [[1, 1], [1, 1], [0, 0]])
    return _blend(degenerate, x, 1.0 + sign * _MAX_ENHANCE * m)


def _solarize(image, m, sign):
    del sign
    threshold = tf.cast(tf.round(256.0 - 256.0 * m), tf.int32)
    x = tf.cast(image, tf.int32)
    return tf.cast(x + (255 - 2 * x) * tf.cast(x >= threshold, tf.int32), tf.uint8)


def _posterize(image, m, sign):
    del sign
    shift = tf.cast(tf.round(4.0 * m), tf.uint8)  # keep 8 - shift bits (4 at magnitude 1)
    return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def _auto_contrast(image, m, sign):
    del m, sign
    x = tf.cast(image, tf.float32)
    lo = tf.reduce_min(x, axis=(0, 1))
    hi = tf.reduce_max(x, axis=(0, 1))
    # Per channel: a constant channel stays as it is (scale 1, offset 0).
    scale = tf.where(hi > lo, 255.0 / tf.maximum(hi - lo, 1.0), 1.0)
    return _to_uint8((x - tf.where(hi > lo, lo, 0.0)) * scale)


def _lookup(image, lut):
    """uint8 (H, W, 3) -> uint8: lut[c, image[..., c]] for a (3, 256) int32 table."""
    index = tf.cast(image, tf.int32) + tf.constant([0, 256, 512], tf.int32)
    return tf.cast(tf.gather(tf.reshape(lut, [-1]), index), tf.uint8)


_lookup_fused = _fused(_lookup)  # XLA's gather here is ~20x faster than TF's Gather kernel


def _equalize(image, m, sign):
    """PIL ImageOps.equalize per channel: a lookup table from the cumulative histogram."""
    del m, sign
    # histogram_fixed_width over [0, 256) puts value v in bin v; ~3x faster than bincount.
    hist = tf.stack([tf.histogram_fixed_width(tf.cast(image[..., c], tf.float32), [0.0, 256.0],
                                              nbins=256) for c in range(3)])  # (3, 256)
    # PIL: step = (pixels - count of the last non-empty bin) // 255; lut[i] = (cumulative
    # count below i + step // 2) // step; a channel with one value (step 0) is unchanged.
    last = tf.gather(hist, 255 - tf.argmax(tf.reverse(hist, [1]) > 0, axis=1,
                                           output_type=tf.int32), batch_dims=1)
    step = (tf.reduce_sum(hist, axis=1) - last) // 255
    below = tf.cumsum(hist, axis=1, exclusive=True)
    lut = tf.minimum((below + step[:, None] // 2) // tf.maximum(step[:, None], 1), 255)
    lut = tf.where(step[:, None] > 0, lut, tf.range(256)[None, :])
    return _lookup_fused(image, lut)


def _transform(image, matrix):
    """Applies the output -> input affine map `matrix` ([a0, a1, a2, b0, b1, b2]: input x =
    a0 x + a1 y + a2, input y = b0 x + b1 y + b2), nearest neighbour (PIL's default resampling,
    as the AutoAugment/RandAugment implementations use), mid-grey outside the image.

    One gather from the flattened image plus a fill pixel: several times faster on the CPU than
    `ImageProjectiveTransformV3`.
    """
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    a0, a1, a2, b0, b1, b2 = tf.unstack(tf.cast(tf.stack(matrix), tf.float32))
    ys = tf.cast(tf.range(height), tf.float32)[:, None]
    xs = tf.cast(tf.range(width), tf.float32)[None, :]
    src_x = tf.cast(tf.round(a0 * xs + a1 * ys + a2), tf.int32)  # (H, W)
    src_y = tf.cast(tf.round(b0 * xs + b1 * ys + b2), tf.int32)
    inside = (src_x >= 0) & (src_x < width) & (src_y >= 0) & (src_y < height)
    index = tf.where(inside, src_y * width + src_x, height * width)  # (H, W): no broadcast
    pixels = tf.concat([tf.reshape(image, [-1, 3]),
                        tf.fill([1, 3], tf.constant(_GEOMETRIC_FILL, image.dtype))], axis=0)
    return tf.gather(pixels, index)


def _centre(image):
    shape = tf.cast(tf.shape(image), tf.float32)
    return (shape[1] - 1.0) / 2.0, (shape[0] - 1.0) / 2.0


def _rotate(image, m, sign):
    angle = sign * m * _MAX_DEGREES * (math.pi / 180.0)
    cx, cy = _centre(image)
    c, s = tf.cos(angle), tf.sin(angle)
    return _transform(image, [c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy])


def _shear_x(image, m, sign):
    shear = sign * m * _MAX_SHEAR
    _, cy = _centre(image)
    return _transform(image, [1.0, shear, -shear * cy, 0.0, 1.0, 0.0])


def _shear_y(image, m, sign):
    shear = sign * m * _MAX_SHEAR
    cx, _ = _centre(image)
    return _transform(image, [1.0, 0.0, 0.0, shear, 1.0, -shear * cx])


def _translate_x(image, m, sign):
    shift = sign * m * _MAX_TRANSLATE * tf.cast(tf.shape(image)[1], tf.float32)
    return _transform(image, [1.0, 0.0, -tf.round(shift), 0.0, 1.0, 0.0])


def _translate_y(image, m, sign):
    shift = sign * m * _MAX_TRANSLATE * tf.cast(tf.shape(image)[0], tf.float32)
    return _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, -tf.round(shift)])


def _identity(image, m, sign):
    del m, sign
    return image


# Every op but equalize (a histogram: XLA compiles it slowly and runs it no faster; only its
# lookup is fused) is a chain of per-pixel ops or one gather: fused.
_OPS = {"identity": _identity, "auto_contrast": _fused(_auto_contrast), "equalize": _equalize,
        "rotate": _fused(_rotate), "solarize": _fused(_solarize), "color": _fused(_color),
        "posterize": _fused(_posterize), "contrast": _fused(_contrast),
        "brightness": _fused(_brightness), "sharpness": _fused(_sharpness),
        "shear_x": _fused(_shear_x), "shear_y": _fused(_shear_y),
        "translate_x": _fused(_translate_x), "translate_y": _fused(_translate_y)}


def apply_op(image, op: str, magnitude: float, sign: float = 1.0):
    """One RandAugment op by name (`RAND_AUGMENT_OPS`), for tests and inspection.

    Args:
        image: uint8 (H, W, 3).
        op: op name.
        magnitude: in [0, 1].
        sign: +1 or -1, the direction of rotate/shear/translate/enhance ops.

    Returns:
        uint8 (H, W, 3).
    """
    return _OPS[op](tf.convert_to_tensor(image, tf.uint8), tf.constant(magnitude, tf.float32),
                    tf.constant(sign, tf.float32))


def rand_augment(image, seed, num_ops: int = 2, magnitude: float = 0.5):
    """RandAugment: `num_ops` ops drawn uniformly (with replacement) from `RAND_AUGMENT_OPS`,
    each at `magnitude`, with a random direction for the signed ops.

    Only the drawn op of each slot runs (`tf.switch_case`), so the cost is that of two ops,
    not of fourteen.

    Args:
        image: uint8 (H, W, 3).
        seed: int32 (2,) stateless seed.
        num_ops: N, ops applied in sequence.
        magnitude: M in [0, 1] (1 = the strongest setting of every op, see the module).

    Returns:
        uint8 (H, W, 3), same static shape as `image`.
    """
    ops = [_OPS[name] for name in RAND_AUGMENT_OPS]
    m = tf.constant(magnitude, tf.float32)
    out = image
    for op_seed in tf.unstack(tf.random.experimental.stateless_split(seed, num=num_ops)):
        pick_seed, sign_seed = tf.unstack(tf.random.experimental.stateless_split(op_seed, 2))
        index = tf.random.stateless_uniform([], pick_seed, 0, len(ops), dtype=tf.int32)
        sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5, -1.0, 1.0)
        out = tf.switch_case(index, [lambda op=op, x=out, s=sign: op(x, m, s) for op in ops])
        out = tf.ensure_shape(out, image.shape)
    return out
