"""Parity of `sdl_tf.modeling.tresnet` + `tresnet_weights` (convert_weights) with timm's TResNet.

Needs torch, timm and safetensors (`make test-convert`, or `pip install 'sdl-tf[convert]'`);
skipped without them and excluded from `make test` by the `convert` marker.

A randomly initialised timm model, with random (non-trivial) BatchNorm statistics, is saved as
a `.pth`, a `.safetensors` and an inplace-ABN-named MIIL-style `{"model": ...}` `.pth`; all three
are converted, and the Keras model's pooled features must match PyTorch's on the same random
images to 1e-4 (max abs, float32).

The PyTorch side runs in a subprocess: conftest has already loaded TensorFlow, and importing
timm (torchvision) after TensorFlow crashes the process (segfault) with the pinned wheels.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers.paths import REPO_ROOT

pytestmark = pytest.mark.convert

TOLERANCE = 1e-4
BATCH = 2
CASES = {"tresnet_m": (224, 448), "tresnet_l": (224,)}


def make_reference(out_dir: str, arch: str, sizes, seed: int = 0) -> None:
    """Writes a random timm `arch`'s checkpoints and its outputs on random images (torch side).

    Files in `out_dir`: `<arch>.pth`, `<arch>.safetensors` (timm names), `<arch>_miil.pth`
    (inplace-ABN names wrapped in {"model": ...}, BN weights as |w| - 1e-5 with random signs,
    plus the fixed blur filters), and `reference.npz` with `images_<size>` (B, size, size, 3)
    in [0, 1] and `pooled_<size>` (B, F): timm's pre-logits features.
    """
    import timm
    import torch
    from safetensors.torch import save_file
    from timm.layers import ConvNormAct

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = timm.create_model(arch, pretrained=False).eval()
    # The last BN of each residual branch, which timm zero-initialises.
    last = {id(b.conv2.bn if b.__class__.__name__ == "BasicBlock" else b.conv3.bn)
            for stage in model.body[2:] for b in stage}
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                # Every path counts; smaller residual scales keep the features O(10), where
                # float32's rounding stays well below the tolerance.
                if id(m) in last:
                    m.weight.uniform_(0.1, 0.4)
                else:
                    m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    torch.save(state, os.path.join(out_dir, f"{arch}.pth"))
    save_file(state, os.path.join(out_dir, f"{arch}.safetensors"))

    # MIIL's original names: conv2d_ABN = Sequential(conv, abn), and
    # Sequential(conv2d_ABN, blur) where the block downsamples.
    legacy = {}
    modules = {n: m for n, m in model.named_modules() if isinstance(m, ConvNormAct)}
    for name, m in modules.items():
        aa = getattr(m, "aa", None) is not None
        conv, bn = (f"{name}.0.0", f"{name}.0.1") if aa else (f"{name}.0", f"{name}.1")
        legacy[f"{conv}.weight"] = state[f"{name}.conv.weight"]
        for p in ("weight", "bias", "running_mean", "running_var"):
            legacy[f"{bn}.{p}"] = state[f"{name}.bn.{p}"]
        sign = torch.from_numpy(rng.choice([-1.0, 1.0], m.bn.weight.shape).astype(np.float32))
        legacy[f"{bn}.weight"] = sign * (state[f"{name}.bn.weight"] - 1e-5)
        if aa:
            taps = torch.tensor([1.0, 2.0, 1.0]) / 4
            filt = (taps[:, None] * taps[None, :]).expand(m.conv.out_channels, 1, 3, 3)
            legacy[f"{name}.1.filt"] = filt.contiguous()
    covered = {f"{n}.{s}" for n in modules for s in ("conv.weight", "bn.weight", "bn.bias",
                                                      "bn.running_mean", "bn.running_var",
                                                      "bn.num_batches_tracked")}
    legacy.update({k: v for k, v in state.items() if k not in covered})  # SE, head
    torch.save({"model": legacy, "epoch": 1}, os.path.join(out_dir, f"{arch}_miil.pth"))

    arrays = {}
    for size in sizes:
        images = rng.random((BATCH, size, size, 3), dtype=np.float32)
        with torch.no_grad():
            x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
            pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        arrays[f"images_{size}"] = images
        arrays[f"pooled_{size}"] = pooled.numpy()
    np.savez(os.path.join(out_dir, "reference.npz"), **arrays)


def _require_converter_deps():
    pytest.importorskip("torch", reason="parity tests need torch: make test-convert")
    pytest.importorskip("safetensors", reason="parity tests need safetensors: make test-convert")
    # Looked up, not imported: see the module docstring (timm after TensorFlow crashes).
    if importlib.util.find_spec("timm") is None:
        pytest.skip("timm is not installed: parity tests need timm: make test-convert")


@pytest.mark.parametrize("arch", sorted(CASES))
def test_features_match_timm(arch, tmp_path):
    _require_converter_deps()
    import keras

    from sdl_tf.modeling import tresnet, tresnet_weights

    sizes = CASES[arch]
    code = (f"import sys; sys.path.insert(0, {REPO_ROOT!r}); "
            "from tests.modeling.test_tresnet_parity import make_reference; "
            f"make_reference({str(tmp_path)!r}, {arch!r}, {list(sizes)!r})")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"torch reference failed:\n{proc.stderr[-3000:]}"
    ref = np.load(tmp_path / "reference.npz")

    files = {}
    for kind, name in (("pth", f"{arch}.pth"), ("safetensors", f"{arch}.safetensors"),
                       ("miil", f"{arch}_miil.pth")):
        files[kind] = str(tmp_path / f"{kind}.weights.h5")
        notes = tresnet_weights.convert(str(tmp_path / name), files[kind], arch)
        assert any("classifier" in n for n in notes), notes
        if kind == "miil":
            assert any("inplace-ABN" in n for n in notes) and any("blur" in n for n in notes)

    # The three files must hold the same weights (the MIIL one up to |w| - 1e-5 + 1e-5).
    model = tresnet.build_tresnet(arch, (sizes[0], sizes[0], 3))
    loaded = {}
    for kind, path in files.items():
        model.load_weights(path)
        loaded[kind] = [w.numpy() for w in model.weights]
    for a, b, c in zip(loaded["pth"], loaded["safetensors"], loaded["miil"], strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=0, atol=1e-6)

    results = {}
    for size in sizes:
        model = tresnet.build_tresnet(arch, (size, size, 3), weights=files["pth"])
        features = keras.ops.convert_to_numpy(model(ref[f"images_{size}"], training=False))
        assert features.shape[1:] == (size // 32, size // 32, tresnet.ARCHS[arch].num_features)
        pooled, expected = features.mean(axis=(1, 2)), ref[f"pooled_{size}"]
        results[size] = (float(np.max(np.abs(pooled - expected))),
                         float(np.max(np.abs(expected))))
    print(f"\n{arch} pooled features vs timm, size: (max abs diff, max |feature|): {results}")
    assert max(diff for diff, _ in results.values()) <= TOLERANCE, results
