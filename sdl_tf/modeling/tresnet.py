"""TResNet (Ridnik et al., WACV 2021), the paper's backbone, as a Keras 3 functional model.

Inference-time architecture of timm's `tresnet_m` / `tresnet_l` / `tresnet_xl` (BatchNorm +
LeakyReLU form of the original inplace-ABN network), without the classifier head:

    images (B, H, W, 3) in [0, 1]  (timm's TResNet config: mean 0, std 1)
    -> SpaceToDepth(4)                              (B, H/4, W/4, 48)
    -> conv1: 3x3 conv, BN, LeakyReLU(0.01)         (B, H/4, W/4, 64w)
    -> layer1: BasicBlocks + SE                     (B, H/4, W/4, 64w)
    -> layer2: BasicBlocks + SE, blur-pool /2       (B, H/8, W/8, 128w)
    -> layer3: Bottlenecks + SE, blur-pool /2       (B, H/16, W/16, 1024w)
    -> layer4: Bottlenecks, blur-pool /2            (B, H/32, W/32, 2048w)

(w: width factor; 64w is rounded down, so tresnet_m gives F = 2048, tresnet_l 2432, tresnet_xl
2656.) The SDL model (`sdl_tf.modeling.model`) adds the pooling, dropout and projection itself.

Every layer is named after the timm module it replaces (`body.layer2.0.conv1.conv`,
`body.layer2.0.conv1.bn`, `body.layer3.0.se.fc1`, ...), so a timm state-dict key is
`<keras layer name>.<weight|bias|running_mean|running_var>`: `sdl_tf.modeling.tresnet_weights`
relies on that. The blur filter and the space-to-depth have no weights.
"""

from __future__ import annotations

import dataclasses

import keras
from keras import layers, ops

# torch.nn.BatchNorm2d's defaults (timm keeps them): eps 1e-5, momentum 0.1 (Keras counts the
# momentum the other way round).
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
STEM_SLOPE = 1e-2  # nn.LeakyReLU's default, the stem's activation
BLOCK_SLOPE = 1e-3  # timm's TResNet blocks: LeakyReLU(negative_slope=1e-3)
BOTTLENECK_EXPANSION = 4
SIZE_MULTIPLE = 32  # space-to-depth /4, then three stride-2 stages


@dataclasses.dataclass(frozen=True)
class TResNetArch:
    """One TResNet variant (timm's constructor arguments).

    Attributes:
        layers: blocks per stage (layer1..layer4).
        width_factor: multiplies the base width 64 (rounded down, as timm does).
    """

    layers: tuple[int, int, int, int]
    width_factor: float = 1.0

    @property
    def planes(self) -> int:
        return int(64 * self.width_factor)

    @property
    def num_features(self) -> int:
        return self.planes * 8 * BOTTLENECK_EXPANSION


ARCHS: dict[str, TResNetArch] = {
    "tresnet_m": TResNetArch((3, 4, 11, 3)),
    "tresnet_l": TResNetArch((4, 5, 18, 3), width_factor=1.2),
    "tresnet_xl": TResNetArch((4, 5, 24, 3), width_factor=1.3),
}


@keras.saving.register_keras_serializable(package="sdl_tf")
class SpaceToDepth(layers.Layer):
    """TResNet's stem: moves each `block_size` x `block_size` patch into the channels.

    The channel order is timm's (`x.view(N, C, H/b, b, W/b, b).permute(0, 3, 5, 1, 2, 4)`):
    output channel `(i * b + j) * C + c` holds input pixel `(b*y + i, b*x + j)`, channel `c`.
    That is also `tf.nn.space_to_depth`'s order; keras.ops keeps it backend-neutral.

    Args:
        block_size: patch side b.

    Call:
        x: (B, H, W, C), H and W multiples of b. Returns (B, H/b, W/b, b*b*C).
    """

    def __init__(self, block_size: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.block_size = int(block_size)

    def call(self, x):
        b = self.block_size
        shape = ops.shape(x)
        h, w, c = shape[1], shape[2], shape[3]
        x = ops.reshape(x, (-1, h // b, b, w // b, b, c))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))  # (B, H/b, W/b, i, j, C)
        return ops.reshape(x, (-1, h // b, w // b, b * b * c))

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        b = self.block_size
        return (n, None if h is None else h // b, None if w is None else w // b,
                None if c is None else c * b * b)

    def get_config(self):
        config = super().get_config()
        config["block_size"] = self.block_size
        return config


@keras.saving.register_keras_serializable(package="sdl_tf")
class BlurPool2D(layers.Layer):
    """Anti-aliased stride-2 downsampling (Zhang 2019), timm's `BlurPool2d(filt_size=3)`.

    Reflect-pads by 1, then applies the fixed binomial filter [1, 2, 1]^T [1, 2, 1] / 16 to each
    channel with stride 2. The filter is a constant, not a weight: timm does not store it
    either, and fine-tuning must not change it.

    Args:
        stride: downsampling factor.

    Call:
        x: (B, H, W, C). Returns (B, ceil(H/2), ceil(W/2), C).
    """

    def __init__(self, stride: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.stride = int(stride)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"{self.name}: the channel dimension must be known")
        self.channels = int(channels)
        super().build(input_shape)

    def call(self, x):
        x = ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="reflect")
        taps = ops.convert_to_tensor([1.0, 2.0, 1.0], dtype=x.dtype) / 4.0
        kernel = ops.reshape(taps, (3, 1, 1, 1)) * ops.reshape(taps, (1, 3, 1, 1))
        kernel = ops.tile(kernel, (1, 1, self.channels, 1))  # (3, 3, C, 1): per channel
        return ops.depthwise_conv(x, kernel, strides=self.stride, padding="valid")

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        s = self.stride
        return (n, None if h is None else (h - 1) // s + 1, None if w is None else (w - 1) // s + 1,
                c)

    def get_config(self):
        config = super().get_config()
        config["stride"] = self.stride
        return config


def _conv_norm_act(x, filters: int, kernel_size: int, name: str, slope: float | None = None,
                   blur: bool = False):
    """timm's `ConvNormAct`: stride-1 conv -> BN -> LeakyReLU(slope) (None: none) -> blur pool.

    With `blur`, the stride 2 comes from the blur pool after the activation, as in timm (the
    conv itself always has stride 1, so 'same' padding is timm's symmetric k // 2).

    Args:
        x: (B, H, W, C_in).

    Returns:
        (B, H, W, filters), or (B, H/2, W/2, filters) with `blur`.
    """
    x = layers.Conv2D(filters, kernel_size, padding="same", use_bias=False, name=f"{name}.conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}.bn")(x)
    if slope is not None:
        x = layers.LeakyReLU(negative_slope=slope, name=f"{name}.bn.act")(x)
    if blur:
        x = BlurPool2D(name=f"{name}.aa")(x)
    return x


def _squeeze_excite(x, channels: int, reduced: int, name: str):
    """timm's `SEModule`: x * sigmoid(fc2(relu(fc1(mean_hw(x))))), fc = 1x1 conv with bias.

    Args:
        x: (B, H, W, channels).

    Returns:
        (B, H, W, channels).
    """
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}.pool")(x)
    s = layers.Conv2D(reduced, 1, name=f"{name}.fc1")(s)
    s = layers.ReLU(name=f"{name}.act")(s)
    s = layers.Conv2D(channels, 1, name=f"{name}.fc2")(s)
    s = layers.Activation("sigmoid", name=f"{name}.gate")(s)
    return layers.Multiply(name=f"{name}.mul")([x, s])


def _downsample(x, filters: int, stride: int, name: str):
    """The projection shortcut: [2x2 average pool if stride 2] -> 1x1 conv -> BN.

    timm's pool uses `ceil_mode=True, count_include_pad=False`; Keras' 'same' average pooling
    pads at the end and averages only real pixels, which is the same thing (and plain 2x2
    pooling on the even sizes a multiple-of-32 input gives).
    """
    index = 0
    if stride == 2:
        x = layers.AveragePooling2D(2, 2, padding="same", name=f"{name}.0")(x)
        index = 1
    return _conv_norm_act(x, filters, 1, f"{name}.{index}")


def _basic_block(x, planes: int, stride: int, project: bool, use_se: bool, name: str):
    """timm's TResNet `BasicBlock`: (B, H, W, C_in) -> (B, H/stride, W/stride, planes)."""
    shortcut = _downsample(x, planes, stride, f"{name}.downsample") if project else x
    out = _conv_norm_act(x, planes, 3, f"{name}.conv1", BLOCK_SLOPE, blur=stride == 2)
    out = _conv_norm_act(out, planes, 3, f"{name}.conv2")
    if use_se:
        out = _squeeze_excite(out, planes, max(planes // 4, 64), f"{name}.se")
    out = layers.Add(name=f"{name}.add")([out, shortcut])
    return layers.ReLU(name=f"{name}.act")(out)


def _bottleneck(x, planes: int, stride: int, project: bool, use_se: bool, name: str):
    """timm's TResNet `Bottleneck` (SE before the expanding conv3):
    (B, H, W, C_in) -> (B, H/stride, W/stride, 4 * planes)."""
    out_channels = planes * BOTTLENECK_EXPANSION
    shortcut = _downsample(x, out_channels, stride, f"{name}.downsample") if project else x
    out = _conv_norm_act(x, planes, 1, f"{name}.conv1", BLOCK_SLOPE)
    out = _conv_norm_act(out, planes, 3, f"{name}.conv2", BLOCK_SLOPE, blur=stride == 2)
    if use_se:
        out = _squeeze_excite(out, planes, max(out_channels // 8, 64), f"{name}.se")
    out = _conv_norm_act(out, out_channels, 1, f"{name}.conv3")
    out = layers.Add(name=f"{name}.add")([out, shortcut])
    return layers.ReLU(name=f"{name}.act")(out)


def build_tresnet(arch: str = "tresnet_m", input_shape=(224, 224, 3), weights: str | None = None
                  ) -> keras.Model:
    """Builds a TResNet feature extractor.

    Args:
        arch: a key of `ARCHS`.
        input_shape: (H, W, 3); H and W multiples of 32 (or None for any such size).
        weights: None, or a `.weights.h5` file written by `sdl_tf.convert_weights` (CLI) for `arch`.

    Returns:
        A `keras.Model` named `arch`: float images (B, H, W, 3) in [0, 1] -> the last stage's
        feature map (B, H/32, W/32, F), before global pooling (F = 2048 for tresnet_m).

    Raises:
        ValueError: unknown arch, or a side that is not a multiple of 32.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown TResNet arch {arch!r}; choose one of {sorted(ARCHS)}")
    h, w, _ = input_shape
    for side in (h, w):
        if side is not None and (side < SIZE_MULTIPLE or side % SIZE_MULTIPLE):
            raise ValueError(
                f"{arch} needs image sides that are multiples of {SIZE_MULTIPLE}, got {h}x{w}"
            )
    spec = ARCHS[arch]
    inputs = keras.Input(input_shape, name="images")
    x = SpaceToDepth(4, name="body.s2d")(inputs)
    x = _conv_norm_act(x, spec.planes, 3, "body.conv1", STEM_SLOPE)
    in_channels = spec.planes
    stages = (
        (_basic_block, spec.planes, 1, True, 1),
        (_basic_block, spec.planes * 2, 2, True, 1),
        (_bottleneck, spec.planes * 4, 2, True, BOTTLENECK_EXPANSION),
        (_bottleneck, spec.planes * 8, 2, False, BOTTLENECK_EXPANSION),  # no SE in layer4
    )
    for stage, ((block, planes, stride, use_se, expansion), depth) in enumerate(
        zip(stages, spec.layers, strict=True), start=1
    ):
        for i in range(depth):
            first = i == 0
            project = first and (stride != 1 or in_channels != planes * expansion)
            x = block(x, planes, stride if first else 1, project, use_se,
                      f"body.layer{stage}.{i}")
            in_channels = planes * expansion
    model = keras.Model(inputs, x, name=arch)
    if weights is not None:
        model.load_weights(weights)
    return model


def tresnet_m(input_shape=(224, 224, 3), weights: str | None = None) -> keras.Model:
    """TResNet-M (layers 3/4/11/3, F = 2048): see `build_tresnet`."""
    return build_tresnet("tresnet_m", input_shape, weights)


def tresnet_l(input_shape=(224, 224, 3), weights: str | None = None) -> keras.Model:
    """TResNet-L (layers 4/5/18/3, width 1.2, F = 2432): see `build_tresnet`."""
    return build_tresnet("tresnet_l", input_shape, weights)


def tresnet_xl(input_shape=(224, 224, 3), weights: str | None = None) -> keras.Model:
    """TResNet-XL (layers 4/5/24/3, width 1.3, F = 2656): see `build_tresnet`."""
    return build_tresnet("tresnet_xl", input_shape, weights)
