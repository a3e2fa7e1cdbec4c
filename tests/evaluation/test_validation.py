"""Tests for sdl_tf.evaluation.validation: the validation source and images, the per-epoch
scalars, the Figure-3 grid and the per-label AP table (the run-level logging is in
tests/training/test_loop.py)."""

import numpy as np
import pytest

from sdl_tf.config import DataConfig
from sdl_tf.evaluation import validation
from sdl_tf.labels.label_space import LabelSpace
from sdl_tf.modeling.model import build_model
from tests.helpers.demo_data import demo_dataset
from tests.helpers.train_configs import tiny_config


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return demo_dataset(tmp_path_factory)


def test_figure3_grid_of_a_few_validation_images(demo_dir):
    space = LabelSpace.load(demo_dir)
    cfg = tiny_config(demo_dir, "unused")
    images, labels, ids = validation.figure3_images(cfg, ("split", "val"), space.num_labels, 3)
    assert images.shape == (3, 32, 32, 3) and labels.shape == (3, space.num_labels)
    assert len(ids) == 3
    model = build_model(cfg.model)
    grid = validation.figure3_grid(model, images, ids, space, top_k=4, thumb=64)
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[1] == 3 * (64 + 12)


def test_validation_source(demo_dir):
    cfg = tiny_config(demo_dir, "unused")
    assert validation.validation_source(cfg) == ("split", "val")
    no_val = DataConfig(data_dir=demo_dir, val_split="none")
    assert validation.validation_source(cfg.replace(data=no_val)) is None
    carve = DataConfig(data_dir=demo_dir, val_split="none", val_fraction=0.25)
    assert validation.validation_source(cfg.replace(data=carve)) == ("carve", None)


def _result():
    nan = np.nan
    usage = {"num_images": 4, "share": [0.75, 0.25], "entropy": 0.5,
             "mean_image_entropy": 0.25, "mean_cosine": 0.1}
    return {"zsl": {"mAP": 40.0, "F1@3": 10.0, "per_label_ap": np.array([nan, 0.5, nan])},
            "gzsl": {"mAP": 30.0, "F1@3": 20.0, "per_label_ap": np.array([0.25, 0.5, nan])},
            "row_usage": usage}


def test_validation_scalars():
    scalars = validation.validation_scalars(_result(), (3,))
    assert scalars == {"zsl/mAP": 40.0, "zsl/F1@3": 10.0, "gzsl/mAP": 30.0, "gzsl/F1@3": 20.0,
                       "rows/share_1": 0.75, "rows/share_2": 0.25, "rows/entropy": 0.5,
                       "rows/mean_image_entropy": 0.25, "rows/mean_cosine": 0.1}
    single_row = {**_result(), "row_usage": {**_result()["row_usage"], "mean_cosine": None}}
    assert "rows/mean_cosine" not in validation.validation_scalars(single_row, (3,))
    no_usage = {k: v for k, v in _result().items() if k != "row_usage"}
    assert sorted(validation.validation_scalars(no_usage, (3,))) == [
        "gzsl/F1@3", "gzsl/mAP", "zsl/F1@3", "zsl/mAP"]


def test_per_label_ap_table_best_first_and_capped():
    space = LabelSpace.create(["a", "b", "c"], [False, True, False], np.eye(3, 4))
    table = validation.per_label_ap_table(_result(), space).splitlines()
    # GZSL AP in percent, best first; a label without AP last, shown as "-".
    assert table[2:] == ["| b | unseen | 50.0 | 50.0 |", "| a | seen | 25.0 | - |",
                         "| c | seen | - | - |"]
    capped = validation.per_label_ap_table(_result(), space, max_rows=2).splitlines()
    assert capped[2:] == ["| b | unseen | 50.0 | 50.0 |", "| ... 1 labels ... | | | |",
                          "| c | seen | - | - |"]
