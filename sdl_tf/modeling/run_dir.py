"""The model directory: every file a training run writes, named once, and the one loader.

Training writes, evaluate / export / predict / retrieve read (keras-hub's `preset_utils` is the
model: file names as constants, one loader):

    <model_dir>/flags.txt            resolved flags (flagfile format, re-runnable)
    <model_dir>/config.json          the resolved TrainConfig as JSON
    <model_dir>/labels.json, label_vectors.npy   copy of the data's LabelSpace
    <model_dir>/checkpoints/         tf.train.CheckpointManager files (resume)
    <model_dir>/final.keras          the final Keras model (what the other commands load)
    <model_dir>/train_result.json    the end-of-training summary
    <model_dir>/logs/                TensorBoard
    <model_dir>/eval/                evaluation outputs

A run is finished when `final.keras` and `labels.json` are there (`require_finished`).
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from sdl_tf import errors
from sdl_tf.config import TrainConfig, load_config, save_config
from sdl_tf.labels import label_space as label_space_lib
from sdl_tf.labels.label_space import LabelSpace
from sdl_tf.modeling import backbones
from sdl_tf.modeling import model as model_lib
from sdl_tf.utils import atomic_io, gfile_utils

FLAGS_FILE = "flags.txt"
CONFIG_FILE = "config.json"
LABELS_FILE = label_space_lib.LABELS_FILE
LABEL_VECTORS_FILE = label_space_lib.VECTORS_FILE
CHECKPOINT_DIR = "checkpoints"
FINAL_MODEL_FILE = "final.keras"
TRAIN_RESULT_FILE = "train_result.json"
LOG_DIR = "logs"
EVAL_DIR = "eval"

# What `--overwrite` removes: everything a run writes except the label space (rewritten anyway).
RUN_FILES = (FINAL_MODEL_FILE, CONFIG_FILE, FLAGS_FILE, TRAIN_RESULT_FILE)
RUN_DIRS = (CHECKPOINT_DIR, LOG_DIR, EVAL_DIR)


def path(model_dir: str, name: str) -> str:
    """`<model_dir>/<name>` for one of this module's file / folder names."""
    return os.path.join(model_dir, name)


def clear(model_dir: str) -> None:
    """Removes a previous run's files and folders (training's `--overwrite`)."""
    for name in RUN_DIRS:
        if tf.io.gfile.isdir(path(model_dir, name)):
            tf.io.gfile.rmtree(path(model_dir, name))
    for name in RUN_FILES:
        if tf.io.gfile.exists(path(model_dir, name)):
            tf.io.gfile.remove(path(model_dir, name))


def write_config(model_dir: str, config: TrainConfig) -> None:
    """Writes `config.json` atomically."""
    save_config(config, path(model_dir, CONFIG_FILE))


def write_flags(model_dir: str, flags_text: str) -> None:
    """Writes `flags.txt` (flagfile lines, re-runnable with `--flagfile`) atomically."""
    atomic_io.atomic_write_text(path(model_dir, FLAGS_FILE), flags_text)


def read_config(model_dir: str) -> TrainConfig | None:
    """The run's `TrainConfig`, or None when the directory has no `config.json`."""
    config_path = path(model_dir, CONFIG_FILE)
    if not gfile_utils.isfile(config_path):
        return None
    return load_config(config_path)


def read_label_space(model_dir: str) -> LabelSpace:
    """The label space the run was trained with.

    Raises:
        errors.MissingPathError: the directory has no `labels.json`.
    """
    if not gfile_utils.isfile(path(model_dir, LABELS_FILE)):
        raise errors.MissingPathError(
            f"model dir {model_dir!r} has no {LABELS_FILE}: not a training run directory",
            errors.missing_model_hint(model_dir))
    return LabelSpace.load(model_dir)


def require_finished(model_dir: str, filename: str = FINAL_MODEL_FILE) -> None:
    """Checks that `model_dir` is a finished training run (model file + label space).

    Raises:
        errors.MissingPathError: naming what is missing and the command that writes it.
    """
    if not model_dir:
        raise errors.MissingPathError("no model dir given", errors.missing_model_hint("DIR"))
    if not gfile_utils.isdir(model_dir):
        raise errors.MissingPathError(
            f"model dir {model_dir!r} does not exist (no finished training run there)",
            errors.missing_model_hint(model_dir))
    for name in (filename, LABELS_FILE):
        if not gfile_utils.isfile(path(model_dir, name)):
            raise errors.MissingPathError(
                f"model dir {model_dir!r} has no {name}: not a finished training run "
                f"(an unfinished one resumes with the same command)",
                errors.missing_model_hint(model_dir))


def load_keras_file(file_path: str, compile: bool = False, safe_mode: bool = True
                    ) -> keras.Model:
    """Loads a `.keras` SDL model (custom layers and `SDLLoss` are registered on import).

    Args:
        file_path: the `.keras` file (local or any `tf.io.gfile` path).
        compile: restore the compile state (loss, optimizer) too.
        safe_mode: Keras safe mode; must be False for `hub:` backbones, whose `TFSMLayer`
            reloads an external SavedModel (Keras refuses that in safe mode).
    """
    # Registers SDLLoss before Keras deserialises a compiled model; the layers (`layers`,
    # `demo_net`, `tresnet`) are registered by this module's import of `model`.
    import sdl_tf.modeling.losses  # noqa: F401

    if not gfile_utils.isfile(file_path):
        raise errors.MissingPathError(f"model file not found: {file_path}")
    with gfile_utils.local_copy(file_path) as local:  # e.g. gs://: Keras loads a local copy
        return keras.saving.load_model(local, compile=compile, safe_mode=safe_mode)


def _safe_mode(model_dir: str) -> bool:
    """Keras safe mode unless the run's backbone is a hub SavedModel (our own training output:
    its `TFSMLayer` needs unsafe mode to reload)."""
    config = read_config(model_dir)
    return config is None or not config.model.backbone.startswith(backbones.HUB_PREFIX)


def load_checkpoint_model(model_dir: str) -> keras.Model:
    """Rebuilds the model from `config.json` and restores the latest checkpoint's weights.

    Training's `tf.train.Checkpoint` holds the model under `model`; the optimizer and step
    entries are not needed here.
    """
    config = read_config(model_dir)
    if config is None:
        raise errors.MissingPathError(
            f"{path(model_dir, CONFIG_FILE)} not found: loading a checkpoint needs a training run "
            "directory", errors.missing_model_hint(model_dir))
    latest = tf.train.latest_checkpoint(path(model_dir, CHECKPOINT_DIR))
    if latest is None:
        raise errors.MissingPathError(
            f"no checkpoint found in {path(model_dir, CHECKPOINT_DIR)}",
            errors.missing_model_hint(model_dir))
    model = model_lib.build_model(config.model)
    status = tf.train.Checkpoint(model=model).restore(latest)
    status.expect_partial()
    # Every model weight must come from the checkpoint, not from the random initialisation.
    status.assert_existing_objects_matched()
    return model


def load(model_dir: str, *, filename: str = FINAL_MODEL_FILE, checkpoint: bool = False,
         keras_file: str | None = None) -> tuple[keras.Model, LabelSpace]:
    """Loads a trained run: its model and the label space it was trained with.

    Args:
        model_dir: the run directory.
        filename: the model file inside it (default `final.keras`).
        checkpoint: rebuild from `config.json` and restore the latest checkpoint instead (a run
            that has not finished, or a checkpoint saved after `final.keras`).
        keras_file: a `.keras` file elsewhere to load instead of the run's own model (the label
            space still comes from `model_dir`).

    Returns:
        (keras.Model images uint8 (B, H, W, 3) -> matrices (B, M, d), LabelSpace).
    """
    if checkpoint:
        return load_checkpoint_model(model_dir), read_label_space(model_dir)
    if keras_file:
        return (load_keras_file(keras_file, safe_mode=_safe_mode(model_dir)),
                read_label_space(model_dir))
    require_finished(model_dir, filename)
    model = load_keras_file(path(model_dir, filename), safe_mode=_safe_mode(model_dir))
    return model, read_label_space(model_dir)
