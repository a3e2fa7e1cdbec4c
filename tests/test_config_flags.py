"""Tests for sdl_tf.config_flags: absl flags generated from config dataclasses."""

from __future__ import annotations

import dataclasses
import os

import pytest
from absl import flags

from sdl_tf import config_flags
from sdl_tf.config import DataConfig, ModelConfig, TrainConfig
from sdl_tf.config_flags import field

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


@dataclasses.dataclass(frozen=True)
class Inner:
    size: int = field(3, "Inner size.", lower_bound=1)
    rate: float = field(0.5, "Inner rate.")
    hidden: int = field(7, "Not a flag.", flag=False)


@dataclasses.dataclass(frozen=True)
class Toy:
    path: str = field("", "Required path.", required=True)
    inner: Inner = dataclasses.field(default_factory=Inner)
    name: str = field("a", "A name.")
    mode: str = field("flip", "A mode.", choices=("imagenet", "flip"))
    verbose: bool = field(False, "Verbose.")
    ks: tuple[int, ...] = field((3, 5), "K values.")
    words: tuple[str, ...] = field((), "Words.")
    limit: int | None = field(None, "Optional limit.")
    skipped: str = field("x", "Excluded by the caller.")


def _define(cls=Toy, **kwargs) -> flags.FlagValues:
    fv = flags.FlagValues()
    config_flags.define_flags(cls, flag_values=fv, **kwargs)
    return fv


def test_flag_types_defaults_and_help():
    fv = _define(exclude=("skipped",))
    assert set(fv) == {"path", "size", "rate", "name", "mode", "verbose", "ks", "words", "limit"}
    parsers = {n: type(fv[n].parser).__name__ for n in fv}
    assert parsers == {"path": "ArgumentParser", "size": "IntegerParser", "rate": "FloatParser",
                       "name": "ArgumentParser", "mode": "EnumParser", "verbose": "BooleanParser",
                       "ks": "ListParser", "words": "ListParser", "limit": "IntegerParser"}
    assert fv["mode"].parser.enum_values == ["imagenet", "flip"]
    assert fv["size"].parser.lower_bound == 1
    # Required flags default to None (absl's convention); the others to the field default.
    assert (fv["path"].default, fv["ks"].default, fv["words"].default, fv["limit"].default) == (
        None, ["3", "5"], [], None)
    assert fv["rate"].help == "Inner rate." and fv["mode"].help.endswith("A mode.")
    # The flags belong to the module calling define_flags (absl key flags, listed by --help).
    assert fv.find_module_defining_flag("size") == __name__


def test_round_trip_flags_to_config():
    fv = _define(exclude=("skipped",))
    fv(["prog", "--path=p", "--size=4", "--rate=0.25", "--mode=imagenet", "--verbose",
        "--ks=1,10", "--words=a, b", "--limit=9"])
    cfg = config_flags.config_from_flags(Toy, fv, exclude=("skipped",))
    assert cfg == Toy(path="p", inner=Inner(size=4, rate=0.25), mode="imagenet", verbose=True,
                      ks=(1, 10), words=("a", "b"), limit=9)
    fv.unparse_flags()
    fv(["prog", "--path=q"])
    assert config_flags.config_from_flags(Toy, fv, exclude=("skipped",)) == Toy(path="q")
    # Values given directly replace flags (e.g. a field parsed from a hand-defined flag).
    assert config_flags.config_from_flags(Toy, fv, skipped="y").skipped == "y"


def test_required_bounds_enum_and_bad_types():
    fv = _define(exclude=("skipped",))
    with pytest.raises(flags.IllegalFlagValueError, match="path"):
        fv(["prog"])
    for bad in ("--size=0", "--mode=crop"):
        with pytest.raises(flags.IllegalFlagValueError):
            _define(exclude=("skipped",))(["prog", "--path=p", bad])
    fv = _define(exclude=("skipped",), required=("name",), overrides={"size": 9})
    assert (fv["name"].default, fv["size"].default) == (None, 9)

    @dataclasses.dataclass
    class Bad:
        pairs: tuple[tuple[str, str], ...] = ()

    with pytest.raises(TypeError, match="Bad.pairs"):
        _define(Bad)
    assert not list(_define(Bad, exclude=("pairs",)))


def _flattened_fields(cls):
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default_factory):
            yield from _flattened_fields(f.default_factory)
        else:
            yield f


# The training flags as they were hand-written in sdl_tf/train.py; names must not change
# (configs/*.flags and every run's flags.txt use them); row_scale, pooling,
# cache_backbone_features and feature_cache_dir were added after.
TRAIN_FLAGS = {
    "augment", "augment_mode", "backbone", "batch_size", "cache_backbone_features",
    "cache_train_images", "checkpoint_every_steps", "cutout",
    "data_dir", "div_factor", "dropout", "epochs", "eval_batch_size", "eval_ks",
    "exclude_bias_norm_from_decay", "feature_cache_dir", "final_div_factor", "image_size",
    "jit_compile",
    "learning_rate", "log_every_steps", "loss_mode", "max_checkpoints", "max_eval_images",
    "min_crop_area", "mixed_precision", "model_dir", "num_parallel_calls", "num_rows",
    "overwrite", "pooling", "rand_augment", "rand_augment_factor", "reg_lambda", "row_scale",
    "scoring",
    "seed",
    "shuffle_buffer", "steps_per_epoch", "strategy", "tpu_address", "train_split",
    "trainable_backbone", "use_reg", "use_sdw", "val_fraction", "val_split", "warmup_fraction",
    "weight_decay", "weight_decay_mode", "weights",
}


def test_every_train_config_field_has_a_flag_with_help():
    fv = _define(TrainConfig)
    assert set(fv) == TRAIN_FLAGS
    fields = list(_flattened_fields(TrainConfig))
    for f in fields:
        assert f.metadata.get("help"), f.name  # every field documented, flag or not
        assert (f.name in fv) == f.metadata.get("flag", True), f.name
    assert {f.name for f in fields} - set(fv) == {"dim", "test_split", "cache_eval"}
    assert fv["model_dir"].default is None and fv["data_dir"].default is None  # required
    assert fv["strategy"].parser.enum_values == ["default", "mirrored", "multi_worker", "tpu"]
    assert fv["augment_mode"].parser.enum_values == ["imagenet", "flip", "resize"]


def _parse_train(*args) -> tuple[TrainConfig, str]:
    fv = _define(TrainConfig)
    fv(["train", *args])
    cfg = config_flags.config_from_flags(TrainConfig, fv)
    # As sdl_tf.train writes flags.txt: sorted, --overwrite left out.
    return cfg, config_flags.flagfile_text(cfg)


def test_coco_flagfile_parses_to_the_same_config(monkeypatch):
    monkeypatch.chdir(REPO)  # the flagfile includes configs/base.flags relative to the repo
    cfg, text = _parse_train("--flagfile=configs/coco.flags")
    # Recorded from the hand-written flags before the generator replaced them.
    assert cfg == TrainConfig(
        model_dir="runs/coco", data=DataConfig(data_dir="data/coco", shuffle_buffer=4096),
        model=ModelConfig(num_rows=2), epochs=20, batch_size=32, checkpoint_every_steps=1000,
        log_every_steps=50, eval_ks=(3,), eval_batch_size=128)
    assert "--eval_ks=3\n" in text and "--tpu_address=\n" in text


def test_demo_flagfile_parses_to_the_same_config_and_flags_text(monkeypatch):
    monkeypatch.chdir(REPO)
    cfg, text = _parse_train("--flagfile=configs/demo.flags")
    assert cfg == TrainConfig(
        model_dir="demo_out/sdl",
        data=DataConfig(data_dir="demo_out/data", shuffle_buffer=1024, augment_mode="flip",
                        cache_train_images=True),
        model=ModelConfig(backbone="small_cnn", weights="none", image_size=64, num_rows=4,
                          dropout=0.2, row_scale=8.0, pooling="attention"),
        epochs=12, steps_per_epoch=100, batch_size=32, learning_rate=2e-3, reg_lambda=0.03,
        checkpoint_every_steps=500, log_every_steps=20, eval_batch_size=128, eval_ks=(3, 5))
    # flags.txt of a demo run, recorded before the generator replaced the hand-written flags
    # (row_scale=8.0, pooling=attention and cache_train_images added, epochs 15 -> 12 and
    # num_rows 3 -> 4 when demo.flags adopted them; the cache_backbone_features and
    # feature_cache_dir defaults since).
    assert text.splitlines() == (
        "--augment --augment_mode=flip --backbone=small_cnn --batch_size=32 "
        "--nocache_backbone_features "
        "--cache_train_images --checkpoint_every_steps=500 --cutout=0.5 "
        "--data_dir=demo_out/data --div_factor=25.0 "
        "--dropout=0.2 --epochs=12 --eval_batch_size=128 --eval_ks=3,5 "
        "--noexclude_bias_norm_from_decay --feature_cache_dir= --final_div_factor=10000.0 "
        "--image_size=64 "
        "--nojit_compile --learning_rate=0.002 --log_every_steps=20 --loss_mode=paper "
        "--max_checkpoints=3 --max_eval_images=0 --min_crop_area=0.25 --nomixed_precision "
        "--model_dir=demo_out/sdl --num_parallel_calls=-1 --num_rows=4 --pooling=attention "
        "--norand_augment "
        "--rand_augment_factor=0.5 --reg_lambda=0.03 --row_scale=8.0 --scoring=max --seed=0 "
        "--shuffle_buffer=1024 --steps_per_epoch=100 --strategy=default --tpu_address= "
        "--train_split=train --trainable_backbone --use_reg --use_sdw --val_fraction=0.0 "
        "--val_split=val --warmup_fraction=0.2 --weight_decay=0.0003 "
        "--weight_decay_mode=decoupled --weights=none").split(" ")


def _parse_flagfile_text(cls, text, tmp_path):
    path = tmp_path / "flags.txt"
    path.write_text(text)
    fv = _define(cls)
    fv(["prog", f"--flagfile={path}"])
    return config_flags.config_from_flags(cls, fv)


def test_flagfile_text_round_trips_to_an_equal_config(tmp_path):
    cfg = TrainConfig(
        model_dir="runs/a b", data=DataConfig(data_dir="gs://bucket/d", augment=False,
                                              augment_mode="resize", cutout=0.0),
        model=ModelConfig(backbone="hub:https://x/y,z", num_rows=3, trainable_backbone=False,
                          row_scale=8.0, pooling="attention"),
        learning_rate=2e-3, final_div_factor=1e4, eval_ks=(1, 10, 100), scoring="l2",
        loss_mode="official", use_sdw=False, tpu_address="", overwrite=True)
    text = config_flags.flagfile_text(cfg)
    assert "--overwrite" not in text and "--nooverwrite" not in text  # rerunning resumes
    assert "--noaugment\n" in text and "--eval_ks=1,10,100\n" in text
    assert _parse_flagfile_text(TrainConfig, text, tmp_path) == cfg.replace(overwrite=False)
    # Every flag, default or not, is written: a later change of a default cannot change a rerun.
    assert len(text.splitlines()) == len(_define(TrainConfig)) - 1
    assert _parse_flagfile_text(TrainConfig, config_flags.flagfile_text(
        TrainConfig(model_dir="m", data=DataConfig(data_dir="d"))), tmp_path) == TrainConfig(
        model_dir="m", data=DataConfig(data_dir="d"))


def test_flagfile_text_quotes_lists_and_leaves_out_none(tmp_path):
    cfg = Toy(path="p", words=("a,b", "c"), skipped="y")
    text = config_flags.flagfile_text(cfg, exclude=())
    assert "--limit" not in text and '--words="a,b",c\n' in text and "--hidden" not in text
    assert _parse_flagfile_text(Toy, text, tmp_path) == cfg
    assert "--skipped" not in config_flags.flagfile_text(cfg, exclude=("skipped",))

