"""Tests for sdl_tf.modeling.run_dir: the run directory's files and the one loader (final
model, another `.keras` file, the latest checkpoint; hub backbones in Keras' unsafe mode)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from sdl_tf import errors
from sdl_tf.config import ModelConfig, TrainConfig
from sdl_tf.labels.label_space import LabelSpace
from sdl_tf.modeling import run_dir
from sdl_tf.modeling.model import build_model
from tests.helpers import hub_models

CFG = ModelConfig(backbone="tiny", weights="none", image_size=32, num_rows=3, dim=8)


def _images(n=4, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype(np.uint8)


def _label_space():
    return LabelSpace.create(["a", "b", "c"], [False, False, True],
                             np.random.default_rng(0).normal(size=(3, 8)))


def test_load_model_dir(tmp_path):
    model = build_model(CFG)
    model.save(str(tmp_path / "final.keras"))
    space = _label_space()
    space.save(str(tmp_path))
    loaded, loaded_space = run_dir.load(str(tmp_path))
    assert loaded_space.names == ("a", "b", "c")
    x = _images()
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    with pytest.raises(FileNotFoundError, match="finished training run"):
        run_dir.load(str(tmp_path / "nothing"))


def test_missing_parts_name_the_file_and_the_command(tmp_path):
    with pytest.raises(errors.MissingPathError, match="no model dir given") as e:
        run_dir.load("")
    assert "python -m sdl_tf.train" in str(e.value)
    (tmp_path / "final.keras").write_bytes(b"")
    with pytest.raises(errors.MissingPathError, match="has no labels.json: not a finished"):
        run_dir.require_finished(str(tmp_path))
    with pytest.raises(errors.MissingPathError, match="has no other.keras"):
        run_dir.require_finished(str(tmp_path), "other.keras")
    with pytest.raises(errors.MissingPathError, match="model file not found"):
        run_dir.load_keras_file(str(tmp_path / "missing.keras"))
    with pytest.raises(errors.MissingPathError, match="has no labels.json"):
        run_dir.read_label_space(str(tmp_path))


def test_keras_file_instead_of_the_runs_own(tmp_path):
    keras.utils.set_random_seed(1)
    build_model(CFG).save(str(tmp_path / "final.keras"))
    _label_space().save(str(tmp_path))
    other = build_model(CFG)
    other.save(str(tmp_path / "other.keras"))
    loaded, space = run_dir.load(str(tmp_path), keras_file=str(tmp_path / "other.keras"))
    x = _images(seed=2)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), other.predict(x, verbose=0))
    assert space.names == ("a", "b", "c")
    same, _ = run_dir.load(str(tmp_path), filename="other.keras")
    np.testing.assert_array_equal(same.predict(x, verbose=0), other.predict(x, verbose=0))


def test_checkpoint_is_rebuilt_from_config(tmp_path):
    """`checkpoint=True`: config.json's model, the weights of training's latest Checkpoint (a
    `model` entry beside the optimizer and step), not final.keras."""
    model_dir = str(tmp_path / "run")
    os.makedirs(model_dir)
    run_dir.write_config(model_dir, TrainConfig(model_dir=model_dir, model=CFG))
    _label_space().save(model_dir)
    keras.utils.set_random_seed(99)
    trained = build_model(CFG)
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=trained, step=tf.Variable(5, dtype=tf.int64)),
        run_dir.path(model_dir, run_dir.CHECKPOINT_DIR), 2)
    manager.save()
    loaded, space = run_dir.load(model_dir, checkpoint=True)
    x = _images(seed=4)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), trained.predict(x, verbose=0),
                               rtol=1e-6)
    assert space.names == ("a", "b", "c")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(errors.MissingPathError, match="config.json not found"):
        run_dir.load_checkpoint_model(str(empty))
    no_checkpoint = tmp_path / "no_checkpoint"
    no_checkpoint.mkdir()
    run_dir.write_config(str(no_checkpoint), TrainConfig(model_dir=str(no_checkpoint), model=CFG))
    with pytest.raises(errors.MissingPathError, match="no checkpoint found"):
        run_dir.load_checkpoint_model(str(no_checkpoint))


def test_config_flags_and_clear(tmp_path):
    model_dir = str(tmp_path)
    assert run_dir.read_config(model_dir) is None
    config = TrainConfig(model_dir=model_dir, model=CFG)
    run_dir.write_config(model_dir, config)
    run_dir.write_flags(model_dir, "--epochs=3\n")
    assert run_dir.read_config(model_dir) == config
    assert (tmp_path / run_dir.FLAGS_FILE).read_text() == "--epochs=3\n"
    for name in run_dir.RUN_DIRS:
        (tmp_path / name).mkdir()
    (tmp_path / run_dir.FINAL_MODEL_FILE).write_bytes(b"x")
    _label_space().save(model_dir)
    run_dir.clear(model_dir)
    assert set(os.listdir(model_dir)) == {run_dir.LABELS_FILE, run_dir.LABEL_VECTORS_FILE}


def test_hub_run_loads_in_unsafe_mode(tmp_path):
    """A run whose config names a `hub:` backbone reloads its TFSMLayer (Keras refuses that in
    safe mode); any other run loads in safe mode."""
    hub = hub_models.save_features_model(str(tmp_path / "hub_model"),
                                         np.random.default_rng(0).normal(size=(3, 8)))
    cfg = ModelConfig(backbone=f"hub:{hub}", weights="none", image_size=16, num_rows=2, dim=8)
    model_dir = str(tmp_path / "run")
    os.makedirs(model_dir)
    model = build_model(cfg)
    model.save(run_dir.path(model_dir, run_dir.FINAL_MODEL_FILE))
    _label_space().save(model_dir)
    with pytest.raises(ValueError, match="safe_mode"):  # no config.json: safe mode
        run_dir.load(model_dir)
    run_dir.write_config(model_dir, TrainConfig(model_dir=model_dir, model=cfg))
    loaded, _ = run_dir.load(model_dir)
    x = _images(size=16)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6)
