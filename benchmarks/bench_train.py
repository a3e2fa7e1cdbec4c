"""Training throughput on this machine, measured in one run (images/s).

    python benchmarks/bench_train.py --data_dir=demo_out/data [--resnet_steps=10] \
        [--tresnet_steps=5]

Prints train-step images/s for ResNet50 at 224 (batch 16, weights none), with --tresnet_steps
for the paper's TResNet-M at 224 (same batch, random weights) too, and for the model of
configs/demo.flags (on in-memory batches), against the floor of a bare Keras step of the same
network (`model.train_on_batch`, mean squared error on A, plain Adam); the demo recipe's input
pipeline alone on --data_dir (augmentation + batching, no model), with its decoded images cached
(`--cache_train_images`, as configs/demo.flags) and decoding every JPEG; and the demo train step
fed by that pipeline, as in a run, against the same step on an in-memory batch: on 2 cores the
pipeline's threads take CPU from the step even when the pipeline alone is faster.
"""

from __future__ import annotations

import dataclasses
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from sdl_tf import config_flags  # noqa: E402
from sdl_tf.config import DataConfig, ModelConfig, TrainConfig  # noqa: E402
from sdl_tf.data import pipeline as data_lib  # noqa: E402
from sdl_tf.modeling.model import build_model  # noqa: E402
from sdl_tf.training import task as task_lib  # noqa: E402

flags.DEFINE_string("data_dir", "demo_out/data", "Demo TFRecords (python -m data_prep.demo).")
flags.DEFINE_integer("resnet_steps", 10, "Timed ResNet50 steps (0 skips it).")
flags.DEFINE_integer("tresnet_steps", 0, "Timed TResNet-M steps, same batch as ResNet50 (0 skips).")
flags.DEFINE_integer("demo_steps", 60, "Timed demo-model steps.")
flags.DEFINE_integer("pipeline_batches", 60, "Timed input-pipeline batches.")
FLAGS = flags.FLAGS


def _task(model_cfg: ModelConfig, batch: int, num_seen: int, dim: int):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(num_seen, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    cfg = TrainConfig(model_dir="unused", model=model_cfg, batch_size=batch)
    return task_lib.SDLTask(cfg, vectors, tf.distribute.get_strategy(), total_steps=1000)


def time_train_steps(model_cfg: ModelConfig, batch: int, steps: int, num_seen: int = 20,
                     dim: int = 32) -> float:
    """Images/s of `Trainer.train_step` on one fixed in-memory batch (after 2 warm-up steps)."""
    rng = np.random.default_rng(0)
    trainer = _task(model_cfg, batch, num_seen, dim)
    size = model_cfg.image_size
    images = tf.constant(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8))
    targets = np.where(rng.random((batch, num_seen)) < 0.15, 1.0, 0.0).astype(np.float32)
    targets[:, 0] = 1.0
    batch_t = (images, tf.constant(targets))
    for _ in range(2):
        trainer.train_step(batch_t)["loss"].numpy()
    t0 = time.perf_counter()
    for _ in range(steps):
        out = trainer.train_step(batch_t)
    out["loss"].numpy()
    return steps * batch / (time.perf_counter() - t0)


def time_bare_keras_steps(model_cfg: ModelConfig, batch: int, steps: int) -> float:
    """Images/s of a bare Keras step of the same network: `train_on_batch`, MSE on A, Adam."""
    import keras

    rng = np.random.default_rng(0)
    model = build_model(model_cfg)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    size = model_cfg.image_size
    images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    targets = rng.normal(size=(batch, model_cfg.num_rows, model_cfg.dim)).astype(np.float32)
    for _ in range(2):
        model.train_on_batch(images, targets)
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(images, targets)
    return steps * batch / (time.perf_counter() - t0)


def demo_config(data_dir: str, flagfile: str = "configs/demo.flags") -> TrainConfig:
    """The demo recipe's config, read from its flag file, on `data_dir`."""
    fv = flags.FlagValues()
    config_flags.define_flags(TrainConfig, flag_values=fv)
    fv(["bench", f"--flagfile={flagfile}", f"--data_dir={data_dir}"])
    cfg = config_flags.config_from_flags(TrainConfig, fv)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dim=300))


def _train_batches(data_cfg: DataConfig, batch: int, image_size: int):
    """The training stream of `data_cfg` (with `cache_train_images`, `train_dataset` decodes
    the images before returning, so the decoding is not timed)."""
    from sdl_tf.labels.label_space import LabelSpace

    space = LabelSpace.load(data_cfg.data_dir)
    ds = data_lib.train_dataset(data_cfg, image_size=image_size,
                                seen_indices=space.seen_indices, num_labels=space.num_labels,
                                batch_size=batch, epoch=0)
    return iter(ds), space


def time_pipeline(data_cfg: DataConfig, batch: int, num_batches: int, image_size: int) -> float:
    """Images/s of the training input pipeline alone (after 3 warm-up batches)."""
    it, _ = _train_batches(data_cfg, batch, image_size)
    for _ in range(3):
        next(it)
    t0 = time.perf_counter()
    for _ in range(num_batches):
        next(it)
    return num_batches * batch / (time.perf_counter() - t0)


def time_fed_train_steps(cfg: TrainConfig, steps: int) -> float:
    """Images/s of `Trainer.train_step` fed by the real input pipeline (as in a run)."""
    it, space = _train_batches(cfg.data, cfg.batch_size, cfg.model.image_size)
    trainer = _task(cfg.model, cfg.batch_size, len(space.seen_indices), cfg.model.dim)
    for _ in range(3):
        trainer.train_step(next(it))["loss"].numpy()
    t0 = time.perf_counter()
    for _ in range(steps):
        out = trainer.train_step(next(it))
    out["loss"].numpy()
    return steps * cfg.batch_size / (time.perf_counter() - t0)


def main(argv):
    del argv
    rows = []
    demo_cfg = demo_config(FLAGS.data_dir)
    demo, demo_batch = demo_cfg.model, demo_cfg.batch_size
    demo_name = (f"{demo.backbone}, {demo.pooling} pooling, {demo.image_size}x{demo.image_size}, "
                 f"batch {demo_batch}, M={demo.num_rows}, d=300")
    bare_ips = time_bare_keras_steps(demo, demo_batch, FLAGS.demo_steps)
    demo_ips = time_train_steps(demo, demo_batch, FLAGS.demo_steps, dim=300)
    rows.append((f"train step, configs/demo.flags ({demo_name})", demo_ips))
    rows.append(("  bare Keras step of the same network (MSE on A, Adam)", bare_ips))
    big = {}
    for name, backbone, steps in (("ResNet50", "resnet50", FLAGS.resnet_steps),
                                  ("TResNet-M", "tresnet_m", FLAGS.tresnet_steps)):
        if steps:
            cfg = ModelConfig(backbone=backbone, weights="none", image_size=224, num_rows=7,
                              dim=300)
            big[name] = time_train_steps(cfg, 16, steps, num_seen=900, dim=300)
            rows.append((f"train step, {name} (224x224, batch 16, M=7, d=300)", big[name]))
    uncached = dataclasses.replace(demo_cfg, data=dataclasses.replace(
        demo_cfg.data, cache_train_images=False))
    size = demo.image_size
    pipe_ips = time_pipeline(demo_cfg.data, demo_batch, FLAGS.pipeline_batches, size)
    pipe_raw_ips = time_pipeline(uncached.data, demo_batch, FLAGS.pipeline_batches, size)
    fed_ips = time_fed_train_steps(demo_cfg, FLAGS.demo_steps)
    fed_raw_ips = time_fed_train_steps(uncached, FLAGS.demo_steps)
    rows.append(("input pipeline alone (demo.flags: flip, cached decoded images)", pipe_ips))
    rows.append(("  the same, decoding every JPEG (--cache_train_images=false)", pipe_raw_ips))
    rows.append(("train step fed by the input pipeline (demo.flags, as in a run)", fed_ips))
    rows.append(("  the same, decoding every JPEG (--cache_train_images=false)", fed_raw_ips))
    print(f"\n{'what':<70} images/s")
    for name, ips in rows:
        print(f"{name:<70} {ips:8.1f}")
    print(f"\ndemo train step time / bare Keras step time = {bare_ips / demo_ips:.2f}x")
    print(f"pipeline / demo train step = {pipe_ips / demo_ips:.2f}x "
          "(> 1: the input pipeline alone is not the bottleneck)")
    print(f"fed step time / in-memory step time = {demo_ips / fed_ips:.2f}x cached, "
          f"{demo_ips / fed_raw_ips:.2f}x decoding every JPEG (the pipeline's share of the "
          "CPU while it runs beside the step)")
    for name, ips in big.items():
        print(f"pipeline (decoding every JPEG) / {name} train step = {pipe_raw_ips / ips:.1f}x")
    print(f"CPU cores: {os.cpu_count()}")


if __name__ == "__main__":
    app.run(main)
