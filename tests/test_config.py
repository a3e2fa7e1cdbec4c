"""Tests for sdl_tf.config and the flag -> config path of sdl_tf.train (incl. configs/*.flags)."""

import dataclasses
import json
import os

import pytest
from absl import flags

from sdl_tf.config import (
    DataConfig,
    EvalConfig,
    ModelConfig,
    TrainConfig,
    load_config,
    save_config,
)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def test_json_round_trip(tmp_path):
    cfg = TrainConfig(model_dir="m", data=DataConfig(data_dir="d", cutout=0.3),
                      model=ModelConfig(backbone="tiny", num_rows=3, dim=16), eval_ks=[10, 20])
    path = str(tmp_path / "config.json")
    save_config(cfg, path)
    assert load_config(path) == cfg
    assert cfg.eval_ks == (10, 20)  # lists normalised to tuples (hashable, JSON-stable)
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]


def test_frozen_and_validation():
    cfg = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 3
    with pytest.raises(ValueError, match="strategy"):
        TrainConfig(strategy="horovod")
    with pytest.raises(ValueError, match="num_rows"):
        ModelConfig(num_rows=0)
    with pytest.raises(ValueError, match="dropout"):
        ModelConfig(dropout=1.0)
    with pytest.raises(ValueError, match="val_fraction"):
        DataConfig(val_fraction=1.5)
    with pytest.raises(ValueError, match="eval_ks"):
        TrainConfig(eval_ks=())
    with pytest.raises(ValueError, match="model_dir"):
        EvalConfig()
    EvalConfig(baseline="random", data_dir="d", output_dir="o")  # no model needed


def test_load_config_names_bad_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"epochs": 3,\n "bogus": 1}')
    with pytest.raises(ValueError, match="config.json.*bogus"):
        load_config(str(path))
    path.write_text("{not json")
    with pytest.raises(ValueError, match="line 1"):
        load_config(str(path))


def _parse(*args):
    from sdl_tf import train

    if "data_dir" not in flags.FLAGS:
        train.define_flags()
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["train", *args])
    try:
        return train.config_from_flags(flags.FLAGS)
    finally:
        flags.FLAGS.unparse_flags()


@pytest.mark.parametrize(
    "name, rows, epochs, batch, ks",
    [("coco", 2, 20, 32, (3,)), ("nus_wide", 7, 7, 192, (3, 5)),
     ("open_images", 7, 7, 96, (10, 20))],
)
def test_dataset_flagfiles_follow_the_paper(monkeypatch, name, rows, epochs, batch, ks):
    monkeypatch.chdir(REPO)  # flagfiles include configs/base.flags relative to the repo
    cfg = _parse(f"--flagfile=configs/{name}.flags")
    assert (cfg.model.num_rows, cfg.epochs, cfg.batch_size, cfg.eval_ks) == (rows, epochs,
                                                                               batch, ks)
    # Paper section 4.1 recipe, shared through base.flags.
    assert cfg.learning_rate == 1e-4 and cfg.weight_decay == 3e-4
    assert cfg.model.dropout == 0.5 and cfg.reg_lambda == 0.3
    assert cfg.use_sdw and cfg.use_reg and cfg.data.augment and cfg.data.cutout > 0
    assert cfg.model.backbone == "resnet50" and cfg.model.weights == "imagenet"
    with open(os.path.join(REPO, "configs", f"{name}.flags")) as f:
        header = f.read().split("\n--")[0]
    assert "python -m sdl_tf.train --flagfile=configs/" in header
    assert "Paper" in header and "Hardware" in header


def test_demo_flagfiles(monkeypatch):
    monkeypatch.chdir(REPO)
    sdl = _parse("--flagfile=configs/demo.flags")
    fast0tag = _parse("--flagfile=configs/demo_fast0tag.flags")
    assert sdl.model.backbone == fast0tag.model.backbone == "tiny"
    assert sdl.model.num_rows > 1 and sdl.use_sdw and sdl.use_reg
    # Fast0Tag = M 1, no SDW, no regulariser; everything else (budget) identical.
    assert (fast0tag.model.num_rows, fast0tag.use_sdw, fast0tag.use_reg) == (1, False, False)
    same = lambda c: dataclasses.replace(  # noqa: E731
        c, model_dir="", model=dataclasses.replace(c.model, num_rows=1), use_sdw=False,
        use_reg=False)
    assert same(sdl) == same(fast0tag)
    assert sdl.model_dir != fast0tag.model_dir


def test_command_line_overrides_flagfile(monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = _parse("--flagfile=configs/coco.flags", "--epochs=1", "--strategy=mirrored",
                 "--mixed_precision")
    assert cfg.epochs == 1 and cfg.strategy == "mirrored" and cfg.mixed_precision
    assert json.loads(json.dumps(cfg.to_dict()))["model"]["num_rows"] == 2
