r"""timm / Alibaba-MIIL TResNet checkpoint -> Keras weights file for `sdl_tf.modeling.tresnet`.

The library of `python -m sdl_tf.convert_weights --from=tresnet_m.pth --to=<x>.weights.h5`.

Reads a PyTorch state dict (`.pth`/`.pt`/`.bin`/`.ckpt`, needs torch; loaded with
`weights_only=True`, so no pickled Python object is ever executed) or a `.safetensors` file
(read with numpy, torch not needed). Accepts timm's current names (`body.layer1.0.conv1.conv.*`,
`.bn.*`) and the inplace-ABN names of the original MIIL checkpoints (`body.layer1.0.conv1.0.*`,
`.1.*`), renamed as timm's `checkpoint_filter_fn` does; a state dict wrapped in `{"model": ...}`
or `{"state_dict": ...}` and a `module.` prefix are unwrapped.

Every tensor is mapped by name and shape to exactly one Keras weight. The classifier
(`head.fc.*`) is dropped (the SDL model has its own head), `num_batches_tracked` ignored; any
other unmapped, missing or wrongly shaped tensor stops the conversion with their names, and
nothing is written. The output is written to a temporary file and renamed, so a reader never
sees half a file. Use it with `--backbone=tresnet_m --weights=<the .weights.h5>`.
"""

from __future__ import annotations

import importlib
import os
import re

import numpy as np

from sdl_tf.modeling import weight_mapping

HEAD_PREFIX = "head.fc."
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")
SAFETENSORS_SUFFIX = ".safetensors"
KERAS_SUFFIX = ".weights.h5"

# torch name suffix -> Keras BatchNormalization attribute.
_BN_PARAMS = {
    "weight": "gamma",
    "bias": "beta",
    "running_mean": "moving_mean",
    "running_var": "moving_variance",
}

# timm's `checkpoint_filter_fn` for the inplace-ABN checkpoints: conv2d_ABN was
# Sequential(conv, abn), and Sequential(Sequential(conv, abn), blur) where it downsampled.
_LEGACY_RENAMES = (
    (re.compile(r"conv(\d+)\.0\.0\."), r"conv\1.conv."),
    (re.compile(r"conv(\d+)\.0\.1\."), r"conv\1.bn."),
    (re.compile(r"conv(\d+)\.0\."), r"conv\1.conv."),
    (re.compile(r"conv(\d+)\.1\."), r"conv\1.bn."),
    (re.compile(r"downsample\.(\d+)\.0\."), r"downsample.\1.conv."),
    (re.compile(r"downsample\.(\d+)\.1\."), r"downsample.\1.bn."),
)
# InPlaceABN scales by |weight| + eps (eps 1e-5); BatchNorm scales by weight.
_IABN_EPSILON = 1e-5


# Re-exported: callers catch `tresnet_weights.ConversionError`.
ConversionError = weight_mapping.ConversionError


def _unwrap(obj, path: str) -> dict:
    """The state dict inside a checkpoint: follows `model` / `state_dict` wrappers."""
    while isinstance(obj, dict):
        inner = next((obj[k] for k in ("model", "state_dict") if isinstance(obj.get(k), dict)),
                     None)
        if inner is None:
            return obj
        obj = inner
    raise ConversionError(f"{path}: not a state dict (a {type(obj).__name__})")


def _import_or_refuse(module: str, message: str):
    """The optional package `module`, or ConversionError(message) when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConversionError(message) from None


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    safetensors = _import_or_refuse(
        "safetensors.numpy", f"{path}: reading .safetensors needs the safetensors package "
        "(pip install 'sdl-tf[convert]')")
    try:
        return dict(safetensors.load_file(path))
    except Exception as e:  # header/format errors, or dtypes numpy lacks (bfloat16)
        raise ConversionError(f"{path}: cannot read safetensors file: {e}") from None


def _torch_load(torch, path: str):
    """`torch.load(weights_only=True)`: tensors and plain containers only, never pickled code."""
    import argparse

    try:
        # timm's training checkpoints also hold their argparse.Namespace, a plain attribute
        # bag: allowed.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        reason = (f"it holds a pickled {found.group(1)}, which is not a tensor" if found
                  else lines[0] if lines else type(e).__name__)
        raise ConversionError(
            f"{path}: refused by torch.load(weights_only=True): {reason}; load it where you "
            "trust it and re-save just the state dict (torch.save(model.state_dict(), ...))"
        ) from None


def _read_torch(path: str) -> dict[str, np.ndarray]:
    torch = _import_or_refuse(
        "torch", f"{path}: reading a PyTorch checkpoint needs torch (pip install "
        "'sdl-tf[convert]'), or convert it to .safetensors elsewhere")
    state = _unwrap(_torch_load(torch, path), path)
    out, bad = {}, []
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            value = value.detach()
            out[name] = (value.float() if value.is_floating_point() else value).numpy()
        else:
            bad.append(str(name))
    if bad:
        raise ConversionError(f"{path}: entries that are not tensors: {_names(bad)}")
    return out


def read_checkpoint(path: str) -> dict[str, np.ndarray]:
    """Reads a PyTorch or safetensors checkpoint as float32/int numpy arrays, no torch objects.

    Args:
        path: `.pth`/`.pt`/`.bin`/`.ckpt`/`.tar` (torch) or `.safetensors`.

    Returns:
        {name: array} of the (unwrapped) state dict.

    Raises:
        ConversionError: missing file, unknown suffix, torch/safetensors not installed, a file
            that holds pickled objects other than tensors, or non-tensor entries.
    """
    if not os.path.isfile(path):
        raise ConversionError(f"checkpoint not found: {path}")
    lower = path.lower()
    if lower.endswith(SAFETENSORS_SUFFIX):
        return _read_safetensors(path)
    if not lower.endswith(TORCH_SUFFIXES):
        raise ConversionError(
            f"{path}: unknown checkpoint type; expected {SAFETENSORS_SUFFIX} or one of "
            f"{', '.join(TORCH_SUFFIXES)}"
        )
    return _read_torch(path)


_names = weight_mapping.short_list


def _blur_filter(channels: int) -> np.ndarray:
    taps = np.array([1.0, 2.0, 1.0], np.float32) / 4.0
    return np.broadcast_to(np.outer(taps, taps), (channels, 1, 3, 3))


def normalize_state_dict(state: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Brings a TResNet state dict to timm's current names and drops what Keras does not need.

    Strips a `module.` prefix (DataParallel), drops the fixed blur filters (`*.filt`, stored by
    some MIIL checkpoints), renames inplace-ABN names to timm's (BN weight -> |w| + 1e-5, as
    timm's `checkpoint_filter_fn`), drops `num_batches_tracked` and the classifier `head.fc.*`.

    Args:
        state: {name: array} as read by `read_checkpoint`.

    Returns:
        (state, notes): the cleaned state dict and one human-readable line per change made.

    Raises:
        ConversionError: a `*.filt` buffer that is not the 3x3 binomial blur filter.
    """
    notes = []
    state = dict(state)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
        notes.append("stripped the 'module.' prefix")
    filters = [k for k in state if k.endswith(".filt")]
    for k in filters:
        v = state.pop(k)
        if v.shape[1:] != (1, 3, 3) or not np.allclose(v, _blur_filter(v.shape[0])):
            raise ConversionError(
                f"{k}: blur filter of shape {v.shape} is not the 3x3 binomial filter "
                "sdl_tf.modeling.tresnet uses"
            )
    if filters:
        notes.append(f"ignored {len(filters)} fixed blur filters (*.filt)")
    if "body.conv1.conv.weight" not in state:
        renamed, count = {}, 0
        for k, v in state.items():
            new = k
            for pattern, repl in _LEGACY_RENAMES:
                new = pattern.sub(repl, new)
            if new != k:
                count += 1
                if new.endswith("bn.weight"):
                    v = np.abs(v) + _IABN_EPSILON
            renamed[new] = v
        state = renamed
        if count:
            notes.append(
                f"renamed {count} inplace-ABN (MIIL) tensors to timm's names "
                "(BN weight -> |weight| + 1e-5)"
            )
    tracked = [k for k in state if k.endswith("num_batches_tracked")]
    for k in tracked:
        del state[k]
    head = sorted(k for k in state if k.startswith(HEAD_PREFIX))
    if head:
        shapes = ", ".join(f"{k} {tuple(state.pop(k).shape)}" for k in head)
        notes.append(f"dropped the classifier ({shapes}): the SDL model has its own head")
    return state, notes


def guess_arch(state: dict[str, np.ndarray]) -> str | None:
    """The `tresnet.ARCHS` variant whose widths and depths match a timm-named state dict."""
    from sdl_tf.modeling.tresnet import ARCHS

    stem = state.get("body.conv1.conv.weight")
    if stem is None or stem.ndim != 4:
        return None
    depths = []
    for stage in range(1, 5):
        pattern = re.compile(rf"body\.layer{stage}\.(\d+)\.")
        blocks = {int(m.group(1)) for k in state if (m := pattern.match(k))}
        depths.append(max(blocks) + 1 if blocks else 0)
    for name, spec in ARCHS.items():
        if spec.planes == stem.shape[0] and tuple(depths) == spec.layers:
            return name
    return None


def keras_targets(model) -> dict[str, tuple]:
    """The torch name of every Keras weight of a `sdl_tf.modeling.tresnet` model.

    Args:
        model: a model from `tresnet.build_tresnet` (layer names = timm module paths).

    Returns:
        {torch name: (keras variable, torch shape, to_keras)}; `to_keras` maps the torch array
        to the variable's layout (conv (out, in, kh, kw) -> (kh, kw, in, out)).
    """
    import keras

    def conv_kernel(a):
        return np.transpose(a, (2, 3, 1, 0))

    def same(a):
        return a

    targets = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            k = layer.kernel
            targets[f"{layer.name}.weight"] = (k, (k.shape[3], k.shape[2], k.shape[0], k.shape[1]),
                                               conv_kernel)
            if layer.use_bias:
                targets[f"{layer.name}.bias"] = (layer.bias, tuple(layer.bias.shape), same)
        elif isinstance(layer, keras.layers.BatchNormalization):
            for torch_name, attr in _BN_PARAMS.items():
                v = getattr(layer, attr)
                targets[f"{layer.name}.{torch_name}"] = (v, tuple(v.shape), same)
        elif layer.weights:
            # A layer type added to sdl_tf.modeling.tresnet without a mapping here.
            raise ConversionError(f"no torch mapping for Keras layer {layer.name} "
                                  f"({type(layer).__name__})")
    return targets


def assign(model, state: dict[str, np.ndarray], source: str = "checkpoint") -> None:
    """Copies a cleaned, timm-named state dict into a `sdl_tf.modeling.tresnet` model.

    Args:
        model: the Keras TResNet.
        state: {torch name: array} after `normalize_state_dict`.
        source: what to call the checkpoint in errors (its path).

    Raises:
        ConversionError: naming every missing, unexpected and wrongly shaped tensor; nothing is
            assigned then.
    """
    guess = guess_arch(state)
    hint = f"; it looks like --arch={guess}" if guess and guess != model.name else ""
    weight_mapping.assign_checked(keras_targets(model), state, source, model.name, hint)


def convert(src: str, dst: str, arch: str = "tresnet_m") -> list[str]:
    """Converts a TResNet checkpoint to a Keras `.weights.h5` file for `sdl_tf.modeling.tresnet`.

    Args:
        src: timm or MIIL checkpoint (`.pth`-like or `.safetensors`).
        dst: output path; must end in `.weights.h5`. Its directory is created.
        arch: a key of `sdl_tf.modeling.tresnet.ARCHS`.

    Returns:
        Notes on what was renamed or dropped, one line each.

    Raises:
        ConversionError: unreadable checkpoint, unknown arch, bad output name, or tensors that
            do not map one-to-one onto the Keras model (dst is not touched then).
    """
    if not dst.endswith(KERAS_SUFFIX):
        raise ConversionError(f"output {dst}: must end in {KERAS_SUFFIX} (a Keras weights file)")
    # The checkpoint is read before TensorFlow is imported (keras below): torch's companions
    # imported after TensorFlow have crashed the process here.
    state, notes = normalize_state_dict(read_checkpoint(src))
    from sdl_tf.modeling import tresnet

    if arch not in tresnet.ARCHS:
        raise ConversionError(f"unknown arch {arch!r}; choose one of {sorted(tresnet.ARCHS)}")
    model = tresnet.build_tresnet(arch, (224, 224, 3))
    assign(model, state, source=src)
    from sdl_tf.utils.atomic_io import atomic_save

    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    atomic_save(dst, lambda tmp: model.save_weights(tmp, overwrite=True), suffix=KERAS_SUFFIX)
    return notes
