"""TResNet forward on the same batch, Keras (sdl_tf.modeling.tresnet) vs PyTorch (timm), in one run.

    python benchmarks/bench_tresnet_parity.py [--arch=tresnet_m] [--size=224] [--batch=8] \
        [--repeats=5]

Needs the `convert` extra (torch, timm, safetensors: `make test-convert` installs it). A random
timm model (eval mode) is converted through `tresnet_weights.convert`; both frameworks then run
the same float32 images. Prints the median forward time and images/s of each (after one
warm-up call; Keras through a `tf.function`-compiled `predict_on_batch`, torch under
`inference_mode` with its default threads) and the max abs difference of the pooled features.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import timeit

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# torch and timm first: importing timm (torchvision) after TensorFlow crashes the process.
import numpy as np  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from absl import app, flags  # noqa: E402

flags.DEFINE_string("arch", "tresnet_m", "tresnet_m | tresnet_l | tresnet_xl.")
flags.DEFINE_integer("size", 224, "Image side (a multiple of 32).")
flags.DEFINE_integer("batch", 8, "Images per forward call.")
flags.DEFINE_integer("repeats", 5, "Timed calls per framework.")
FLAGS = flags.FLAGS


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: graph tracing / allocator
    return statistics.median(timeit.repeat(fn, number=1, repeat=repeats))


def main(argv):
    del argv
    from sdl_tf.modeling import tresnet, tresnet_weights

    torch.manual_seed(0)
    reference = timm.create_model(FLAGS.arch, pretrained=False).eval()
    with torch.no_grad():  # timm zero-initialises each block's last BN: make every path count
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.running_var.uniform_(0.5, 2.0)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "m.pth"), os.path.join(tmp, "m.weights.h5")
        torch.save(reference.state_dict(), src)
        tresnet_weights.convert(src, dst, FLAGS.arch)
        model = tresnet.build_tresnet(FLAGS.arch, (FLAGS.size, FLAGS.size, 3), weights=dst)

    images = np.random.default_rng(0).random((FLAGS.batch, FLAGS.size, FLAGS.size, 3),
                                              dtype=np.float32)
    x_torch = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    out = {}

    def run_keras():
        out["keras"] = model.predict_on_batch(images).mean(axis=(1, 2))

    def run_torch():
        with torch.inference_mode():
            feats = reference.forward_features(x_torch)
            out["torch"] = reference.forward_head(feats, pre_logits=True).numpy()

    t_keras = _median_seconds(run_keras, FLAGS.repeats)
    t_torch = _median_seconds(run_torch, FLAGS.repeats)
    diff = float(np.max(np.abs(out["keras"] - out["torch"])))
    n = FLAGS.batch
    print(f"\n{FLAGS.arch} forward, batch {n} at {FLAGS.size}x{FLAGS.size}, float32, "
          f"median of {FLAGS.repeats} (CPU cores: {os.cpu_count()}, torch threads: "
          f"{torch.get_num_threads()})")
    print(f"{'framework':<28} {'s/batch':>9} {'images/s':>9}")
    print(f"{'Keras (TF, sdl_tf.modeling.tresnet)':<28} {t_keras:9.3f} {n / t_keras:9.1f}")
    print(f"{'PyTorch (timm)':<28} {t_torch:9.3f} {n / t_torch:9.1f}")
    print(f"Keras / PyTorch time = {t_keras / t_torch:.2f}x; pooled features max abs diff = "
          f"{diff:.2e}")


if __name__ == "__main__":
    app.run(main)
