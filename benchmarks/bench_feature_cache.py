"""Frozen-backbone training with features computed once (`--cache_backbone_features`), measured
against its floor in one run.

    python benchmarks/bench_feature_cache.py [--images=640] [--image_size=256] [--rounds=3]

Writes a small synthetic TFRecord set (data_prep.demo, 128 px JPEGs, as the real-photo
mosaics) into a temporary directory, then prints, for EfficientNet-Lite0 (random weights: the
speed does not depend on them):
  - extraction: `feature_cache.extract_train_features` over the shards (read, decode, resize,
    backbone) against the floor of the backbone alone on the same images in memory;
  - step: one train step of the head on cached features against the step of the same frozen
    model on images (what every step costs without the cache).
Rounds alternate the two sides of each ratio; the best round of each side is kept.
"""

from __future__ import annotations

import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from sdl_tf.config import DataConfig, ModelConfig, TrainConfig  # noqa: E402
from sdl_tf.data import feature_cache  # noqa: E402
from sdl_tf.labels.label_space import LabelSpace  # noqa: E402
from sdl_tf.training import task as task_lib  # noqa: E402

flags.DEFINE_integer("images", 640, "Training images to write and extract.")
flags.DEFINE_integer("image_size", 256, "Model input side.")
flags.DEFINE_integer("batch", 64, "Batch size of extraction and steps.")
flags.DEFINE_integer("steps", 20, "Timed train steps per round.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds.")
FLAGS = flags.FLAGS


def _data(out: str) -> str:
    from data_prep.demo import DemoConfig, prepare

    prepare(DemoConfig(output_dir=out, num_train=FLAGS.images, num_val=8, num_test=8,
                       image_size=128, vector_dim=16, num_samples=0, train_shards=2,
                       eval_shards=1, num_workers=2, progress=False))
    return out


def _task(data_dir: str, cached: bool):
    space = LabelSpace.load(data_dir)
    cfg = TrainConfig(
        model_dir="unused", batch_size=FLAGS.batch, cache_backbone_features=cached,
        data=DataConfig(data_dir=data_dir, augment=False, val_split="none"),
        model=ModelConfig(backbone="efficientnet_lite0", weights="none",
                          image_size=FLAGS.image_size, num_rows=4, dim=space.dim,
                          pooling="attention", row_scale=8, trainable_backbone=False))
    return cfg, space, task_lib.SDLTask(cfg, space.seen_vectors,
                                           tf.distribute.get_strategy(), total_steps=10_000)


def _best(fns: dict, rounds: int) -> dict:
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = _data(os.path.join(tmp, "data"))
        cfg, space, cached = _task(data_dir, cached=True)
        _, _, plain = _task(data_dir, cached=False)
        n, size = FLAGS.images, FLAGS.image_size
        rng = np.random.default_rng(0)
        images = tf.constant(rng.integers(0, 256, (FLAGS.batch, size, size, 3), np.uint8))
        forward = tf.function(lambda x: cached.feature_model(x, training=False))

        def floor():
            for _ in range(-(-n // FLAGS.batch)):
                forward(images).numpy()

        def extract():
            feature_cache.extract_train_features(
                cached.feature_model, cfg.data, size, space.seen_indices, space.num_labels,
                flips=False, batch_size=FLAGS.batch)

        floor()  # trace both once
        features = feature_cache.extract_train_features(
            cached.feature_model, cfg.data, size, space.seen_indices, space.num_labels,
            flips=False, batch_size=FLAGS.batch)
        t1 = _best({"floor": floor, "extract": extract}, FLAGS.rounds)

        targets = tf.constant(features.targets[:FLAGS.batch])
        feats = tf.constant(features.features[:FLAGS.batch, 0].astype(np.float32))

        def head_steps():
            for _ in range(FLAGS.steps):
                out = cached.train_step((feats, targets))
            float(out["loss"])

        def image_steps():
            for _ in range(FLAGS.steps):
                out = plain.train_step((images, targets))
            float(out["loss"])

        head_steps()
        image_steps()
        t2 = _best({"head": head_steps, "images": image_steps}, FLAGS.rounds)

    per_s = lambda count, secs: count / secs  # noqa: E731
    print(f"EfficientNet-Lite0 at {size} px, batch {FLAGS.batch}, {n} images, best of "
          f"{FLAGS.rounds} alternating rounds")
    print("| what | images/s | ratio |\n|---|---:|---:|")
    print(f"| backbone forward on in-memory images (floor) | {per_s(n, t1['floor']):.1f} | 1.00 |")
    print(f"| extract_train_features from the shards | {per_s(n, t1['extract']):.1f} | "
          f"{t1['floor'] / t1['extract']:.2f} |")
    steps = FLAGS.steps * FLAGS.batch
    print(f"| train step, frozen model on images | {per_s(steps, t2['images']):.1f} | 1.00 |")
    print(f"| train step, head on cached features | {per_s(steps, t2['head']):.1f} | "
          f"{t2['images'] / t2['head']:.1f}x faster |")


if __name__ == "__main__":
    app.run(main)
