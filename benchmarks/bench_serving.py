"""Benchmark: exported SavedModel throughput (JPEG bytes in, scores out) and retrieval latency.

1. For a ResNet50-sized SDL model (random weights, 224 x 224, M = 7, d = 300, C = 1,006 labels)
   and the demo-sized model (the tests' tiny backbone, `tests.helpers.tiny_backbone`), export
   with `sdl_tf.serving.export_lib`, load it with `tf.saved_model.load` and time
   `serving_default` on JPEG bytes at batch 1 and 32 (images/s). For reference, the Keras model
   on already-decoded uint8 tensors at batch 32 (the ratio shows what in-graph decoding +
   resizing + scoring costs on top of the network).
2. Retrieval over N = 100,000 indexed images (M = 7, d = 300, float32 in memory): latency of one
   query and of a batch of 16, against one pass reading the index from memory (the faster of
   a column sum and a column max over the (N*M, d) array). Target: ratio <= 2.

    .venv/bin/python benchmarks/bench_serving.py            # full
    .venv/bin/python benchmarks/bench_serving.py --quick    # smaller/shorter (smoke run)

Everything is measured in this one run, on this machine's CPU; nothing is downloaded.
"""

import argparse
import io
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def _jpegs(n, rng, size=(320, 240)):
    """Photo-sized JPEGs (smooth gradients + noise, quality 90) so decode cost is realistic."""
    out = []
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(n):
        base = rng.uniform(0, 255, size=3)
        img = (base + 60 * np.sin(xx[..., None] / rng.uniform(5, 40))
               + 60 * np.cos(yy[..., None] / rng.uniform(5, 40))
               + rng.normal(0, 10, size=(h, w, 3)))
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _rate(fn, n_images, min_seconds, min_reps=3):
    """Images/s of fn() (which processes n_images), after one warm-up call."""
    fn()
    reps, start = 0, time.perf_counter()
    while reps < min_reps or time.perf_counter() - start < min_seconds:
        fn()
        reps += 1
    return reps * n_images / (time.perf_counter() - start)


def bench_model(name, cfg, num_labels, jpegs, min_seconds):
    import keras
    import tensorflow as tf

    from sdl_tf.labels.label_space import LabelSpace
    from sdl_tf.modeling.model import build_model
    from sdl_tf.serving import export_lib, signatures
    from tests.helpers import tiny_backbone

    tiny_backbone.register()  # the demo-sized model's backbone: the tests' CNN
    keras.utils.set_random_seed(0)
    model = build_model(cfg)
    rng = np.random.default_rng(0)
    ls = LabelSpace.create([f"label{i}" for i in range(num_labels)],
                           rng.random(num_labels) < 0.1, rng.normal(size=(num_labels, cfg.dim)))
    with tempfile.TemporaryDirectory() as tmp:
        path = export_lib.export_saved_model(model, ls, tmp, "bench", 1, top_k=10)
        serve = tf.saved_model.load(path).signatures["serving_default"]
        one = tf.constant(jpegs[:1])
        batch = tf.constant(jpegs[:32])
        r1 = _rate(lambda: serve(image_bytes=one)["scores"].numpy(), 1, min_seconds)
        r32 = _rate(lambda: serve(image_bytes=batch)["scores"].numpy(), 32, min_seconds)
        images, _ = signatures.decode_and_resize(batch, (cfg.image_size, cfg.image_size))
        call = tf.function(lambda x: model(x, training=False))
        keras32 = _rate(lambda: call(images).numpy(), 32, min_seconds)
    print(f"| {name} | {cfg.image_size} | {model.count_params() / 1e6:.1f} M | {r1:.1f} | "
          f"{r32:.1f} | {keras32:.1f} | {r32 / keras32:.2f} |", flush=True)


def bench_retrieval(n, queries, repeats):
    from sdl_tf.serving import retrieval

    m, d = 7, 300
    rng = np.random.default_rng(0)
    matrices = rng.standard_normal((n, m, d), dtype=np.float32)
    vectors = rng.standard_normal((queries, d), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    flat = matrices.reshape(n * m, d)
    index = retrieval.RetrievalIndex(np.array([str(i) for i in range(n)]), matrices,
                                     np.array(["a"]), np.array([False]), vectors[:1])

    def best(fn):
        fn()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    memory_pass = min(best(lambda: flat.sum(axis=0)), best(lambda: flat.max(axis=0)))
    q1 = best(lambda: index.query(vectors[:1], top=10))
    qb = best(lambda: index.query(vectors, top=10))
    size_mb = flat.nbytes / 2**20
    print(f"| {n:,} | {size_mb:.0f} MB | {memory_pass * 1e3:.1f} ms | {q1 * 1e3:.1f} ms | "
          f"{q1 / memory_pass:.2f} | {qb * 1e3:.1f} ms ({queries} tags) | "
          f"{qb / memory_pass:.2f} |", flush=True)
    return q1 / memory_pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller, shorter runs")
    parser.add_argument("--skip_resnet", action="store_true", help="only the demo-sized model")
    args = parser.parse_args()

    import tensorflow as tf

    from sdl_tf.config import ModelConfig

    print(f"CPU threads: {os.cpu_count()}; TF {tf.__version__}")
    jpegs = _jpegs(32, np.random.default_rng(1))
    secs = 1.0 if args.quick else 5.0
    print("\nExported SavedModel, serving_default (JPEG 320x240 bytes -> scores + top-10):")
    print("| model | input | params | images/s batch 1 | images/s batch 32 | "
          "Keras model only, batch 32 | ratio |")
    print("|---|---|---|---|---|---|---|")
    bench_model("demo (tiny backbone)", ModelConfig(backbone="tiny", weights="none",
                                                    image_size=64, dim=300), 20, jpegs, secs)
    if not args.skip_resnet:
        bench_model("ResNet50 (random weights)",
                    ModelConfig(backbone="resnet50", weights="none", image_size=224, dim=300),
                    1006, jpegs, secs)

    n = 10_000 if args.quick else 100_000
    print("\nRetrieval, M = 7, d = 300, float32 index in memory (best of repeats):")
    print("| images | index size | one memory pass | 1 query | ratio | batch | ratio |")
    print("|---|---|---|---|---|---|---|")
    ratio = bench_retrieval(n, 16, 3 if args.quick else 7)
    print(f"\nquery / memory-pass ratio {ratio:.2f} (goal <= 2): "
          f"{'OK' if ratio <= 2 else 'ABOVE GOAL'}")


if __name__ == "__main__":
    main()
