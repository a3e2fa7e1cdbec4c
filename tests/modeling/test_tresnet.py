"""Tests for sdl_tf.modeling.tresnet, tresnet_weights and the convert_weights CLI; no torch/timm.

Checkpoints are made by hand from a Keras model (numpy arrays under timm's names, written with
the safetensors numpy API). Parity with timm itself is in test_tresnet_parity.py.
"""

import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from sdl_tf.config import ModelConfig
from sdl_tf.modeling import backbones, tresnet, tresnet_weights
from sdl_tf.modeling.model import build_model
from sdl_tf.modeling.run_dir import load_keras_file
from tests.helpers.paths import REPO_ROOT

# timm 1.0's tresnet_m state dict: 434 entries = 372 tensors + 60 num_batches_tracked + head.fc
# weight/bias; its non-head parameters number 29,340,032 (+ 61,568 BN running statistics).
TIMM_TENSORS = 372
TIMM_PARAMS = 29_340_032
TIMM_PARAMS_AND_STATS = 29_401_600


@pytest.fixture(scope="module")
def model64():
    keras.utils.set_random_seed(0)
    return tresnet.tresnet_m((64, 64, 3))


def _timm_state(model, seed=1):
    """A random timm-named state dict that fits `model` (torch layouts), with the classifier."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, (_, shape, _) in tresnet_weights.keras_targets(model).items():
        value = rng.normal(size=shape).astype(np.float32)
        state[name] = np.abs(value) + 0.5 if name.endswith("running_var") else value
    state["head.fc.weight"] = rng.normal(size=(1000, 2048)).astype(np.float32)
    state["head.fc.bias"] = np.zeros(1000, np.float32)
    state["body.conv1.bn.num_batches_tracked"] = np.array(7, np.int64)
    return state


def _save(state, path):
    # Not in requirements.lock yet; the converter reads .safetensors with it.
    pytest.importorskip("safetensors", reason="safetensors is not installed")
    from safetensors.numpy import save_file

    save_file(state, str(path))
    return str(path)


def test_architecture_matches_timm(model64):
    assert model64.output_shape == (None, 2, 2, 2048)
    assert model64.count_params() == TIMM_PARAMS_AND_STATS
    assert sum(int(np.prod(w.shape)) for w in model64.trainable_weights) == TIMM_PARAMS
    targets = tresnet_weights.keras_targets(model64)
    assert len(targets) == TIMM_TENSORS
    # A few of timm's names, one per kind of module (stem, SE, projection shortcut, last BN).
    for name in ("body.conv1.conv.weight", "body.layer1.0.se.fc1.bias",
                 "body.layer2.0.downsample.1.conv.weight", "body.layer4.2.conv3.bn.running_var"):
        assert name in targets
    assert "body.layer4.0.se.fc1.weight" not in targets  # timm's layer4 has no SE
    assert targets["body.layer3.0.conv2.conv.weight"][1] == (256, 256, 3, 3)
    assert targets["body.layer3.0.se.fc1.weight"][1] == (128, 256, 1, 1)


def test_output_shapes_224_and_any_multiple_of_32(model64):
    model = tresnet.tresnet_m((224, 224, 3))
    assert model.output_shape == (None, 7, 7, 2048)
    x = np.random.default_rng(0).random((2, 64, 96, 3), dtype=np.float32)
    wide = tresnet.tresnet_m((64, 96, 3))
    assert wide(x).shape == (2, 2, 3, 2048)
    with pytest.raises(ValueError, match="multiples of 32.*100x100"):
        tresnet.tresnet_m((100, 100, 3))
    with pytest.raises(ValueError, match="unknown TResNet arch 'tresnet_s'"):
        tresnet.build_tresnet("tresnet_s")


def test_space_to_depth_uses_timms_channel_order():
    x = np.random.default_rng(0).random((2, 8, 12, 3), dtype=np.float32)
    got = tresnet.SpaceToDepth(4)(x).numpy()
    # timm, in NCHW: x.view(N, C, H/4, 4, W/4, 4).permute(0, 3, 5, 1, 2, 4).reshape(N, 16C, ...)
    nchw = x.transpose(0, 3, 1, 2).reshape(2, 3, 2, 4, 3, 4).transpose(0, 3, 5, 1, 2, 4)
    want = nchw.reshape(2, 48, 2, 3).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(got, want)


def test_blur_pool_by_hand():
    x = np.random.default_rng(0).random((1, 6, 4, 2), dtype=np.float32)
    got = tresnet.BlurPool2D()(x).numpy()
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="reflect")
    k = np.outer([1, 2, 1], [1, 2, 1]) / 16.0
    want = np.zeros((1, 3, 2, 2), np.float32)
    for i in range(3):
        for j in range(2):
            patch = padded[0, 2 * i:2 * i + 3, 2 * j:2 * j + 3, :]
            want[0, i, j] = np.einsum("hwc,hw->c", patch, k)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not tresnet.BlurPool2D().weights  # a fixed filter, not trainable


def test_sdl_model_with_tresnet_backbone_round_trips(tmp_path):
    cfg = ModelConfig(backbone="tresnet_m", weights="none", image_size=64, num_rows=2, dim=8)
    model = build_model(cfg)
    assert model.get_layer("preprocessing").mode == "unit"  # timm: mean 0, std 1 on [0, 1]
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype(np.uint8)
    out = model(images, training=False).numpy()
    assert out.shape == (2, 2, 8)
    path = str(tmp_path / "sdl_tresnet.keras")
    model.save(path)
    reloaded = load_keras_file(path)
    np.testing.assert_allclose(reloaded(images, training=False).numpy(), out, rtol=1e-5,
                               atol=1e-5)


def test_convert_then_build_backbone_loads_it(model64, tmp_path):
    state = _timm_state(model64)
    src = _save(state, tmp_path / "tresnet_m.safetensors")
    dst = str(tmp_path / "out" / "tresnet_m.weights.h5")
    notes = tresnet_weights.convert(src, dst)
    assert any("classifier" in n and "head.fc.weight (1000, 2048)" in n for n in notes)
    backbone, mode = backbones.build_backbone("tresnet_m", (64, 64, 3), dst)
    assert mode == "unit"
    layer = backbone.get_layer("body.layer2.0.downsample.1.conv")
    np.testing.assert_array_equal(
        layer.kernel.numpy(),
        state["body.layer2.0.downsample.1.conv.weight"].transpose(2, 3, 1, 0))
    bn = backbone.get_layer("body.layer4.2.conv3.bn")
    np.testing.assert_array_equal(bn.moving_variance.numpy(),
                                  state["body.layer4.2.conv3.bn.running_var"])
    np.testing.assert_array_equal(backbone.get_layer("body.layer3.1.se.fc2").bias.numpy(),
                                  state["body.layer3.1.se.fc2.bias"])
    assert sorted(os.listdir(tmp_path / "out")) == ["tresnet_m.weights.h5"]  # no temp files


def test_miil_inplace_abn_names_are_renamed(model64, tmp_path):
    state = _timm_state(model64)
    legacy = {}
    for name, value in state.items():
        for mod in ("conv1", "conv2", "conv3"):
            # Blocks that downsample wrapped (conv, abn) in another Sequential with the blur.
            aa = ((".layer2.0." in name and mod == "conv1")
                  or (any(f".layer{s}.0." in name for s in (3, 4)) and mod == "conv2"))
            conv, bn = ("0.0", "0.1") if aa else ("0", "1")
            name = name.replace(f"{mod}.conv.", f"{mod}.{conv}.")
            name = name.replace(f"{mod}.bn.", f"{mod}.{bn}.")
        name = name.replace("downsample.1.conv.", "downsample.1.0.")
        name = name.replace("downsample.1.bn.", "downsample.1.1.")
        if name.endswith("num_batches_tracked"):
            continue
        legacy[name] = value
    assert "body.layer2.0.conv1.0.1.weight" in legacy and "body.conv1.1.running_var" in legacy
    # InPlaceABN scales by |w| + 1e-5: store a negative weight.
    legacy["body.layer3.0.conv2.0.1.weight"] = -(state["body.layer3.0.conv2.bn.weight"] ** 2)
    src = _save(legacy, tmp_path / "miil.safetensors")
    dst = str(tmp_path / "miil.weights.h5")
    notes = tresnet_weights.convert(src, dst)
    assert any("inplace-ABN" in n for n in notes), notes
    model = tresnet.tresnet_m((64, 64, 3), weights=dst)
    np.testing.assert_allclose(model.get_layer("body.layer3.0.conv2.bn").gamma.numpy(),
                               state["body.layer3.0.conv2.bn.weight"] ** 2 + 1e-5, rtol=1e-6)
    np.testing.assert_array_equal(model.get_layer("body.layer2.0.conv1.conv").kernel.numpy(),
                                  state["body.layer2.0.conv1.conv.weight"].transpose(2, 3, 1, 0))


def test_converter_names_missing_extra_and_misshapen_tensors(model64, tmp_path):
    state = _timm_state(model64)
    del state["body.layer3.4.conv2.bn.running_mean"]
    state["body.layer5.0.conv1.conv.weight"] = np.zeros((8, 8, 1, 1), np.float32)
    state["body.layer1.2.se.fc2.weight"] = np.zeros((64, 32, 1, 1), np.float32)
    src = _save(state, tmp_path / "bad.safetensors")
    dst = tmp_path / "bad.weights.h5"
    with pytest.raises(tresnet_weights.ConversionError) as err:
        tresnet_weights.convert(src, str(dst))
    message = str(err.value)
    assert "\n" not in message
    assert "missing 1: body.layer3.4.conv2.bn.running_mean" in message
    assert "unexpected 1: body.layer5.0.conv1.conv.weight" in message
    assert "body.layer1.2.se.fc2.weight (64, 32, 1, 1) != (64, 64, 1, 1)" in message
    assert src in message
    assert not dst.exists() and os.listdir(tmp_path) == ["bad.safetensors"]


def test_converter_input_errors(tmp_path):
    with pytest.raises(tresnet_weights.ConversionError, match="checkpoint not found: .*nope.pth"):
        tresnet_weights.convert(str(tmp_path / "nope.pth"), str(tmp_path / "a.weights.h5"))
    (tmp_path / "w.npz").write_bytes(b"")
    with pytest.raises(tresnet_weights.ConversionError, match="unknown checkpoint type"):
        tresnet_weights.convert(str(tmp_path / "w.npz"), str(tmp_path / "a.weights.h5"))
    with pytest.raises(tresnet_weights.ConversionError, match=r"must end in \.weights\.h5"):
        tresnet_weights.convert(str(tmp_path / "w.npz"), str(tmp_path / "a.h5"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    have_package = importlib.util.find_spec("safetensors") is not None
    expected = "cannot read safetensors" if have_package else "needs the safetensors package"
    with pytest.raises(tresnet_weights.ConversionError, match=expected):
        tresnet_weights.convert(str(tmp_path / "junk.safetensors"), str(tmp_path / "a.weights.h5"))


def test_cli_refuses_with_one_line_and_no_traceback(tmp_path):
    src = _save({"body.conv1.conv.weight": np.zeros((64, 48, 3, 3), np.float32)},
                tmp_path / "partial.safetensors")
    dst = tmp_path / "x.weights.h5"
    proc = subprocess.run(
        [sys.executable, "-m", "sdl_tf.convert_weights", f"--from={src}", f"--to={dst}"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "convert_weights: error:" in line]
    assert len(errors) == 1 and "does not fit tresnet_m: missing 371:" in errors[0]
    assert not dst.exists()
