"""Tests for sdl_tf.config and the flag -> config path of sdl_tf.train (incl. configs/*.flags)."""

import dataclasses
import json
import os

import pytest
from absl import flags

from sdl_tf import config_flags
from sdl_tf.config import (
    LOSS_MODES,
    SCORINGS,
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
    """The TrainConfig `sdl_tf.train` builds from these arguments."""
    fv = flags.FlagValues()
    config_flags.define_flags(TrainConfig, flag_values=fv)
    fv(["train", *args])
    return config_flags.config_from_flags(TrainConfig, fv)


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
    l2 = _parse("--flagfile=configs/demo_l2.flags")
    assert sdl.model.backbone == fast0tag.model.backbone == l2.model.backbone == "small_cnn"
    # The l2 baseline of section 4.1: same M, l2 scoring, no SDW, no regulariser.
    assert (l2.model.num_rows, l2.scoring, l2.use_sdw, l2.use_reg) == (
        sdl.model.num_rows, "l2", False, False)
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


def test_new_recipe_fields_round_trip_and_defaults(tmp_path):
    # Defaults keep every existing config's behaviour: AdamW decaying every variable, no
    # RandAugment.
    d, t = DataConfig(), TrainConfig()
    assert (d.rand_augment, d.augment_mode) == (False, "imagenet")
    assert (t.weight_decay_mode, t.exclude_bias_norm_from_decay) == ("decoupled", False)
    cfg = TrainConfig(model_dir="m", weight_decay_mode="l2", exclude_bias_norm_from_decay=True,
                      data=DataConfig(data_dir="d", augment_mode="resize", rand_augment=True,
                                      rand_augment_factor=0.3))
    path = str(tmp_path / "config.json")
    save_config(cfg, path)
    assert load_config(path) == cfg
    with pytest.raises(ValueError, match="weight_decay_mode"):
        TrainConfig(weight_decay_mode="sgd")
    with pytest.raises(ValueError, match="rand_augment_factor"):
        DataConfig(rand_augment_factor=1.5)
    with pytest.raises(ValueError, match="augment_mode"):
        DataConfig(augment_mode="crop")


def test_new_flags_reach_the_config():
    cfg = _parse("--data_dir=d", "--model_dir=m", "--augment_mode=resize", "--rand_augment",
                 "--rand_augment_factor=0.25", "--weight_decay_mode=l2",
                 "--exclude_bias_norm_from_decay")
    assert (cfg.data.augment_mode, cfg.data.rand_augment, cfg.data.rand_augment_factor) == (
        "resize", True, 0.25)
    assert (cfg.weight_decay_mode, cfg.exclude_bias_norm_from_decay) == ("l2", True)
    default = _parse("--data_dir=d", "--model_dir=m")
    assert default == TrainConfig(model_dir="m", data=DataConfig(data_dir="d"))


def test_coco_authors_flagfile_follows_the_released_script(monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = _parse("--flagfile=configs/coco_authors.flags")
    # Alibaba-MIIL/ZS_SDL train.py (docs/recipes.md cites the lines).
    assert (cfg.model.backbone, cfg.model.image_size, cfg.model.num_rows) == ("tresnet_m", 224, 2)
    assert cfg.model.weights.endswith(".weights.h5")
    assert (cfg.epochs, cfg.batch_size, cfg.learning_rate, cfg.warmup_fraction) == (
        10, 32, 2.5e-5, 0.1)
    assert (cfg.div_factor, cfg.final_div_factor) == (25.0, 1e4)
    assert (cfg.weight_decay, cfg.weight_decay_mode, cfg.exclude_bias_norm_from_decay) == (
        3e-4, "l2", True)
    assert (cfg.loss_mode, cfg.reg_lambda, cfg.use_sdw, cfg.use_reg) == (
        "official", 0.01, True, True)
    assert (cfg.data.augment, cfg.data.augment_mode, cfg.data.cutout, cfg.data.rand_augment) == (
        True, "resize", 0.5, True)
    assert cfg.mixed_precision and cfg.eval_ks == (3,) and cfg.model.dropout == 0.0
    # The paper's COCO recipe stays as it was.
    paper = _parse("--flagfile=configs/coco.flags")
    assert (paper.weight_decay_mode, paper.loss_mode, paper.data.rand_augment) == (
        "decoupled", "paper", False)
    assert paper.data.augment_mode == "imagenet" and not paper.exclude_bias_norm_from_decay


def test_scorings_and_loss_modes_are_defined_once_here():
    fv = flags.FlagValues()
    config_flags.define_flags(TrainConfig, flag_values=fv)
    assert SCORINGS == ("max", "l2") and LOSS_MODES == ("paper", "official")
    assert fv["scoring"].parser.enum_values == list(SCORINGS)
    assert fv["loss_mode"].parser.enum_values == list(LOSS_MODES)
    assert EvalConfig(model_dir="m", scoring="l2").scoring == "l2"
    with pytest.raises(ValueError, match="scoring"):
        TrainConfig(scoring="mean")
    with pytest.raises(ValueError, match="loss_mode"):
        TrainConfig(loss_mode="torch")


def _flag_lines(name):
    with open(os.path.join(REPO, "configs", name)) as f:
        return [ln.strip() for ln in f if ln.strip().startswith("--")]


def test_base_flags_repeat_no_default():
    defaults = _parse("--data_dir=d", "--model_dir=m")
    for line in _flag_lines("base.flags"):
        assert _parse("--data_dir=d", "--model_dir=m", line) != defaults, line


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(os.path.join(REPO, "configs"))
                                        if f.endswith(".flags")))
def test_every_config_opens_with_a_header_and_one_comment_line_per_flag_at_most(name):
    with open(os.path.join(REPO, "configs", name)) as f:
        lines = [ln.rstrip("\n") for ln in f]
    assert lines[0].startswith("# "), name
    header = lines[:next(i for i, ln in enumerate(lines) if ln.startswith("--"))]
    text = "\n".join(header)
    # big_vision's config headers: the command, the hardware and time, the expected result.
    assert "# Command:" in text and "# Hardware:" in text, name
    if name != "base.flags":  # included by the others, never run on its own
        assert "python -m sdl_tf.train --flagfile=configs/" + name in text, name
        assert "# Expect:" in text or "# Paper" in text, name
    body = lines[len(header):]
    runs = [0]  # comment lines in a row after the header
    for ln in body:
        runs.append(runs[-1] + 1 if ln.startswith("#") else 0)
    assert max(runs) <= 1, (name, "more than one comment line in a row after the header")
