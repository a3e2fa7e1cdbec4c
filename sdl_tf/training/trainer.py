"""Training: a `strategy.run` custom loop with checkpoints, exact resume and TensorBoard.

Why a custom loop: Keras 3 `model.fit` breaks under `MultiWorkerMirroredStrategy`
(keras-team/keras#20585), and resume needs the data position, which `fit` does not restore.

Loss reduction: each replica computes the per-image SDL loss (eq. 5 before the 1/N) for its
slice of the global batch and divides the *sum* by the *global* batch size; the Keras optimizer
all-reduces (sums) the gradients across replicas, so the update equals the single-device update
on the whole global batch (the mean of eq. 5). Dividing by the replica count again would be wrong.

Recipe (paper section 4.1): AdamW (decoupled weight decay 3e-4), one-cycle cosine schedule with
maximum learning rate 1e-4, dropout 0.5, lambda 0.3, ImageNet-style augmentation with cutout.
The authors' released COCO script differs (docs/recipes.md); `weight_decay_mode="l2"` and
`exclude_bias_norm_from_decay` reproduce its Adam + L2 on all but 1-D parameters.

Validation (each epoch, on the val split): ZSL/GZSL mAP and F1@K, the row usage of Figure 3
(`rows/*` scalars: which row of A wins each image's top-K tags), per-label AP (histograms and a
text table) and a Figure-3 grid image of the first 8 validation images.
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
import numpy as np
import tensorflow as tf

from sdl_tf.config import TrainConfig, save_config
from sdl_tf.data import feature_cache
from sdl_tf.data import pipeline as data_lib
from sdl_tf.modeling import model as model_lib
from sdl_tf.utils import atomic_io

CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"


def log(msg: str) -> None:
    """Console message (stderr, so it does not interleave with the progress bar's stdout)."""
    print(f"[sdl_tf.train] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- strategy


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
            raise ValueError("--strategy=multi_worker needs the TF_CONFIG environment variable")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address or None)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown strategy {name!r}")


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


# ----------------------------------------------------------------------------- schedule


@keras.saving.register_keras_serializable(package="sdl_tf")
class OneCycleCosine(keras.optimizers.schedules.LearningRateSchedule):
    """One-cycle learning rate with cosine annealing in both phases (paper ref. [45]).

    Same curve as PyTorch's `OneCycleLR(anneal_strategy="cos")`, which the authors used:
    from max_lr/div_factor up to max_lr over the first `warmup_steps`, then down to
    max_lr/(div_factor*final_div_factor) at `total_steps`.

    Args:
        max_lr: peak learning rate (1e-4 in the paper).
        total_steps: steps of the whole run.
        warmup_fraction: fraction of steps rising (PyTorch's pct_start). The paper gives
            none; the authors' COCO script uses 0.1 (ZS_SDL train.py:136, docs/recipes.md).
        div_factor, final_div_factor: as in PyTorch.
    """

    def __init__(self, max_lr, total_steps, warmup_fraction=0.2, div_factor=25.0,
                 final_div_factor=1e4):
        self.max_lr = float(max_lr)
        self.total_steps = int(total_steps)
        self.warmup_fraction = float(warmup_fraction)
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)

    def __call__(self, step):
        initial = self.max_lr / self.div_factor
        final = initial / self.final_div_factor
        step = keras.ops.cast(step, "float32")
        # PyTorch: phase ends at pct_start*total - 1 and total - 1 (step counts from 0).
        up_end = max(self.warmup_fraction * self.total_steps - 1.0, 1.0)
        down_end = max(float(self.total_steps - 1), up_end + 1.0)

        def cos_anneal(start, end, pct):
            return end + (start - end) / 2.0 * (1.0 + keras.ops.cos(math.pi * pct))

        up = cos_anneal(initial, self.max_lr, keras.ops.clip(step / up_end, 0.0, 1.0))
        down = cos_anneal(self.max_lr, final,
                          keras.ops.clip((step - up_end) / (down_end - up_end), 0.0, 1.0))
        return keras.ops.where(step <= up_end, up, down)

    def get_config(self):
        return {
            "max_lr": self.max_lr,
            "total_steps": self.total_steps,
            "warmup_fraction": self.warmup_fraction,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
        }


# ----------------------------------------------------------------------------- trainer


class Trainer:
    """Model, optimizer, loss and the distributed train step for one strategy.

    Args:
        config: the run config (`config.model.dim` must equal the label-vector dimension).
        seen_vectors: (S, d) seen-label vectors, the order of the training targets.
        strategy: a `tf.distribute.Strategy`.
        total_steps: steps of the whole run (the LR schedule's length).
    """

    def __init__(self, config: TrainConfig, seen_vectors, strategy, total_steps: int):
        from sdl_tf.modeling.losses import sdl_loss_terms

        self.config = config
        self.strategy = strategy
        self.global_batch_size = config.batch_size
        self._terms_fn = sdl_loss_terms
        self.seen_vectors = np.asarray(seen_vectors, np.float32)
        self.schedule = OneCycleCosine(config.learning_rate, total_steps, config.warmup_fraction,
                                       config.div_factor, config.final_div_factor)
        with strategy.scope():
            keras.utils.set_random_seed(config.seed)
            self.model = model_lib.build_model(config.model)
            # What a step runs: the whole model on images, or only its head on cached
            # backbone features (the same head variables either way).
            self.feature_model = None
            self.forward = self.model
            if config.cache_backbone_features:
                self.feature_model, self.forward = model_lib.split_model(self.model)
            variables = self.model.trainable_variables
            # The authors' add_weight_decay (ZS_SDL helper_functions.py) skips every 1-D
            # parameter (biases, normalisation scales and offsets) and names ending in ".bias".
            excluded = [v for v in variables if config.exclude_bias_norm_from_decay
                        and (len(v.shape) <= 1 or v.path.endswith("bias"))]
            excluded_ids = {id(v) for v in excluded}
            # Variables given the L2 gradient term (weight_decay_mode="l2"), else none.
            self.l2_variables = ([v for v in variables if id(v) not in excluded_ids]
                                 if config.weight_decay_mode == "l2" and config.weight_decay
                                 else [])
            if config.weight_decay_mode == "decoupled":
                optimizer = keras.optimizers.AdamW(learning_rate=self.schedule,
                                                   weight_decay=config.weight_decay)
                if excluded:  # must precede build()
                    optimizer.exclude_from_weight_decay(var_list=excluded)
            else:
                # torch.optim.Adam(weight_decay=wd) adds wd * w to the gradient before the
                # moment estimates (coupled L2, normalised by Adam like any gradient); the same
                # gradient comes from adding 0.5 * wd * ||w||^2 to the loss (_replica_step).
                optimizer = keras.optimizers.Adam(learning_rate=self.schedule)
            if config.mixed_precision:
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            self.optimizer = optimizer
            # Build the slots now so a checkpoint restores into existing variables.
            self.optimizer.build(self.model.trainable_variables)
        # The run's SDL loss settings (eqs. 1-5). The step evaluates `sdl_loss_terms`, whose
        # "loss" is exactly what `SDLLoss.call` returns, to log the terms from the same pass.
        self.loss_settings = dict(reg_lambda=config.reg_lambda, use_sdw=config.use_sdw,
                                  use_reg=config.use_reg, scoring=config.scoring,
                                  mode=config.loss_mode)
        # autograph=False: the step has no tensor-dependent Python control flow, and converting
        # the loss and Keras internals only slows tracing down.
        replica_step = tf.function(self._replica_step, jit_compile=config.jit_compile,
                                   autograph=False)
        self._replica_step_fn = replica_step
        self.train_step = tf.function(self._distributed_step, autograph=False)

    def _replica_step(self, images, targets):
        """One replica's share of a step. Returns per-replica *sums / global batch*."""
        gb = tf.cast(self.global_batch_size, tf.float32)
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            matrices = self.forward(images, training=True)
            # One evaluation of eqs. 1-5 gives both the loss to differentiate and the logged
            # terms (rank, reg, SDW); "loss" is exactly what SDLLoss.call returns.
            terms = self._terms_fn(targets, matrices, self.seen_vectors, **self.loss_settings)
            per_image = terms["loss"]  # (b,) eq. (5) before the 1/N
            loss = tf.reduce_sum(tf.cast(per_image, tf.float32)) / gb
            objective = loss
            if self.l2_variables:
                # Replicas' gradients are summed: each adds 1/replicas of the L2 term.
                replicas = self.strategy.num_replicas_in_sync
                objective = loss + (0.5 * self.config.weight_decay / replicas) * tf.add_n(
                    [tf.reduce_sum(tf.square(tf.cast(v, tf.float32)))
                     for v in self.l2_variables])
            scaled = self.optimizer.scale_loss(objective)
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        out = {"loss": loss}
        for k in ("rank", "reg", "sdw"):
            out[k] = tf.reduce_sum(tf.cast(terms[k], tf.float32)) / gb
        return out

    def _distributed_step(self, batch):
        images, targets = batch
        per_replica = self.strategy.run(self._replica_step_fn, args=(images, targets))
        return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in per_replica.items()}

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def learning_rate(self) -> float:
        return float(self.schedule(self.optimizer.iterations))


# ----------------------------------------------------------------------------- run dir


def _clear_run(model_dir: str) -> None:
    for name in (CHECKPOINT_DIR, LOG_DIR, "eval"):
        if tf.io.gfile.isdir(os.path.join(model_dir, name)):
            tf.io.gfile.rmtree(os.path.join(model_dir, name))
    for name in (model_lib.FINAL_MODEL_NAME, "config.json", "flags.txt", "train_result.json"):
        path = os.path.join(model_dir, name)
        if tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)


def _check_compatible(model_dir: str, config: TrainConfig) -> None:
    """Refuses to resume a run whose model/data/loss differ (a checkpoint would not fit)."""
    path = os.path.join(model_dir, "config.json")
    if not tf.io.gfile.exists(path):
        return
    with tf.io.gfile.GFile(path) as f:
        old = json.load(f)
    new = config.to_dict()
    keys = ("model", "batch_size", "reg_lambda", "use_sdw", "use_reg", "scoring", "loss_mode",
            "learning_rate", "weight_decay", "seed")
    diff = [k for k in keys if old.get(k) != new.get(k)]
    if old.get("data", {}).get("data_dir") != new["data"]["data_dir"]:
        diff.append("data.data_dir")
    if diff:
        raise ValueError(
            f"{model_dir} holds a run with different settings ({', '.join(diff)}); use another "
            "--model_dir, or --overwrite to discard it"
        )


def config_to_flags(config: TrainConfig) -> str:
    """The config as flagfile lines (used when the caller has no absl flags to record)."""
    lines = []
    for key, value in config.to_dict().items():
        if isinstance(value, dict):
            lines += [f"--{k}={_flag_value(v)}" for k, v in value.items()]
        else:
            lines.append(f"--{key}={_flag_value(value)}")
    return "\n".join(lines) + "\n"


def _flag_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return str(v)


def save_final_model(model: keras.Model, model_dir: str) -> str:
    """Saves `final.keras` atomically (Keras wants the suffix, so the temp name keeps it).

    Keras saves to local paths only; for another filesystem `atomic_save` saves to a local
    temporary file and copies it over."""
    path = os.path.join(model_dir, model_lib.FINAL_MODEL_NAME)
    atomic_io.atomic_save(path, model.save, suffix=".keras")
    return path


# ----------------------------------------------------------------------------- train


def train(config: TrainConfig, flags_text: str | None = None, progress: bool = True) -> dict:
    """Trains (or resumes, or recognises as finished) the run in `config.model_dir`.

    Args:
        config: the resolved run config.
        flags_text: resolved flags in flagfile format, written to `flags.txt` (default:
            generated from `config`).
        progress: show a console progress bar (chief only).

    Returns:
        A summary dict: `status` ("finished" or "already_finished"), `step`, `epochs`,
        `steps_per_epoch`, `resumed_from_step`, `last_loss`, `val` (last validation metrics,
        ZSL/GZSL mAP and F1@K, or None), `model_path`.
    """
    from sdl_tf.labels.label_space import LabelSpace

    if not config.model_dir:
        raise ValueError("model_dir is required")
    data_lib.require_dataset(config.data.data_dir, [config.data.train_split])
    label_space = LabelSpace.load(config.data.data_dir)
    if config.model.dim != label_space.dim:
        log(f"model dim set to the label vectors' d = {label_space.dim}")
        config = config.replace(model=dataclasses.replace(config.model, dim=label_space.dim))

    previous_policy = keras.mixed_precision.global_policy()
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        return _train(config, label_space, flags_text, progress)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _train(config: TrainConfig, label_space, flags_text, progress) -> dict:
    strategy = get_strategy(config.strategy, config.tpu_address)
    chief = is_chief(strategy)
    model_dir = config.model_dir
    final_path = os.path.join(model_dir, model_lib.FINAL_MODEL_NAME)
    if config.overwrite and chief and tf.io.gfile.isdir(model_dir):
        log(f"--overwrite: discarding the previous run in {model_dir}")
        _clear_run(model_dir)
    tf.io.gfile.makedirs(model_dir)
    _check_compatible(model_dir, config)

    num_train = data_lib.count_examples(config.data.data_dir, config.data.train_split)
    if config.data.val_fraction > 0 and not data_lib.has_split(config.data.data_dir,
                                                               config.data.val_split):
        num_train = int(num_train * (1.0 - config.data.val_fraction))
    steps_per_epoch = config.steps_per_epoch or num_train // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(
            f"{num_train} training images < global batch size {config.batch_size}: "
            "lower --batch_size"
        )
    total_steps = steps_per_epoch * config.epochs
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by {replicas} replicas")

    trainer = Trainer(config, label_space.seen_vectors, strategy, total_steps)
    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    spe_var = tf.Variable(steps_per_epoch, dtype=tf.int64, trainable=False,
                          name="steps_per_epoch")
    # Keras seed-generator states (dropout masks) are not TF-trackable: save them explicitly,
    # else a resumed run would draw different dropout masks than the uninterrupted one.
    rng = tf.Module()
    rng.states = [v.value for v in trainer.model.variables if "seed_generator_state" in v.path]
    checkpoint = tf.train.Checkpoint(model=trainer.model, optimizer=trainer.optimizer,
                                     step=trainer.optimizer.iterations, epoch=epoch_var,
                                     steps_per_epoch=spe_var, rng=rng)
    ckpt_dir = os.path.join(model_dir, CHECKPOINT_DIR)
    if not chief:  # every worker must take part in saving; only the chief's copy is kept
        ckpt_dir = tempfile.mkdtemp(prefix="sdl_tf_worker_ckpt_")
    manager = tf.train.CheckpointManager(checkpoint, ckpt_dir, max_to_keep=config.max_checkpoints)

    resumed_from = 0
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        if int(spe_var.numpy()) != steps_per_epoch:
            raise ValueError(
                f"{manager.latest_checkpoint} was written with {int(spe_var.numpy())} steps per "
                f"epoch, now {steps_per_epoch} (training data or batch size changed); "
                "use --overwrite to start again"
            )
        resumed_from = trainer.step
        if resumed_from >= total_steps and tf.io.gfile.exists(final_path):
            log(f"{model_dir} is already trained ({config.epochs} epochs, step {resumed_from}); "
                "nothing to do. Use --overwrite to retrain or raise --epochs to continue.")
            return {"status": "already_finished", "step": resumed_from,
                    "epochs": config.epochs, "steps_per_epoch": steps_per_epoch,
                    "resumed_from_step": resumed_from, "last_loss": None, "val": None,
                    "model_path": final_path}
        log(f"resuming from {manager.latest_checkpoint}: step {resumed_from} "
            f"(epoch {resumed_from // steps_per_epoch + 1}, "
            f"batch {resumed_from % steps_per_epoch} of {steps_per_epoch}), "
            f"lr {trainer.learning_rate():.3g}")
    else:
        log(f"training {config.epochs} epochs x {steps_per_epoch} steps, global batch "
            f"{config.batch_size} on {replicas} replica(s); model dir {model_dir}")

    if chief:
        save_config(config, os.path.join(model_dir, "config.json"))
        atomic_io.atomic_write_text(os.path.join(model_dir, "flags.txt"),
                                    flags_text or config_to_flags(config))
        label_space.save(model_dir)
        writer = tf.summary.create_file_writer(os.path.join(model_dir, LOG_DIR, "train"))
        val_writer = tf.summary.create_file_writer(os.path.join(model_dir, LOG_DIR, "val"))
        with writer.as_default():
            tf.summary.text("flags", "```\n" + (flags_text or config_to_flags(config)) + "\n```",
                            step=resumed_from)
    else:
        writer = val_writer = tf.summary.create_noop_writer()

    val_source = _validation_source(config)
    if val_source is None:
        log("no validation split (no 'val' shards, val_fraction = 0): skipping per-epoch eval")
    # The Figure-3 grid's images: read once, a tiny forward pass per epoch (chief only).
    fig3 = (figure3_images(config, val_source, label_space.num_labels)
            if chief and val_source is not None else None)

    decoded = features = val_features = None
    if config.cache_backbone_features and resumed_from < total_steps:
        features, val_arrays = feature_cache.run_features(
            trainer.feature_model, config, label_space.seen_indices, label_space.num_labels,
            (lambda: validation_dataset(config, label_space, val_source))
            if val_source is not None else None)
        if val_arrays is not None:
            val_features = feature_cache.features_eval_dataset(*val_arrays,
                                                               config.eval_batch_size)
    if config.data.cache_train_images and resumed_from < total_steps:
        t = time.perf_counter()
        decoded = data_lib.decode_train_images(config.data, config.model.image_size)
        log(f"decoded {len(decoded.keys)} training images once ({decoded.images.nbytes >> 20} "
            f"MiB, {time.perf_counter() - t:.1f} s)")

    last = {}
    val_metrics = None
    step = resumed_from
    for epoch in range(step // steps_per_epoch, config.epochs):
        skip = step - epoch * steps_per_epoch
        if features is not None:
            fn = _feature_dataset_fn(config, features, epoch, skip, steps_per_epoch, replicas)
        else:
            fn = _dataset_fn(config, label_space, epoch, skip, steps_per_epoch, replicas, decoded)
        dist_ds = strategy.distribute_datasets_from_function(fn)
        bar = None
        if chief and progress:
            print(f"Epoch {epoch + 1}/{config.epochs}", flush=True)
            bar = keras.utils.Progbar(steps_per_epoch, stateful_metrics=["loss", "lr", "img/s"])
            bar.update(skip)
        t0, n0 = time.perf_counter(), step
        for batch in dist_ds:
            out = trainer.train_step(batch)
            step += 1
            if step % config.log_every_steps == 0 or step % steps_per_epoch == 0:
                last = {k: float(v) for k, v in out.items()}
                now = time.perf_counter()
                ips = (step - n0) * config.batch_size / max(now - t0, 1e-9)
                t0, n0 = now, step
                lr = trainer.learning_rate()
                if not all(math.isfinite(v) for v in last.values()):
                    raise FloatingPointError(f"non-finite loss at step {step}: {last}")
                with writer.as_default(step=step):
                    tf.summary.scalar("loss/total", last["loss"])
                    tf.summary.scalar("loss/rank", last["rank"])
                    tf.summary.scalar("loss/reg", last["reg"])
                    tf.summary.scalar("loss/sdw_mean", last["sdw"])
                    tf.summary.scalar("learning_rate", lr)
                    tf.summary.scalar("images_per_sec", ips)
                if bar is not None:
                    bar.update(step - epoch * steps_per_epoch,
                               [("loss", last["loss"]), ("lr", lr), ("img/s", ips)])
            # The epoch's last step is saved below: writing ckpt-<step> twice would rewrite
            # its files in place (and TF's ram:// filesystem appends instead of truncating).
            if (config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0
                    and step % steps_per_epoch):
                epoch_var.assign(epoch)
                manager.save(checkpoint_number=step)
        if step != (epoch + 1) * steps_per_epoch:
            raise RuntimeError(f"epoch {epoch + 1} ended at step {step}, expected "
                               f"{(epoch + 1) * steps_per_epoch} (input pipeline ran short)")
        epoch_var.assign(epoch + 1)
        manager.save(checkpoint_number=step)
        writer.flush()
        if val_source is not None:
            if val_features is not None:  # the head on the cached features
                val_result = validation_result(trainer.forward, config, label_space, val_source,
                                               val_features)
            else:
                val_result = validation_result(trainer.model, config, label_space, val_source)
            val_metrics = validation_scalars(val_result, config.eval_ks)
            with val_writer.as_default(step=step):
                for key, value in val_metrics.items():
                    tf.summary.scalar(key, value)
                if chief:
                    grid = (figure3_grid(trainer.model, fig3[0], fig3[2], label_space,
                                         config.scoring) if fig3 is not None else None)
                    write_validation_pictures(val_result, label_space, grid)
            val_writer.flush()
            if chief:
                log(f"epoch {epoch + 1} validation: " +
                    ", ".join(f"{k} {v:.3g}" for k, v in val_metrics.items()))

    if chief:
        save_final_model(trainer.model, model_dir)
    else:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    writer.flush()
    result = {"status": "finished", "step": step, "epochs": config.epochs,
              "steps_per_epoch": steps_per_epoch, "resumed_from_step": resumed_from,
              "last_loss": last.get("loss"), "val": val_metrics, "model_path": final_path}
    if chief:
        atomic_io.atomic_write_text(os.path.join(model_dir, "train_result.json"),
                    json.dumps(result, indent=2) + "\n")
        log(f"done: step {step}, final model {final_path}")
    return result


def _dataset_fn(config, label_space, epoch, skip_steps, steps_per_epoch, replicas, decoded=None):
    def fn(ctx: tf.distribute.InputContext):
        # Each input pipeline (worker) feeds replicas_per_pipeline replicas per step, one
        # per-replica batch each, so it emits that many batches per step.
        per_pipeline = replicas // ctx.num_input_pipelines
        return data_lib.train_dataset(
            config.data,
            image_size=config.model.image_size,
            seen_indices=label_space.seen_indices,
            num_labels=label_space.num_labels,
            batch_size=ctx.get_per_replica_batch_size(config.batch_size),
            epoch=epoch,
            seed=config.seed,
            skip_batches=skip_steps * per_pipeline,
            num_batches=steps_per_epoch * per_pipeline,
            num_input_pipelines=ctx.num_input_pipelines,
            input_pipeline_id=ctx.input_pipeline_id,
            decoded=decoded,
        )

    return fn


def _feature_dataset_fn(config, features, epoch, skip_steps, steps_per_epoch, replicas):
    def fn(ctx: tf.distribute.InputContext):
        return feature_cache.feature_dataset(
            features, global_batch_size=config.batch_size,
            per_replica_batch=ctx.get_per_replica_batch_size(config.batch_size),
            replicas_per_pipeline=replicas // ctx.num_input_pipelines,
            input_pipeline_id=ctx.input_pipeline_id, epoch=epoch, seed=config.seed,
            skip_steps=skip_steps, num_steps=steps_per_epoch)

    return fn


def _validation_source(config: TrainConfig):
    """("split", name) for val shards, ("carve", None) for a hashed train part, or None."""
    if data_lib.has_split(config.data.data_dir, config.data.val_split):
        return ("split", config.data.val_split)
    if config.data.val_fraction > 0:
        return ("carve", None)
    return None


def validation_dataset(config: TrainConfig, label_space, source) -> tf.data.Dataset:
    """The validation images (never the test split): (images uint8, labels (B, C)) batches."""
    kind, split = source
    return data_lib.eval_dataset(
        config.data, split or config.data.train_split, image_size=config.model.image_size,
        num_labels=label_space.num_labels, batch_size=config.eval_batch_size,
        max_images=config.max_eval_images, carve_from_train=(kind == "carve"),
    )


def validation_result(model, config: TrainConfig, label_space, source, dataset=None) -> dict:
    """`sdl_tf.evaluation.evaluator.predict_and_evaluate` on the validation images (never the test
    split): ZSL/GZSL metrics with per-label AP, and the row usage at K = max(eval_ks).

    `dataset` replaces the validation images, e.g. by their cached backbone features
    (`feature_cache.eval_features`) for the model's head."""
    from sdl_tf.evaluation.evaluator import predict_and_evaluate

    ds = dataset if dataset is not None else validation_dataset(config, label_space, source)
    return predict_and_evaluate(model, ds, label_space, ks=config.eval_ks,
                                scoring=config.scoring)


def validation_scalars(result: dict, eval_ks) -> dict[str, float]:
    """The per-epoch scalars of a `validation_result`: `zsl|gzsl/mAP`, `zsl|gzsl/F1@K`, and the
    row usage (Figure 3 made measurable): `rows/share_<m>` (m = 1..M, as Figure 3 numbers the
    rows), `rows/entropy` (nats), `rows/mean_image_entropy` and `rows/mean_cosine` (M > 1)."""
    out = {}
    for task in ("zsl", "gzsl"):
        r = result[task]
        out[f"{task}/mAP"] = float(r["mAP"])
        for k in eval_ks:
            out[f"{task}/F1@{k}"] = float(r[f"F1@{k}"])
    usage = result.get("row_usage")
    if usage and usage["num_images"]:
        for m, share in enumerate(usage["share"]):
            out[f"rows/share_{m + 1}"] = share
        out["rows/entropy"] = usage["entropy"]
        out["rows/mean_image_entropy"] = usage["mean_image_entropy"]
        if usage["mean_cosine"] is not None:
            out["rows/mean_cosine"] = usage["mean_cosine"]
    return out


def validate(model, config: TrainConfig, label_space, source) -> dict[str, float]:
    """ZSL/GZSL mAP and F1@K and the row-usage scalars on the validation images."""
    return validation_scalars(validation_result(model, config, label_space, source),
                              config.eval_ks)


# Figure 3 (section 4.5) shows the top-10 tags of each image; 8 images keep the extra forward
# pass and the PNG small.
FIGURE3_IMAGES = 8
FIGURE3_TOP_K = 10


def figure3_images(config: TrainConfig, source, num_labels: int,
                   num_images: int = FIGURE3_IMAGES):
    """The first `num_images` validation images, read once per run for the per-epoch grid.

    Returns:
        (images uint8 (n, H, W, 3), labels float32 (n, C) multi-hot, ids: list of n str).
    """
    kind, split = source
    ds = data_lib.eval_dataset(
        config.data, split or config.data.train_split, image_size=config.model.image_size,
        num_labels=num_labels, batch_size=num_images, max_images=num_images,
        carve_from_train=(kind == "carve"), with_ids=True,
    )
    for images, labels, ids in ds.take(1):
        return images.numpy(), labels.numpy(), [i.decode("utf-8", "replace") for i in
                                                ids.numpy()]
    raise ValueError("the validation split yielded no images")


def figure3_grid(model, images, ids, label_space, scoring: str = "max",
                 top_k: int = FIGURE3_TOP_K, thumb: int = 128) -> np.ndarray:
    """The Figure-3 grid of a few images: each image's top-K tags (all labels, GZSL ranking),
    each coloured by and prefixed with the row of A that wins it (arg-max of eq. 1); `*` marks
    unseen labels.

    Args:
        model: the SDL model (uint8 (n, H, W, 3) -> (n, M, d)).
        images: uint8 (n, H, W, 3); ids: n captions.
        label_space: the run's `LabelSpace`.

    Returns:
        uint8 (height, width, 3) RGB grid (`sdl_tf.evaluation.report.grid_image`).
    """
    from sdl_tf.evaluation import report
    from sdl_tf.evaluation.evaluator import _predict_fn
    from sdl_tf.modeling.scoring import numpy_scores_and_rows

    matrices = _predict_fn(model)(tf.constant(images)).numpy().astype(np.float32)  # (n, M, d)
    # (n, C) scores (eq. 1) and winning rows; n is small.
    scores, rows = numpy_scores_and_rows(matrices, label_space.vectors, scoring)
    no_extra = np.zeros(label_space.num_labels, bool)
    items = [report.TaggedImage(image_id, "", report.top_tags(
        scores[i], rows[i], label_space.names, label_space.unseen, no_extra, top_k))
        for i, image_id in enumerate(ids)]
    return report.grid_image(items, thumb=thumb, columns=4, images=list(images))


def per_label_ap_table(result: dict, label_space, max_rows: int = 200) -> str:
    """Markdown table of the validation AP of each label (percent), best GZSL AP first; seen
    and unseen marked. With more than `max_rows` labels, the best and worst halves are shown."""
    # per_label_ap is in [0, 1]; percent like the mAP scalars.
    zsl = 100.0 * np.asarray(result["zsl"]["per_label_ap"], np.float64)
    gzsl = 100.0 * np.asarray(result["gzsl"]["per_label_ap"], np.float64)
    order = np.argsort(-np.nan_to_num(gzsl, nan=-1.0), kind="stable")
    fmt = lambda v: "-" if np.isnan(v) else f"{v:.1f}"  # noqa: E731
    lines = ["| label | set | GZSL AP | ZSL AP |", "|---|---|---|---|"]
    shown = order if len(order) <= max_rows else np.concatenate(
        [order[: max_rows // 2], order[-(max_rows // 2):]])
    for n, c in enumerate(shown):
        if len(order) > max_rows and n == max_rows // 2:
            lines.append(f"| ... {len(order) - max_rows} labels ... | | | |")
        lines.append(f"| {label_space.names[c]} | {'unseen' if label_space.unseen[c] else 'seen'}"
                     f" | {fmt(gzsl[c])} | {fmt(zsl[c])} |")
    return "\n".join(lines)


def write_validation_pictures(result: dict, label_space, grid: np.ndarray | None) -> None:
    """Writes to the default summary writer: the per-label AP histograms in percent
    (`per_label_ap/gzsl`, `per_label_ap/zsl_unseen`), the per-label AP table (`per_label_ap`,
    text) and the Figure-3 grid image (`figure3_grid`) if given."""
    for task, name in (("gzsl", "per_label_ap/gzsl"), ("zsl", "per_label_ap/zsl_unseen")):
        ap = 100.0 * np.asarray(result[task]["per_label_ap"], np.float64)  # percent
        ap = ap[np.isfinite(ap)]  # labels without a positive have no AP
        if ap.size:
            tf.summary.histogram(name, ap)
    tf.summary.text("per_label_ap", per_label_ap_table(result, label_space))
    if grid is not None:
        tf.summary.image("figure3_grid", grid[None], max_outputs=1)
