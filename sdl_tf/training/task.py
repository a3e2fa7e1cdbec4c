"""The training task: model, optimizer and schedule, the live `SDLLoss`, the distributed step.

The seam of TF Model Garden's `official/core/base_task.py`: the task says *what* is trained
(the model, its optimizer and the loss, and one step of it); `sdl_tf.training.loop` says *how
long and where* (epochs, strategy, checkpoints, summaries).

Loss reduction: each replica computes the per-image SDL loss (eq. 5 before the 1/N) for its
slice of the global batch and divides the *sum* by the *global* batch size; the Keras optimizer
all-reduces (sums) the gradients across replicas, so the update equals the single-device update
on the whole global batch (the mean of eq. 5). Dividing by the replica count again would be wrong.

Recipe (paper section 4.1): AdamW (decoupled weight decay 3e-4), one-cycle cosine schedule with
maximum learning rate 1e-4, dropout 0.5, lambda 0.3. The authors' released COCO script differs
(docs/recipes.md); `weight_decay_mode="l2"` and `exclude_bias_norm_from_decay` reproduce its
Adam + L2 on all but 1-D parameters.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from sdl_tf.config import TrainConfig
from sdl_tf.data import feature_cache
from sdl_tf.data import pipeline as data_lib
from sdl_tf.modeling import model as model_lib
from sdl_tf.modeling.losses import SDLLoss

# The per-image terms of `SDLLoss.terms` logged next to the loss (TensorBoard `loss/*`).
LOGGED_TERMS = ("rank", "reg", "sdw")


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


def build_loss(config: TrainConfig, seen_vectors) -> SDLLoss:
    """The run's SDL loss (eqs. 1-5) over the seen labels, in the training targets' order."""
    return SDLLoss(np.asarray(seen_vectors, np.float32), reg_lambda=config.reg_lambda,
                   use_sdw=config.use_sdw, use_reg=config.use_reg, scoring=config.scoring,
                   mode=config.loss_mode)


def build_optimizer(config: TrainConfig, schedule, variables) -> tuple:
    """The optimizer (built for `variables`) and the variables given the L2 gradient term.

    `weight_decay_mode="decoupled"`: AdamW. `"l2"`: Adam, with 0.5 * wd * ||w||^2 added to the
    objective (`SDLTask`), which is torch.optim.Adam(weight_decay=wd)'s coupled L2.

    Returns:
        (optimizer, l2_variables: [] unless weight_decay_mode="l2" and weight_decay > 0).
    """
    # The authors' add_weight_decay (ZS_SDL helper_functions.py) skips every 1-D parameter
    # (biases, normalisation scales and offsets) and names ending in ".bias".
    excluded = [v for v in variables if config.exclude_bias_norm_from_decay
                and (len(v.shape) <= 1 or v.path.endswith("bias"))]
    excluded_ids = {id(v) for v in excluded}
    l2_variables = ([v for v in variables if id(v) not in excluded_ids]
                    if config.weight_decay_mode == "l2" and config.weight_decay else [])
    if config.weight_decay_mode == "decoupled":
        optimizer = keras.optimizers.AdamW(learning_rate=schedule,
                                           weight_decay=config.weight_decay)
        if excluded:  # must precede build()
            optimizer.exclude_from_weight_decay(var_list=excluded)
    else:
        # torch.optim.Adam(weight_decay=wd) adds wd * w to the gradient before the moment
        # estimates (coupled L2, normalised by Adam like any gradient); the same gradient comes
        # from adding 0.5 * wd * ||w||^2 to the loss (SDLTask._replica_step).
        optimizer = keras.optimizers.Adam(learning_rate=schedule)
    if config.mixed_precision:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    # Build the slots now so a checkpoint restores into existing variables.
    optimizer.build(variables)
    return optimizer, l2_variables


class SDLTask:
    """Model, optimizer, loss and the distributed train step for one strategy.

    Attributes:
        model: the SDL model (images uint8 -> matrices (B, M, d)).
        feature_model, forward: with `cache_backbone_features`, the backbone and the head the
            step runs on cached features (`model_lib.split_model`); else None and `model`.
        loss: the live `SDLLoss`; the step differentiates its "loss" and logs its other terms.
        schedule, optimizer: `OneCycleCosine` and the (AdamW / Adam) optimizer.
        train_step: `batch (images or features, targets) -> {"loss", "rank", "reg", "sdw"}`,
            each summed over the global batch / its size.

    Args:
        config: the run config (`config.model.dim` must equal the label-vector dimension).
        seen_vectors: (S, d) seen-label vectors, the order of the training targets.
        strategy: a `tf.distribute.Strategy`.
        total_steps: steps of the whole run (the LR schedule's length).
    """

    def __init__(self, config: TrainConfig, seen_vectors, strategy, total_steps: int):
        self.config = config
        self.strategy = strategy
        self.global_batch_size = config.batch_size
        self.loss = build_loss(config, seen_vectors)
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
            self.optimizer, self.l2_variables = build_optimizer(
                config, self.schedule, self.model.trainable_variables)
        # autograph=False: the step has no tensor-dependent Python control flow, and converting
        # the loss and Keras internals only slows tracing down.
        self._replica_step_fn = tf.function(self._replica_step, jit_compile=config.jit_compile,
                                            autograph=False)
        self.train_step = tf.function(self._distributed_step, autograph=False)

    def _objective(self, loss):
        """The loss plus the coupled L2 term of `weight_decay_mode="l2"` (if any)."""
        if not self.l2_variables:
            return loss
        # Replicas' gradients are summed: each adds 1/replicas of the L2 term.
        replicas = self.strategy.num_replicas_in_sync
        return loss + (0.5 * self.config.weight_decay / replicas) * tf.add_n(
            [tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in self.l2_variables])

    def _replica_step(self, images, targets):
        """One replica's share of a step. Returns per-replica *sums / global batch*."""
        gb = tf.cast(self.global_batch_size, tf.float32)
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            matrices = self.forward(images, training=True)
            # One evaluation of eqs. 1-5 gives both the loss to differentiate and the logged
            # terms (rank, reg, SDW): "loss" is what `self.loss` returns per image.
            terms = self.loss.terms(targets, matrices)
            loss = tf.reduce_sum(tf.cast(terms["loss"], tf.float32)) / gb  # eq. (5)
            scaled = self.optimizer.scale_loss(self._objective(loss))
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        out = {"loss": loss}
        for k in LOGGED_TERMS:
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


def dataset_fn(config: TrainConfig, label_space, epoch: int, skip_steps: int,
               steps_per_epoch: int, replicas: int, decoded=None):
    """`distribute_datasets_from_function`'s function: one epoch of training images from
    `skip_steps` on (`data_lib.train_dataset`; `decoded`: the images decoded once)."""
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


def feature_dataset_fn(config: TrainConfig, features, epoch: int, skip_steps: int,
                       steps_per_epoch: int, replicas: int):
    """As `dataset_fn`, for the cached backbone features (`feature_cache.feature_dataset`)."""
    def fn(ctx: tf.distribute.InputContext):
        return feature_cache.feature_dataset(
            features, global_batch_size=config.batch_size,
            per_replica_batch=ctx.get_per_replica_batch_size(config.batch_size),
            replicas_per_pipeline=replicas // ctx.num_input_pipelines,
            input_pipeline_id=ctx.input_pipeline_id, epoch=epoch, seed=config.seed,
            skip_steps=skip_steps, num_steps=steps_per_epoch)

    return fn
