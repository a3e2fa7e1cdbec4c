"""RandAugment (Cubuk et al. 2020, "RandAugment: Practical automated data augmentation with a
reduced search space") as seeded, stateless TF functions on uint8 (H, W, 3) RGB images.

N ops drawn uniformly from the 14 of the paper, each at magnitude M, in the PIL semantics that
AutoAugment/RandAugment implementations share (Model Garden's
`official/vision/ops/augment.py`, timm's `auto_augment.py`): each op rounds back to uint8.
Every op takes uint8 (H, W, 3) and returns uint8; `m` is the float32 magnitude in [0, 1] and
`sign` float32 +-1 (the direction of the signed ops). `sdl_tf.data.pipeline` applies
`rand_augment` after the `augment_mode` transforms of `sdl_tf.data.augment`.
"""

from __future__ import annotations

import math

import tensorflow as tf

from sdl_tf.data.augment import to_uint8, xla_fused

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
# Geometric ops fill what they uncover with mid grey (Model Garden, timm).
_GEOMETRIC_FILL = 128


def _blend(degenerate, image, factor):
    """PIL ImageEnhance: degenerate + factor * (image - degenerate), float32 in, uint8 out."""
    return to_uint8(degenerate + factor * (image - degenerate))


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
    return to_uint8((x - tf.where(hi > lo, lo, 0.0)) * scale)


def _lookup(image, lut):
    """uint8 (H, W, 3) -> uint8: lut[c, image[..., c]] for a (3, 256) int32 table."""
    index = tf.cast(image, tf.int32) + tf.constant([0, 256, 512], tf.int32)
    return tf.cast(tf.gather(tf.reshape(lut, [-1]), index), tf.uint8)


_lookup_fused = xla_fused(_lookup)  # XLA's gather here is ~20x faster than TF's Gather kernel


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
_OPS = {"identity": _identity, "auto_contrast": xla_fused(_auto_contrast),
        "equalize": _equalize, "rotate": xla_fused(_rotate), "solarize": xla_fused(_solarize),
        "color": xla_fused(_color), "posterize": xla_fused(_posterize),
        "contrast": xla_fused(_contrast), "brightness": xla_fused(_brightness),
        "sharpness": xla_fused(_sharpness), "shear_x": xla_fused(_shear_x),
        "shear_y": xla_fused(_shear_y), "translate_x": xla_fused(_translate_x),
        "translate_y": xla_fused(_translate_y)}


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
