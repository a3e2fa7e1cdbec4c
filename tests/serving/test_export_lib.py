"""Tests for sdl_tf.serving.export_lib: the export's layout and assets, versions, atomic
overwrite, loading a run (final.keras, checkpoint) and the export command. The signatures
themselves are tests/serving/test_signatures.py.

The tiny models, label spaces and images are `tests.helpers.serving_models`.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from sdl_tf import errors
from sdl_tf.config import ExportConfig
from sdl_tf.labels.label_space import LabelSpace
from sdl_tf.modeling import run_dir
from sdl_tf.serving import export_lib
from tests.helpers.paths import REPO_ROOT
from tests.helpers.serving_models import (
    ATOL,
    SIZE,
    D,
    M,
    export_tiny,
    keras_reference,
    make_images,
    numpy_scores_eq1,
    tiny_label_space,
    tiny_model,
    write_model_dir,
)

PY = sys.executable
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("export"))
    model, ls, path = export_tiny(base)
    return model, ls, path, base


def test_layout_and_label_space_copy(exported):
    _, ls, path, base = exported
    assert path == os.path.join(base, "sdl", "1")
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))
    assert os.path.isdir(os.path.join(path, "variables"))
    # No temporary directory left next to the version.
    assert sorted(os.listdir(os.path.join(base, "sdl"))) == ["1"]
    extra = os.path.join(path, export_lib.ASSETS_EXTRA)
    copy = LabelSpace.load(extra)
    assert copy.names == ls.names
    np.testing.assert_array_equal(copy.vectors, ls.vectors)
    with open(os.path.join(extra, export_lib.EXPORT_INFO)) as f:
        info = json.load(f)
    assert info["image_size"] == [SIZE, SIZE] and info["num_matrix_rows"] == M
    assert info["top_k"] == 3


def test_versions_overwrite_and_atomicity(tmp_path):
    base = str(tmp_path)
    model, ls = tiny_model(), tiny_label_space()
    os.makedirs(os.path.join(base, "m", "1"))  # an existing version 1 (content irrelevant)
    p2 = export_lib.export_saved_model(model, ls, base, "m", None, top_k=2)
    assert os.path.basename(p2) == "2"  # the next free version
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(p2).st_mode & 0o777 == 0o777 & ~mask  # readable by a server user
    with pytest.raises(export_lib.ExportError, match="already exists"):
        export_lib.export_saved_model(model, ls, base, "m", 2)
    mtime = os.path.getmtime(os.path.join(p2, "saved_model.pb"))
    export_lib.export_saved_model(model, ls, base, "m", 2, top_k=4, overwrite=True)
    with open(os.path.join(p2, export_lib.ASSETS_EXTRA, export_lib.EXPORT_INFO)) as f:
        assert json.load(f)["top_k"] == 4
    assert os.path.getmtime(os.path.join(p2, "saved_model.pb")) >= mtime
    assert sorted(os.listdir(os.path.join(base, "m"))) == ["1", "2"]
    # A failing export leaves nothing behind: wrong vector size for the model.
    bad_ls = LabelSpace.create(["a", "b"], [False, True], np.eye(2, 3))
    with pytest.raises(export_lib.ExportError, match="d=3"):
        export_lib.export_saved_model(model, bad_ls, base, "m", 3)
    assert sorted(os.listdir(os.path.join(base, "m"))) == ["1", "2"]
    assert export_lib.resolve_export_path(os.path.join(base, "m")) == p2


def test_export_from_checkpoint(tmp_path):
    """--checkpoint: model rebuilt from config.json, weights from the latest tf.train checkpoint
    (a Checkpoint with a `model` entry, as training writes it), not from final.keras."""
    from sdl_tf.config import ModelConfig, TrainConfig, save_config
    from sdl_tf.modeling.model import build_model

    model_dir = str(tmp_path / "run")
    first, ls = write_model_dir(model_dir)  # final.keras holds other (random) weights
    cfg = ModelConfig(backbone="tiny", weights="none", image_size=SIZE, num_rows=M, dim=D)
    save_config(TrainConfig(model_dir=model_dir, model=cfg),
                run_dir.path(model_dir, run_dir.CONFIG_FILE))
    keras.utils.set_random_seed(99)
    trained = build_model(cfg)
    step = tf.Variable(5, dtype=tf.int64)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=trained, step=step),
                                         run_dir.path(model_dir, run_dir.CHECKPOINT_DIR), 2)
    manager.save()
    config = ExportConfig(model_dir=model_dir, export_dir=str(tmp_path / "saved"),
                                    checkpoint=True, version=1)
    path = export_lib.export_from_config(config)
    data = make_images(2, seed=8)
    out = tf.saved_model.load(path).signatures["matrices"](image_bytes=tf.constant(data))
    ref, _ = keras_reference(trained, data)
    np.testing.assert_allclose(out["matrices"].numpy(), ref, atol=ATOL)
    other, _ = keras_reference(first, data)
    assert np.abs(other - ref).max() > 1e-3  # really the checkpoint, not final.keras
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(errors.MissingPathError, match="config.json not found"):
        export_lib.export_from_config(ExportConfig(model_dir=str(empty), checkpoint=True,
                                                   export_dir=str(tmp_path / "saved")))


def test_export_cli_from_build_model_dir(tmp_path):
    """A model dir as training writes it (build_model + tiny backbone), exported by the CLI."""
    model_dir = tmp_path / "run"
    model, ls = write_model_dir(str(model_dir))
    export_dir = tmp_path / "saved"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    cmd = [PY, "-m", "sdl_tf.export", f"--model_dir={model_dir}", f"--export_dir={export_dir}",
           "--name=sdl", "--version=7", "--top_k=2"]
    res = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    path = export_dir / "sdl" / "7"
    assert "exported SavedModel to" in res.stdout
    # Same config again through the library entry: refuses to overwrite version 7.
    config = ExportConfig(model_dir=str(model_dir), export_dir=str(export_dir),
                                    version=7)
    with pytest.raises(export_lib.ExportError, match="already exists"):
        export_lib.export_from_config(config)

    data = make_images(2, seed=9)
    out = tf.saved_model.load(str(path)).signatures["serving_default"](
        image_bytes=tf.constant(data))
    ref, _ = keras_reference(model, data)
    np.testing.assert_allclose(out["scores"].numpy(), numpy_scores_eq1(ref, ls.vectors), atol=ATOL)


def test_models_config_points_at_the_export_layout():
    """saved_models/models.config serves `<export_dir>/sdl` mounted at /models (docker)."""
    import re

    with open(os.path.join(REPO_ROOT, "saved_models", "models.config")) as f:
        text = "\n".join(line for line in f if not line.lstrip().startswith("#"))
    assert text.count("{") == text.count("}")
    configs = re.findall(r'name:\s*"([^"]+)"\s*base_path:\s*"([^"]+)"', text)
    assert configs == [("sdl", "/models/sdl")]
    assert 'model_platform: "tensorflow"' in text
