"""The training loop: a `strategy.run` custom loop with checkpoints, exact resume and TensorBoard.

The seam of TF Model Garden's `official/core/train_lib.py`: the task (`sdl_tf.training.task`)
owns the model, optimizer and loss and one step; this module runs it: the strategy, the run
directory (`sdl_tf.modeling.run_dir`), epochs, checkpoints and resume, summaries, per-epoch
validation (`sdl_tf.evaluation.validation`) and the final save.

Why a custom loop: Keras 3 `model.fit` breaks under `MultiWorkerMirroredStrategy`
(keras-team/keras#20585), and resume needs the data position, which `fit` does not restore.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time

import keras
import tensorflow as tf

from sdl_tf import config_flags, errors
from sdl_tf.config import TrainConfig
from sdl_tf.data import feature_cache
from sdl_tf.data import pipeline as data_lib
from sdl_tf.evaluation import validation
from sdl_tf.labels.label_space import LabelSpace
from sdl_tf.modeling import run_dir
from sdl_tf.training import task as task_lib
from sdl_tf.utils import atomic_io

# Settings a checkpoint depends on: a run resumes only with the same ones.
RESUME_KEYS = ("model", "batch_size", "reg_lambda", "use_sdw", "use_reg", "scoring",
               "loss_mode", "learning_rate", "weight_decay", "seed")


def log(msg: str) -> None:
    """Console message (stderr, so it does not interleave with the progress bar's stdout)."""
    print(f"[sdl_tf.train] {msg}", file=sys.stderr, flush=True)


def get_strategy(name: str = "default", tpu_address: str = "") -> tf.distribute.Strategy:
    """Returns the `tf.distribute` strategy for `--strategy`.

    Args:
        name: `default` (one device), `mirrored` (all local GPUs, or the logical CPUs),
            `multi_worker` (MultiWorkerMirroredStrategy; cluster from the TF_CONFIG env var),
            `tpu` (TPUStrategy; `tpu_address` or the environment's TPU).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        # Cross-device ops default to NCCL, which does not exist for CPUs.
        ops = None if gpus else tf.distribute.ReductionToOneDevice()
        return tf.distribute.MirroredStrategy(devices, cross_device_ops=ops)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise errors.ConfigError("--strategy=multi_worker needs the TF_CONFIG environment "
                                     "variable")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address or None)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise errors.ConfigError(f"unknown strategy {name!r}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes checkpoints, logs and the final model.

    Under MultiWorkerMirroredStrategy that is the `chief` task, or worker 0 when the cluster
    has no chief (the TF_CONFIG convention); every other strategy runs in one process.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    resolver = strategy.cluster_resolver
    if resolver.task_type in (None, "chief"):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def save_final_model(model: keras.Model, model_dir: str) -> str:
    """Saves `final.keras` atomically (Keras wants the suffix, so the temp name keeps it).

    Keras saves to local paths only; for another filesystem `atomic_save` saves to a local
    temporary file and copies it over."""
    path = run_dir.path(model_dir, run_dir.FINAL_MODEL_FILE)
    atomic_io.atomic_save(path, model.save, suffix=".keras")
    return path


def _check_compatible(model_dir: str, config: TrainConfig) -> None:
    """Refuses to resume a run whose model/data/loss differ (a checkpoint would not fit)."""
    previous = run_dir.read_config(model_dir)
    if previous is None:
        return
    old, new = previous.to_dict(), config.to_dict()
    diff = [k for k in RESUME_KEYS if old.get(k) != new.get(k)]
    if old["data"]["data_dir"] != new["data"]["data_dir"]:
        diff.append("data.data_dir")
    if diff:
        raise errors.ConfigError(
            f"{model_dir} holds a run with different settings ({', '.join(diff)}); use another "
            "--model_dir, or --overwrite to discard it"
        )


def _with_label_dim(config: TrainConfig, label_space: LabelSpace) -> TrainConfig:
    """`config` with `model.dim` = the label vectors' d, saying so when that changes it."""
    if config.model.dim == label_space.dim:
        return config
    log(f"model.dim: {config.model.dim} -> {label_space.dim} (the label space's vector dim)")
    return config.replace(model=dataclasses.replace(config.model, dim=label_space.dim))


def _steps_per_epoch(config: TrainConfig) -> int:
    """`config.steps_per_epoch`, else the training images (minus the val carve) // batch."""
    num_train = data_lib.count_examples(config.data.data_dir, config.data.train_split)
    if config.data.val_fraction > 0 and not data_lib.has_split(config.data.data_dir,
                                                               config.data.val_split):
        num_train = int(num_train * (1.0 - config.data.val_fraction))
    steps_per_epoch = config.steps_per_epoch or num_train // config.batch_size
    if steps_per_epoch < 1:
        raise errors.ConfigError(
            f"{num_train} training images < global batch size {config.batch_size}: "
            "lower --batch_size"
        )
    return steps_per_epoch


def train(config: TrainConfig, flags_text: str | None = None, progress: bool = True) -> dict:
    """Trains (or resumes, or recognises as finished) the run in `config.model_dir`.

    Args:
        config: the resolved run config.
        flags_text: resolved flags in flagfile format, written to `flags.txt` (default:
            `config_flags.flagfile_text(config)`).
        progress: show a console progress bar (chief only).

    Returns:
        A summary dict: `status` ("finished" or "already_finished"), `step`, `epochs`,
        `steps_per_epoch`, `resumed_from_step`, `last_loss`, `val` (last validation metrics,
        ZSL/GZSL mAP and F1@K, or None), `model_path`.
    """
    if not config.model_dir:
        raise errors.ConfigError("model_dir is required", errors.missing_model_hint("DIR"))
    data_lib.require_dataset(config.data.data_dir, [config.data.train_split])
    label_space = LabelSpace.load(config.data.data_dir)
    config = _with_label_dim(config, label_space)

    previous_policy = keras.mixed_precision.global_policy()
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        run = _Run(config, label_space, progress)
        return run.train(flags_text or config_flags.flagfile_text(config))
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


class _Run:
    """One call of `train`: the strategy, task, checkpoints and summary writers of a run."""

    def __init__(self, config: TrainConfig, label_space: LabelSpace, progress: bool):
        self.config = config
        self.label_space = label_space
        self.model_dir = config.model_dir
        self.strategy = get_strategy(config.strategy, config.tpu_address)
        self.chief = is_chief(self.strategy)
        self.progress = progress and self.chief
        if config.overwrite and self.chief and tf.io.gfile.isdir(self.model_dir):
            log(f"--overwrite: discarding the previous run in {self.model_dir}")
            run_dir.clear(self.model_dir)
        tf.io.gfile.makedirs(self.model_dir)
        _check_compatible(self.model_dir, config)
        self.steps_per_epoch = _steps_per_epoch(config)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.replicas = self.strategy.num_replicas_in_sync
        if config.batch_size % self.replicas:
            raise errors.ConfigError(f"batch_size {config.batch_size} is not divisible by "
                                     f"{self.replicas} replicas")
        self.task = task_lib.SDLTask(config, label_space.seen_vectors, self.strategy,
                                     self.total_steps)
        self.final_path = run_dir.path(self.model_dir, run_dir.FINAL_MODEL_FILE)
        self._make_checkpoint()
        self.writer = self.val_writer = tf.summary.create_noop_writer()

    def _make_checkpoint(self) -> None:
        self.epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.spe_var = tf.Variable(self.steps_per_epoch, dtype=tf.int64, trainable=False,
                                   name="steps_per_epoch")
        model = self.task.model
        # Keras seed-generator states (dropout masks) are not TF-trackable: save them
        # explicitly, else a resumed run would draw other dropout masks than an uninterrupted one.
        rng = tf.Module()
        rng.states = [v.value for v in model.variables if "seed_generator_state" in v.path]
        checkpoint = tf.train.Checkpoint(model=model, optimizer=self.task.optimizer,
                                         step=self.task.optimizer.iterations,
                                         epoch=self.epoch_var, steps_per_epoch=self.spe_var,
                                         rng=rng)
        self.ckpt_dir = run_dir.path(self.model_dir, run_dir.CHECKPOINT_DIR)
        if not self.chief:  # every worker must take part in saving; only the chief's is kept
            self.ckpt_dir = tempfile.mkdtemp(prefix="sdl_tf_worker_ckpt_")
        self.manager = tf.train.CheckpointManager(checkpoint, self.ckpt_dir,
                                                  max_to_keep=self.config.max_checkpoints)

    def _restore(self) -> int:
        """Restores the latest checkpoint, if any; returns the step to continue from."""
        latest = self.manager.latest_checkpoint
        if not latest:
            log(f"training {self.config.epochs} epochs x {self.steps_per_epoch} steps, global "
                f"batch {self.config.batch_size} on {self.replicas} replica(s); model dir "
                f"{self.model_dir}")
            return 0
        self.manager.checkpoint.restore(latest).assert_existing_objects_matched()
        if int(self.spe_var.numpy()) != self.steps_per_epoch:
            raise errors.ConfigError(
                f"{latest} was written with {int(self.spe_var.numpy())} steps per epoch, now "
                f"{self.steps_per_epoch} (training data or batch size changed); "
                "use --overwrite to start again"
            )
        return self.task.step

    def _result(self, status: str, step: int, resumed_from: int, last=None, val=None) -> dict:
        return {"status": status, "step": step, "epochs": self.config.epochs,
                "steps_per_epoch": self.steps_per_epoch, "resumed_from_step": resumed_from,
                "last_loss": (last or {}).get("loss"), "val": val, "model_path": self.final_path}

    def train(self, flags_text: str) -> dict:
        resumed_from = self._restore()
        if resumed_from >= self.total_steps and tf.io.gfile.exists(self.final_path):
            log(f"{self.model_dir} is already trained ({self.config.epochs} epochs, step "
                f"{resumed_from}); nothing to do. Use --overwrite to retrain or raise --epochs "
                "to continue.")
            return self._result("already_finished", resumed_from, resumed_from)
        if resumed_from:
            spe = self.steps_per_epoch
            log(f"resuming from {self.manager.latest_checkpoint}: step {resumed_from} "
                f"(epoch {resumed_from // spe + 1}, batch {resumed_from % spe} of {spe}), "
                f"lr {self.task.learning_rate():.3g}")
        if self.chief:
            self._write_run_files(flags_text, resumed_from)
        validator, inputs = self._prepare(resumed_from)
        step, last, val_metrics = resumed_from, {}, None
        for epoch in range(step // self.steps_per_epoch, self.config.epochs):
            step, last = self._run_epoch(epoch, step, inputs)
            if validator is not None:
                val_metrics = self._validate(validator, epoch, step)
        return self._finish(self._result("finished", step, resumed_from, last, val_metrics))

    def _write_run_files(self, flags_text: str, resumed_from: int) -> None:
        """config.json, flags.txt, the label space and the summary writers (chief only)."""
        run_dir.write_config(self.model_dir, self.config)
        run_dir.write_flags(self.model_dir, flags_text)
        self.label_space.save(self.model_dir)
        logs = run_dir.path(self.model_dir, run_dir.LOG_DIR)
        self.writer = tf.summary.create_file_writer(os.path.join(logs, "train"))
        self.val_writer = tf.summary.create_file_writer(os.path.join(logs, "val"))
        with self.writer.as_default():
            tf.summary.text("flags", "```\n" + flags_text + "\n```", step=resumed_from)

    def _prepare(self, resumed_from: int):
        """(the `Validator` or None, the inputs: cached features / decoded images / None)."""
        config, space = self.config, self.label_space
        source = validation.validation_source(config)
        if source is None:
            log("no validation split (no 'val' shards, val_fraction = 0): "
                "skipping per-epoch eval")
        features = val_arrays = decoded = None
        if config.cache_backbone_features and resumed_from < self.total_steps:
            features, val_arrays = feature_cache.run_features(
                self.task.feature_model, config, space.seen_indices, space.num_labels,
                (lambda: validation.validation_dataset(config, space, source))
                if source is not None else None)
        if config.data.cache_train_images and resumed_from < self.total_steps:
            t = time.perf_counter()
            decoded = data_lib.decode_train_images(config.data, config.model.image_size)
            log(f"decoded {len(decoded.keys)} training images once ({decoded.images.nbytes >> 20}"
                f" MiB, {time.perf_counter() - t:.1f} s)")
        validator = (validation.Validator(config, space, source, pictures=self.chief,
                                          features=val_arrays)
                     if source is not None else None)
        return validator, (features, decoded)

    def _dataset(self, epoch: int, skip: int, inputs):
        features, decoded = inputs
        args = (epoch, skip, self.steps_per_epoch, self.replicas)
        fn = (task_lib.feature_dataset_fn(self.config, features, *args) if features is not None
              else task_lib.dataset_fn(self.config, self.label_space, *args, decoded))
        return self.strategy.distribute_datasets_from_function(fn)

    def _run_epoch(self, epoch: int, step: int, inputs) -> tuple[int, dict]:
        """Trains epoch `epoch` from `step` on; returns the step and the last logged values."""
        config, spe = self.config, self.steps_per_epoch
        skip = step - epoch * spe
        dataset = self._dataset(epoch, skip, inputs)
        bar = None
        if self.progress:
            print(f"Epoch {epoch + 1}/{config.epochs}", flush=True)
            bar = keras.utils.Progbar(spe, stateful_metrics=["loss", "lr", "img/s"])
            bar.update(skip)
        clock, last = [time.perf_counter(), step], {}
        for batch in dataset:
            out = self.task.train_step(batch)
            step += 1
            if step % config.log_every_steps == 0 or step % spe == 0:
                last = self._log_step(out, step, clock, bar, epoch)
            # The epoch's last step is saved below: writing ckpt-<step> twice would rewrite
            # its files in place (and TF's ram:// filesystem appends instead of truncating).
            if (config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0
                    and step % spe):
                self.epoch_var.assign(epoch)
                self.manager.save(checkpoint_number=step)
        if step != (epoch + 1) * spe:
            raise RuntimeError(f"epoch {epoch + 1} ended at step {step}, expected "
                               f"{(epoch + 1) * spe} (input pipeline ran short)")
        self.epoch_var.assign(epoch + 1)
        self.manager.save(checkpoint_number=step)
        self.writer.flush()
        return step, last

    def _log_step(self, out: dict, step: int, clock: list, bar, epoch: int) -> dict:
        """Writes the step's loss terms, learning rate and images/s; updates the bar."""
        last = {k: float(v) for k, v in out.items()}
        now = time.perf_counter()
        ips = (step - clock[1]) * self.config.batch_size / max(now - clock[0], 1e-9)
        clock[:] = [now, step]
        lr = self.task.learning_rate()
        if not all(math.isfinite(v) for v in last.values()):
            raise FloatingPointError(f"non-finite loss at step {step}: {last}")
        with self.writer.as_default(step=step):
            tf.summary.scalar("loss/total", last["loss"])
            tf.summary.scalar("loss/rank", last["rank"])
            tf.summary.scalar("loss/reg", last["reg"])
            tf.summary.scalar("loss/sdw_mean", last["sdw"])
            tf.summary.scalar("learning_rate", lr)
            tf.summary.scalar("images_per_sec", ips)
        if bar is not None:
            bar.update(step - epoch * self.steps_per_epoch,
                       [("loss", last["loss"]), ("lr", lr), ("img/s", ips)])
        return last

    def _validate(self, validator: validation.Validator, epoch: int, step: int) -> dict:
        with self.val_writer.as_default(step=step):
            metrics = validator.run(self.task.model, self.task.forward)
        self.val_writer.flush()
        if self.chief:
            log(f"epoch {epoch + 1} validation: " +
                ", ".join(f"{k} {v:.3g}" for k, v in metrics.items()))
        return metrics

    def _finish(self, result: dict) -> dict:
        """Saves the final model and `train_result.json` (chief); returns `result`."""
        if self.chief:
            save_final_model(self.task.model, self.model_dir)
        else:
            shutil.rmtree(self.ckpt_dir, ignore_errors=True)
        self.writer.flush()
        if self.chief:
            atomic_io.atomic_write_text(run_dir.path(self.model_dir, run_dir.TRAIN_RESULT_FILE),
                                        json.dumps(result, indent=2) + "\n")
            log(f"done: step {result['step']}, final model {self.final_path}")
        return result
