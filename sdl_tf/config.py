"""Frozen configuration dataclasses for the model, the input pipeline and training.

Entry points (`sdl_tf.train`, `sdl_tf.evaluate`) parse absl flags and build these; library code
only ever sees the dataclasses. `TrainConfig` nests a `DataConfig` and a `ModelConfig`, and the
whole tree round-trips through JSON (`to_dict` / `from_dict`), which is how `config.json` in a
model directory is written and read back. A value out of range, or in conflict with another,
raises `sdl_tf.errors.ConfigError` (a `ValueError`) naming the flag; the commands print it as one
line. The defaults are the paper's recipe (section 4.1); configs/*.flags set only what differs.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from sdl_tf.config_flags import field
from sdl_tf.errors import ConfigError
from sdl_tf.utils import atomic_io, gfile_utils

# The one definition of these names: `sdl_tf.modeling.scoring` and `sdl_tf.modeling.losses`
# (higher floors) take their lists from here, so the flags' choices and the code cannot differ.
SCORINGS = ("max", "l2")  # eq. 1 (max over the rows of A_i) | the l2 baseline of section 4.1
LOSS_MODES = ("paper", "official")  # SDLLoss scaling: the paper's | the authors' released script
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
AUGMENT_MODES = ("imagenet", "flip", "resize")
WEIGHT_DECAY_MODES = ("decoupled", "l2")
POOLINGS = ("avg", "attention")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of the SDL model (paper section 3.1, Figure 2).

    Attributes:
        backbone: registry name (`sdl_tf.modeling.backbones.BACKBONES`) or `hub:<handle-or-path>`.
        weights: `imagenet`, `none`, or a path to a weights file (`.weights.h5` / `.h5`).
        image_size: square input side H = W in pixels.
        num_rows: M, the number of principal directions (rows of the matrix A_i).
        dim: d, the word-vector dimension (taken from the label space when 0).
        dropout: dropout rate before the final dense layer (0.5 in the paper).
        trainable_backbone: fine-tune the backbone end to end (paper) or freeze it.
        row_scale: 0 (the paper): the rows of A_i are what the projection gives; > 0: each
            row is l2-normalised and multiplied by `row_scale` (`RowNormalization`), so an
            image's scores are row_scale x the cosine of a label vector with its best row.
        pooling: `avg` (the paper): one global-average-pooled feature vector, projected to
            all M rows; `attention`: each row m pools the backbone's feature map with its own
            learned spatial softmax (`RowAttentionPooling`) before its own projection, so
            different rows can read different objects of the image.
    """

    backbone: str = field("resnet50", "resnet50 | resnet101 | mobilenet_v3_small | "
                          "efficientnet_b0 | efficientnet_lite0 | tresnet_m | tresnet_l | "
                          "tresnet_xl | small_cnn | hub:<handle-or-path>.")
    weights: str = field("imagenet", "Backbone weights: imagenet | none | <path>.")
    image_size: int = field(224, "Input image side.")
    num_rows: int = field(7, "M, principal directions per image.")
    dim: int = field(300, "d, the word-vector size (from the label space).", flag=False)
    dropout: float = field(0.5, "Dropout before the projection.")
    trainable_backbone: bool = field(True, "Fine-tune the backbone.")
    row_scale: float = field(0.0, "0: rows of A as projected (paper); > 0: each row of A "
                             "l2-normalised, times this scale.")
    pooling: str = field("avg", "avg: global average pooling, as in the paper | attention: "
                         "each row of A pools the feature map with its own spatial softmax.",
                         choices=POOLINGS)

    def __post_init__(self):
        if self.image_size < 16:
            raise ConfigError(f"image_size must be >= 16, got {self.image_size}")
        if self.num_rows < 1:
            raise ConfigError(f"num_rows (M) must be >= 1, got {self.num_rows}")
        if self.dim < 0:
            raise ConfigError(f"dim must be >= 0, got {self.dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.row_scale < 0:
            raise ConfigError(f"row_scale must be >= 0 (0 = off), got {self.row_scale}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Input pipeline settings.

    Attributes:
        data_dir: a prepared dataset directory (label space + TFRecord shards + summaries).
        train_split / val_split / test_split: split names of the shards.
        val_fraction: when there are no `val_split` shards, the fraction of training images
            (chosen by a hash of the image id, so stable across runs) held out for validation;
            0 disables validation.
        shuffle_buffer: example shuffle buffer size for training.
        augment: ImageNet-style augmentation (random resized crop, flip, colour) for training.
        augment_mode: `imagenet` (random resized crop, flip, colour, cutout: the paper) or
            `flip` (horizontal flip only: label-safe for small synthetic objects, where a crop
            or a cutout can remove a labelled object and so mislabel the image) or `resize`
            (the whole image resized, then cutout: the authors' COCO script, no crop/flip/colour).
        cutout: side of the cutout square as a fraction of the image side (0 disables).
        rand_augment: also apply RandAugment (Cubuk et al. 2020: 2 ops drawn from the paper's
            14, `sdl_tf.data.rand_augment.rand_augment`, after the `augment_mode` transforms) to
            training images, as the authors' COCO script.
        rand_augment_factor: RandAugment magnitude M in [0, 1] (1 = each op's strongest
            setting: rotate 30 degrees, shear 0.3, translate 45 %, enhance factors 1 +- 0.9).
        min_crop_area: lower bound of the random-resized-crop area fraction (`imagenet` only).
        num_parallel_calls: tf.data parallelism (-1 = AUTOTUNE).
        cache_eval: cache decoded evaluation images in memory (small datasets only).
        cache_train_images: decode the training images once per run and keep them in memory
            (`augment_mode` flip or resize, or no augmentation; up to 1 GiB of pixels). Same
            batches as without it; it saves the per-step decoding, which on 2 cores competes
            with the train step for the CPU.

    A setting that the others make ineffective is refused (`ConfigError` naming the flag), except
    `cutout` 0.5 under `augment_mode=flip`: it is the default (the flip-mode demo configs keep
    it), so it cannot tell an intended cutout; `pipeline.train_dataset` prints a one-line warning
    for it instead, and for augmentation flags set under `augment=false` (nothing augments).
    """

    data_dir: str = field("", "Prepared dataset directory (data_prep output).", required=True)
    train_split: str = field("train", "Training shard split.")
    val_split: str = field("val", "Validation shard split (per-epoch eval).")
    test_split: str = field("test", "Test shard split.", flag=False)
    val_fraction: float = field(
        0.0, "Without val shards: fraction of training images held out for validation.")
    shuffle_buffer: int = field(2048, "Example shuffle buffer.")
    augment: bool = field(True, "Random resized crop, flip and colour augmentation.")
    augment_mode: str = field(
        "imagenet", "imagenet: crop, flip, colour, cutout (paper); flip: flip only (label-safe); "
        "resize: whole-image resize + cutout (authors' COCO script).", choices=AUGMENT_MODES)
    cutout: float = field(0.5, "Cutout square side as a fraction of the image (0=off).")
    rand_augment: bool = field(
        False, "Also apply RandAugment (2 ops) to training images (authors' COCO script).")
    rand_augment_factor: float = field(
        0.5, "RandAugment magnitude M in [0, 1] (needs --rand_augment).")
    min_crop_area: float = field(0.25, "Smallest random-resized-crop area.")
    num_parallel_calls: int = field(-1, "tf.data parallelism (-1=auto).")
    cache_eval: bool = field(False, "Cache decoded evaluation images in memory.", flag=False)
    cache_train_images: bool = field(
        False, "Decode the training images once and keep them in memory (small sets; "
        "augment_mode flip or resize, or --augment=false).")

    def __post_init__(self):
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0.0 <= self.cutout < 1.0:
            raise ConfigError(f"cutout must be in [0, 1), got {self.cutout}")
        if not 0.0 < self.min_crop_area <= 1.0:
            raise ConfigError(f"min_crop_area must be in (0, 1], got {self.min_crop_area}")
        if not 0.0 <= self.rand_augment_factor <= 1.0:
            raise ConfigError(f"rand_augment_factor must be in [0, 1], got "
                              f"{self.rand_augment_factor}")
        if self.augment_mode not in AUGMENT_MODES:
            raise ConfigError(f"augment_mode must be one of {AUGMENT_MODES}, got "
                              f"{self.augment_mode!r}")
        if self.cache_train_images and self.augment and self.augment_mode == "imagenet":
            raise ConfigError("cache_train_images needs augment_mode flip or resize (or no "
                              "augmentation): augment_mode imagenet crops the undecoded JPEG")
        self._check_augmentation_flags()

    def _check_augmentation_flags(self):
        """Refuses a setting that would silently do nothing (see the class docstring)."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        changed = lambda name: getattr(self, name) != defaults[name]
        if not self.augment:
            return  # augmentation off: `pipeline.train_dataset` warns about what it ignores
        if changed("rand_augment_factor") and not self.rand_augment:
            raise ConfigError(f"--rand_augment_factor={self.rand_augment_factor} does nothing "
                              "without --rand_augment")
        if changed("min_crop_area") and self.augment_mode != "imagenet":
            raise ConfigError(f"--min_crop_area={self.min_crop_area} does nothing with "
                              f"--augment_mode={self.augment_mode} (only imagenet crops)")
        if self.augment_mode == "flip" and self.cutout > 0 and changed("cutout"):
            # The default 0.5 (which the flip-mode demo configs keep) only gets the warning of
            # `pipeline.train_dataset`.
            raise ConfigError(f"--cutout={self.cutout} does nothing with --augment_mode=flip "
                              "(flips only); set --cutout=0")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run (paper section 4.1, "Implementation Details").

    Attributes:
        model_dir: output directory (layout in docs/design.md).
        data / model: nested configs.
        epochs, batch_size: the global batch size summed over all replicas and workers.
        steps_per_epoch: cap on steps per epoch (0 = one pass over the training split).
        learning_rate: the one-cycle maximum (1e-4 in the paper).
        weight_decay: weight decay coefficient (3e-4 in the paper and the authors' script).
        weight_decay_mode: `decoupled` (AdamW, the paper's "true weight decay" [31]) or `l2`
            (Adam with the L2 term wd * w added to the gradient, which is what the authors'
            script's torch.optim.Adam(weight_decay=...) parameter groups do).
        exclude_bias_norm_from_decay: no weight decay on 1-D variables (biases and
            normalisation scales/offsets), as the authors' `add_weight_decay`.
        warmup_fraction: fraction of all steps spent rising to the maximum (one-cycle pct_start).
        div_factor / final_div_factor: one-cycle start lr = max/div, final lr = start/final_div.
        reg_lambda, use_sdw, use_reg, scoring, loss_mode: passed to `SDLLoss` (eqs. 2-5).
        strategy: default | mirrored | multi_worker | tpu; tpu_address for tpu.
        mixed_precision: train with the `mixed_float16` policy (loss scaling included).
        jit_compile: XLA-compile the train step.
        checkpoint_every_steps: also checkpoint every N steps (checkpoints at epoch ends always).
        max_checkpoints: how many checkpoints to keep.
        log_every_steps: TensorBoard scalar frequency.
        eval_ks: K values of P/R/F1@K for validation and evaluation.
        eval_batch_size: batch size of validation / evaluation.
        max_eval_images: cap on validation images per epoch (0 = all).
        seed: seeds model init, shuffling and augmentation.
        cache_backbone_features: with a frozen backbone, run it once over the training
            images (and their horizontal flips under `augment_mode=flip`) and train the
            head on the stored features (`sdl_tf.training.feature_cache`).
        feature_cache_dir: with `cache_backbone_features`, a directory where the features
            are stored and found again by later runs with the same data and backbone.
        overwrite: delete an existing run in model_dir and start again.
    """

    model_dir: str = field("", "Output directory (checkpoints, logs, final.keras).", required=True)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    epochs: int = field(7, "Epochs.")
    batch_size: int = field(192, "Global batch size (all replicas).")
    steps_per_epoch: int = field(0, "Steps per epoch (0 = one pass).")
    learning_rate: float = field(1e-4, "One-cycle maximum learning rate.")
    weight_decay: float = field(3e-4, "Weight decay coefficient.")
    weight_decay_mode: str = field(
        "decoupled", "decoupled: AdamW (paper); l2: Adam + L2 gradient term (authors' script).",
        choices=WEIGHT_DECAY_MODES)
    exclude_bias_norm_from_decay: bool = field(
        False, "No weight decay on biases and normalisation parameters (1-D variables).")
    warmup_fraction: float = field(0.2, "One-cycle rising fraction.")
    div_factor: float = field(25.0, "One-cycle initial lr = max / div_factor.")
    final_div_factor: float = field(1e4, "Final lr = initial / this.")
    reg_lambda: float = field(0.3, "Regulariser weight lambda (eq. 5).")
    use_sdw: bool = field(True, "Semantic diversity weight (eq. 3).")
    use_reg: bool = field(True, "Row-variance regulariser (eq. 4).")
    scoring: str = field("max", "Label scoring (eq. 1).", choices=SCORINGS)
    loss_mode: str = field("paper", "Loss scaling.", choices=LOSS_MODES)
    strategy: str = field("default", "tf.distribute strategy (multi_worker reads TF_CONFIG).",
                          choices=STRATEGIES)
    tpu_address: str = field("", "TPU address for --strategy=tpu.")
    mixed_precision: bool = field(False, "mixed_float16 training.")
    jit_compile: bool = field(False, "XLA-compile the train step.")
    checkpoint_every_steps: int = field(500, "Checkpoint every N steps (and at every epoch end).")
    max_checkpoints: int = field(3, "Checkpoints to keep.")
    log_every_steps: int = field(10, "TensorBoard scalar frequency.")
    eval_ks: tuple[int, ...] = field((3, 5), "K values of P/R/F1@K.")
    eval_batch_size: int = field(64, "Validation batch size.")
    max_eval_images: int = field(0, "Validation image cap (0 = all).")
    seed: int = field(0, "Run seed (init, shuffle, augmentation).")
    cache_backbone_features: bool = field(
        False, "Frozen backbone: compute its features of the training images once per run "
        "(and of their flips with augment_mode=flip) and train the head on them.")
    feature_cache_dir: str = field(
        "", "With --cache_backbone_features: keep the features here between runs on the same "
        "data and backbone (other methods, seeds, heads reuse them).")
    overwrite: bool = field(False, "Discard an existing run in --model_dir.")

    def __post_init__(self):
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.scoring not in SCORINGS:
            raise ConfigError(f"scoring must be one of {SCORINGS}, got {self.scoring!r}")
        if self.loss_mode not in LOSS_MODES:
            raise ConfigError(f"loss_mode must be one of {LOSS_MODES}, got {self.loss_mode!r}")
        if self.weight_decay_mode not in WEIGHT_DECAY_MODES:
            raise ConfigError(f"weight_decay_mode must be one of {WEIGHT_DECAY_MODES}, got "
                              f"{self.weight_decay_mode!r}")
        if not 0.0 < self.warmup_fraction < 1.0:
            raise ConfigError(f"warmup_fraction must be in (0, 1), got {self.warmup_fraction}")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not self.eval_ks or any(k < 1 for k in self.eval_ks):
            raise ConfigError(f"eval_ks must be positive integers, got {self.eval_ks}")
        if self.cache_backbone_features:
            if self.model.trainable_backbone:
                raise ConfigError("cache_backbone_features needs a frozen backbone: add "
                                  "--trainable_backbone=false")
            if self.data.augment and self.data.augment_mode != "flip":
                raise ConfigError(
                    "cache_backbone_features computes each image's features once: "
                    f"augment_mode {self.data.augment_mode!r} cannot be applied to them; use "
                    "--augment_mode=flip (image and flip cached) or --augment=false")
            if self.data.cache_train_images:
                raise ConfigError("cache_backbone_features replaces cache_train_images: the "
                                  "images are not needed once their features are; drop "
                                  "--cache_train_images")
            if self.strategy == "tpu":
                raise ConfigError("cache_backbone_features feeds the features from host memory "
                                  "(tf.data from a generator), which TPUs cannot take")
        if self.feature_cache_dir and not self.cache_backbone_features:
            raise ConfigError("feature_cache_dir stores cached backbone features: add "
                              "--cache_backbone_features (and --trainable_backbone=false)")
        # Normalise lists from JSON/flags to a tuple so the config stays hashable.
        object.__setattr__(self, "eval_ks", tuple(int(k) for k in self.eval_ks))

    def to_dict(self) -> dict[str, Any]:
        """The config tree as plain JSON-serialisable dicts."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`; unknown keys raise so typos in config.json are not ignored."""
        d = dict(d)
        data = DataConfig(**d.pop("data", {}))
        model = ModelConfig(**d.pop("model", {}))
        return cls(data=data, model=model, **d)

    def replace(self, **changes) -> TrainConfig:
        """`dataclasses.replace` shorthand."""
        return dataclasses.replace(self, **changes)


def save_config(config: TrainConfig, path: str) -> None:
    """Writes `config` as indented JSON, atomically (temp file + rename)."""
    atomic_io.atomic_write_text(path, json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")


def load_config(path: str) -> TrainConfig:
    """Reads a `config.json` written by `save_config`.

    Raises:
        ConfigError: naming the file, for invalid JSON or an unknown / bad field.
    """
    with gfile_utils.open_file(path) as f:
        try:
            d = json.load(f)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e
    try:
        return TrainConfig.from_dict(d)
    except TypeError as e:
        raise ConfigError(f"{path}: {e}") from e


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """One evaluation (`python -m sdl_tf.evaluate`).

    Attributes:
        model_dir: a finished training run (model + label space + config.json); may be empty
            for `baseline="random"` when `data_dir` and `output_dir` are given.
        data_dir: prepared dataset (default: the one in the run's config.json).
        split: shard split to evaluate (`test`; `val` for model selection).
        output_dir: where results go (default `<model_dir>/eval`).
        model_file: model file name inside model_dir.
        ks: K values of P/R/F1@K (default: the run's eval_ks).
        diverse_min_labels / diverse_k: Table 4's subset: images with more than this many
            positives, scored at top-K.
        batch_size, max_images (0 = all), image_size (0 = the model's).
        baseline: "" (the model) or "random" (seeded uniform random scores, same protocol).
        seed: seed of the random baseline.
        scoring: "max" or "l2" (default: the run's).
        feature_cache_dir: for a run with a frozen backbone, a directory where the backbone's
            features of the split are stored and found again (`sdl_tf.data.feature_cache`).
        unseen_from_data: score with the data's unseen flags instead of the model's (the
            label names must match): a model trained on every label, evaluated on a
            zero-shot split's test set, is that split's supervised upper bound.
    """

    model_dir: str = field("", "Trained run directory (final.keras + labels).")
    data_dir: str = field("", "Prepared dataset (default: the run's config.json).")
    split: str = field("test", "Split to evaluate (test; val for model selection).")
    output_dir: str = field("", "Output directory (default <model_dir>/eval).")
    model_file: str = field("final.keras", "Model file inside --model_dir.")
    ks: tuple[int, ...] = field((), "K values of P/R/F1@K (default: the run's eval_ks).")
    diverse_min_labels: int = field(
        6, "Diverse subset: images with more than this many positives (Table 4).")
    diverse_k: int = field(10, "Top-K of the diverse subset.")
    batch_size: int = field(64, "Batch size.")
    max_images: int = field(0, "Evaluate at most this many images (0 = all).")
    baseline: str = field("", "random: seeded random scores, same protocol.",
                          choices=("", "random"))
    seed: int = field(0, "Seed of the random baseline.")
    scoring: str = field("", "Scoring (default: the run's).", choices=("", *SCORINGS))
    feature_cache_dir: str = field(
        "", "For a run with a frozen backbone: keep the backbone's features of the split here "
        "and reuse them in later evaluations of runs with the same backbone and data.")
    unseen_from_data: bool = field(
        False, "Use --data_dir's unseen labels instead of the model's (e.g. a model trained on "
        "all labels, scored as the supervised upper bound of a zero-shot split).")

    def __post_init__(self):
        if self.baseline not in ("", "random"):
            raise ConfigError(f"baseline must be '' or 'random', got {self.baseline!r}")
        if not self.model_dir and not (self.baseline and self.data_dir and self.output_dir):
            raise ConfigError("model_dir is required (or baseline=random with data_dir and "
                              "output_dir)")
        if self.scoring and self.scoring not in SCORINGS:
            raise ConfigError(f"scoring must be one of {SCORINGS}, got {self.scoring!r}")
        object.__setattr__(self, "ks", tuple(int(k) for k in self.ks))


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Configuration of `python -m sdl_tf.export` (`export_lib.export_from_config`)."""

    model_dir: str = field(
        help="Training run directory (final.keras, labels.json, label_vectors.npy).",
        required=True)
    export_dir: str = field("saved_models", "Base export directory.")
    name: str = field("sdl", "Model name (TF Serving's model name).")
    version: int | None = field(None, "Version number; default: next free one.")
    keras_model: str | None = field(
        None, "A .keras file to export instead of <model_dir>/final.keras.")
    checkpoint: bool = field(
        False,
        "Rebuild the model from config.json and restore the latest checkpoint (not final.keras).")
    top_k: int = field(10, "K of the serving_default top-K outputs.")
    overwrite: bool = field(False, "Replace an existing version directory.")

    def __post_init__(self):
        if self.keras_model and self.checkpoint:
            raise ConfigError("give at most one of --keras_model and --checkpoint")
