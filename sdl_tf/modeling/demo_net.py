"""The from-scratch demo backbone `small_cnn` and its fixed blur layer (`data_prep.demo` images).

The synthetic demo set (`data_prep.demo`: coloured, textured shapes on 64 px images, labels
such as "checkered diamond") is learnt from scratch in minutes on a CPU by this two-path
BatchNorm CNN; `sdl_tf.modeling.backbones` registers it as `small_cnn`. `GaussianBlur` keeps its
registered name (`sdl_tf>GaussianBlur`, from when it lived in `backbones`), so saved demo
models load unchanged.

Why two paths: with one path (9 convs on the full image) zero-shot labels that share a
texture with other unseen labels failed. Where "checkered" is seen only on a triangle and
a cross, the net never sees a checkered circle, square or diamond, and its shape features
for checkered objects had only learned triangle vs cross: the test's checkered diamonds
ranked like checkered crosses (ZSL mAP 70-81 on such sets, 88-98 with two paths). Here
no path mixes the two before the attention pooling: texture features do not depend on
the outline and shape features do not depend on the texture, so the linear projection
fitted on seen combinations scores unseen ones. The assumption is that an attribute is a
local pattern: colour or size, which the shape path also sees, are not kept apart from
the shape (docs/demo_results.md).
"""

from __future__ import annotations

import math

import keras


@keras.saving.register_keras_serializable(package="sdl_tf")
class GaussianBlur(keras.layers.Layer):
    """A fixed (weight-free) Gaussian low-pass filter, applied as two 1-D passes.

    Args:
        sigma: standard deviation in pixels; the kernel spans +-ceil(2.5 sigma) pixels.

    Call:
        images: (B, H, W, C) float. Returns (B, H, W, C), zero-padded at the borders.
    """

    def __init__(self, sigma: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        if sigma <= 0:
            raise ValueError(f"GaussianBlur sigma must be > 0, got {sigma}")
        self.sigma = float(sigma)

    def call(self, images):
        size = 2 * math.ceil(2.5 * self.sigma) + 1
        blur = keras.ops.image.gaussian_blur
        # Separable: a (size, 1) then a (1, size) pass, 2 * size taps instead of size ** 2.
        images = blur(images, (size, 1), (self.sigma, 1.0))
        return blur(images, (1, size), (1.0, self.sigma))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "sigma": self.sigma}


def _conv_bn_relu(x, filters: int, stride: int, name: str):
    x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                            name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


# small_cnn's two paths: (filters, stride) per 3x3 conv + BatchNorm + ReLU.
SMALL_CNN_TEXTURE = ((16, 1), (16, 2), (32, 1), (32, 2))
SMALL_CNN_SHAPE = ((32, 1), (32, 2), (64, 1), (64, 2), (128, 2), (128, 1))
SMALL_CNN_BLUR_SIGMA = 2.0


def small_cnn(input_shape, weights=None) -> keras.Model:
    """A two-path BatchNorm CNN (~0.3M parameters): the from-scratch demo backbone.

    (B, H, W, 3) -> (B, H/8, W/8, 32 + 64 + 128), three maps side by side:
      - texture path, at full resolution: 4 convs (16, 16/2, 32, 32/2; "/2" = stride 2) with a
        13 px receptive field, average-pooled to H/8. It sees stripes 2 px wide and dots every
        5 px, but not an object's outline (objects are 18-27 px on a 64 px image);
      - shape path, on the image low-passed by a Gaussian (sigma 2 px: it leaves under 2 % of
        the amplitude of 2 px stripes and 3 px checks and about 4 % of dots every 5 px) and
        halved: 6 convs (32, 32/2, 64, 64/2, 128/2, 128). It sees outlines and colours but
        not textures. Its H/8 map (64 channels) and its last H/16 map (128) upsampled x2 are
        the second and third maps.

    The H/8 output is for per-row attention pooling (`--pooling=attention`): on a 64 px image
    an H/16 cell (16 px) is about an object's size and often holds parts of two objects; at
    H/8 a row's softmax can pick cells of one object. BatchNorm trains it fast from scratch
    at a high learning rate; its statistics differ between one device and several replicas,
    so the distributed tests use a GroupNorm CNN instead (per-example statistics).

    Args:
        input_shape: (H, W, 3), H and W >= 16.
        weights: unused (trained from scratch; `BackboneSpec.has_imagenet` is False).
    """
    del weights
    inputs = keras.Input(input_shape)
    texture = inputs
    for i, (filters, stride) in enumerate(SMALL_CNN_TEXTURE):
        texture = _conv_bn_relu(texture, filters, stride, f"texture{i}")
    texture = keras.layers.AveragePooling2D(2, padding="same", name="texture_pool")(texture)

    shape = GaussianBlur(SMALL_CNN_BLUR_SIGMA, name="blur")(inputs)
    shape = keras.layers.AveragePooling2D(2, padding="same", name="blur_pool")(shape)
    middle = None
    for i, (filters, stride) in enumerate(SMALL_CNN_SHAPE):
        shape = _conv_bn_relu(shape, filters, stride, f"shape{i}")
        if i == 3:  # H/8
            middle = shape
    up = keras.layers.UpSampling2D(2, name="up")(shape)
    # "same" padding gives ceil(H/8) and ceil(H/16): for an H that is no multiple of 16 the
    # upsampled map is one row/column longer than the H/8 maps; drop it.
    extra = (up.shape[1] - middle.shape[1], up.shape[2] - middle.shape[2])
    if any(extra):
        up = keras.layers.Cropping2D(((0, extra[0]), (0, extra[1])), name="crop")(up)
    x = keras.layers.Concatenate(name="concat")([texture, middle, up])
    return keras.Model(inputs, x, name="small_cnn")
