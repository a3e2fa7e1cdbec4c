r"""Trains SDL: `python -m sdl_tf.train --flagfile=configs/coco.flags [--flag=value ...]`.

Rerunning the same command resumes from the last checkpoint in --model_dir (mid-epoch too); a
finished run says so and exits unless --overwrite or a larger --epochs is given.
"""

from __future__ import annotations

from absl import flags

from sdl_tf.config import DataConfig, ModelConfig, TrainConfig

_D, _M, _T = DataConfig(), ModelConfig(), TrainConfig()


_OWN_FLAGS: list[str] = []


def define_flags() -> None:
    """Defines the training flags (entry point only; library code never reads FLAGS)."""
    f = flags
    before = set(flags.FLAGS)
    # Data.
    f.DEFINE_string("data_dir", None, "Prepared dataset directory (data_prep output).")
    f.DEFINE_string("train_split", _D.train_split, "Training shard split.")
    f.DEFINE_string("val_split", _D.val_split, "Validation shard split (per-epoch eval).")
    f.DEFINE_float("val_fraction", _D.val_fraction,
                   "Without val shards: fraction of training images held out for validation.")
    f.DEFINE_integer("shuffle_buffer", _D.shuffle_buffer, "Example shuffle buffer.")
    f.DEFINE_bool("augment", _D.augment, "Random resized crop, flip and colour augmentation.")
    f.DEFINE_enum("augment_mode", _D.augment_mode, ["imagenet", "flip", "resize"],
                  "imagenet: crop, flip, colour, cutout (paper); flip: flip only (label-safe); "
                  "resize: whole-image resize + cutout (authors' COCO script).")
    f.DEFINE_float("cutout", _D.cutout, "Cutout square side as a fraction of the image (0=off).")
    f.DEFINE_float("min_crop_area", _D.min_crop_area, "Smallest random-resized-crop area.")
    f.DEFINE_bool("rand_augment", _D.rand_augment,
                  "Also apply RandAugment (2 ops) to training images (authors' COCO script).")
    f.DEFINE_float("rand_augment_factor", _D.rand_augment_factor,
                   "RandAugment magnitude in [0, 1] (keras.layers.RandAugment factor).")
    f.DEFINE_integer("num_parallel_calls", _D.num_parallel_calls, "tf.data parallelism (-1=auto).")
    # Model.
    f.DEFINE_string("backbone", _M.backbone,
                    "resnet50 | resnet101 | mobilenet_v3_small | efficientnet_b0 | tiny | "
                    "small_cnn | hub:<handle-or-path>.")
    f.DEFINE_string("weights", _M.weights, "Backbone weights: imagenet | none | <path>.")
    f.DEFINE_integer("image_size", _M.image_size, "Input image side.")
    f.DEFINE_integer("num_rows", _M.num_rows, "M, principal directions per image.")
    f.DEFINE_float("dropout", _M.dropout, "Dropout before the projection.")
    f.DEFINE_bool("trainable_backbone", _M.trainable_backbone, "Fine-tune the backbone.")
    # Training.
    f.DEFINE_string("model_dir", None, "Output directory (checkpoints, logs, final.keras).")
    f.DEFINE_integer("epochs", _T.epochs, "Epochs.")
    f.DEFINE_integer("batch_size", _T.batch_size, "Global batch size (all replicas).")
    f.DEFINE_integer("steps_per_epoch", _T.steps_per_epoch, "Steps per epoch (0 = one pass).")
    f.DEFINE_float("learning_rate", _T.learning_rate, "One-cycle maximum learning rate.")
    f.DEFINE_float("weight_decay", _T.weight_decay, "Weight decay coefficient.")
    f.DEFINE_enum("weight_decay_mode", _T.weight_decay_mode, ["decoupled", "l2"],
                  "decoupled: AdamW (paper); l2: Adam + L2 gradient term (authors' script).")
    f.DEFINE_bool("exclude_bias_norm_from_decay", _T.exclude_bias_norm_from_decay,
                  "No weight decay on biases and normalisation parameters (1-D variables).")
    f.DEFINE_float("warmup_fraction", _T.warmup_fraction, "One-cycle rising fraction.")
    f.DEFINE_float("div_factor", _T.div_factor, "One-cycle initial lr = max / div_factor.")
    f.DEFINE_float("final_div_factor", _T.final_div_factor, "Final lr = initial / this.")
    f.DEFINE_float("reg_lambda", _T.reg_lambda, "Regulariser weight lambda (eq. 5).")
    f.DEFINE_bool("use_sdw", _T.use_sdw, "Semantic diversity weight (eq. 3).")
    f.DEFINE_bool("use_reg", _T.use_reg, "Row-variance regulariser (eq. 4).")
    f.DEFINE_enum("scoring", _T.scoring, ["max", "l2"], "Label scoring (eq. 1).")
    f.DEFINE_enum("loss_mode", _T.loss_mode, ["paper", "official"], "Loss scaling.")
    f.DEFINE_enum("strategy", _T.strategy, ["default", "mirrored", "multi_worker", "tpu"],
                  "tf.distribute strategy (multi_worker reads TF_CONFIG).")
    f.DEFINE_string("tpu_address", _T.tpu_address, "TPU address for --strategy=tpu.")
    f.DEFINE_bool("mixed_precision", _T.mixed_precision, "mixed_float16 training.")
    f.DEFINE_bool("jit_compile", _T.jit_compile, "XLA-compile the train step.")
    f.DEFINE_integer("checkpoint_every_steps", _T.checkpoint_every_steps,
                     "Checkpoint every N steps (and at every epoch end).")
    f.DEFINE_integer("max_checkpoints", _T.max_checkpoints, "Checkpoints to keep.")
    f.DEFINE_integer("log_every_steps", _T.log_every_steps, "TensorBoard scalar frequency.")
    f.DEFINE_list("eval_ks", [str(k) for k in _T.eval_ks], "K values of P/R/F1@K.")
    f.DEFINE_integer("eval_batch_size", _T.eval_batch_size, "Validation batch size.")
    f.DEFINE_integer("max_eval_images", _T.max_eval_images, "Validation image cap (0 = all).")
    f.DEFINE_integer("seed", _T.seed, "Run seed (init, shuffle, augmentation).")
    f.DEFINE_bool("overwrite", _T.overwrite, "Discard an existing run in --model_dir.")
    f.DEFINE_bool("progress", True, "Console progress bar.")
    f.mark_flags_as_required(["data_dir", "model_dir"])
    _OWN_FLAGS[:] = sorted(set(flags.FLAGS) - before)


def config_from_flags(FLAGS) -> TrainConfig:  # noqa: N803 (absl convention)
    """Builds the frozen config from parsed flags."""
    data = DataConfig(
        data_dir=FLAGS.data_dir, train_split=FLAGS.train_split, val_split=FLAGS.val_split,
        val_fraction=FLAGS.val_fraction, shuffle_buffer=FLAGS.shuffle_buffer,
        augment=FLAGS.augment, augment_mode=FLAGS.augment_mode, cutout=FLAGS.cutout,
        min_crop_area=FLAGS.min_crop_area,
        rand_augment=FLAGS.rand_augment, rand_augment_factor=FLAGS.rand_augment_factor,
        num_parallel_calls=FLAGS.num_parallel_calls,
    )
    model = ModelConfig(
        backbone=FLAGS.backbone, weights=FLAGS.weights, image_size=FLAGS.image_size,
        num_rows=FLAGS.num_rows, dim=_M.dim, dropout=FLAGS.dropout,
        trainable_backbone=FLAGS.trainable_backbone,
    )
    return TrainConfig(
        model_dir=FLAGS.model_dir, data=data, model=model, epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size, steps_per_epoch=FLAGS.steps_per_epoch,
        learning_rate=FLAGS.learning_rate, weight_decay=FLAGS.weight_decay,
        weight_decay_mode=FLAGS.weight_decay_mode,
        exclude_bias_norm_from_decay=FLAGS.exclude_bias_norm_from_decay,
        warmup_fraction=FLAGS.warmup_fraction, div_factor=FLAGS.div_factor,
        final_div_factor=FLAGS.final_div_factor, reg_lambda=FLAGS.reg_lambda,
        use_sdw=FLAGS.use_sdw, use_reg=FLAGS.use_reg, scoring=FLAGS.scoring,
        loss_mode=FLAGS.loss_mode, strategy=FLAGS.strategy, tpu_address=FLAGS.tpu_address,
        mixed_precision=FLAGS.mixed_precision, jit_compile=FLAGS.jit_compile,
        checkpoint_every_steps=FLAGS.checkpoint_every_steps,
        max_checkpoints=FLAGS.max_checkpoints, log_every_steps=FLAGS.log_every_steps,
        eval_ks=tuple(int(k) for k in FLAGS.eval_ks), eval_batch_size=FLAGS.eval_batch_size,
        max_eval_images=FLAGS.max_eval_images, seed=FLAGS.seed, overwrite=FLAGS.overwrite,
    )


def main(argv):
    del argv
    from sdl_tf import training

    FLAGS = flags.FLAGS  # noqa: N806
    config = config_from_flags(FLAGS)
    # The resolved flags (defaults included) minus absl's own, re-runnable as a flagfile.
    # --overwrite is left out so rerunning flags.txt resumes instead of wiping the run.
    lines = [FLAGS[name].serialize() for name in _OWN_FLAGS
             if name not in ("overwrite", "progress") and FLAGS[name].value is not None]
    flags_text = "\n".join(lines) + "\n"
    result = training.train(config, flags_text=flags_text, progress=FLAGS.progress)
    print(f"status: {result['status']}; step {result['step']}; model {result['model_path']}")


if __name__ == "__main__":
    from sdl_tf import cli

    define_flags()
    cli.run(main)
