"""Tests for sdl_tf.cli and the entry points: missing inputs print one actionable line; every
console script of setup.cfg resolves to a callable `run`."""

import configparser
import importlib
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def _run(*args, cwd=ROOT):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    # TF's C++ start-up log lines are not ours; everything else on stderr is.
    lines = [ln for ln in proc.stderr.splitlines()
             if ln.strip() and not ln.startswith(("I0000", "E0000", "W0000", "WARNING: All log"))]
    return proc.returncode, lines


@pytest.mark.parametrize(
    "args, expect",
    [
        (["sdl_tf.train", "--flagfile=configs/coco.flags", "--model_dir={tmp}/run"],
         ["'data/coco' does not exist", "python -m data_prep.coco", "--output_dir=data/coco"]),
        (["sdl_tf.train", "--flagfile=configs/demo.flags", "--data_dir={tmp}/empty",
          "--model_dir={tmp}/run"],
         ["{tmp}/empty' is not a prepared dataset (no labels.json)", "python -m data_prep."]),
        (["sdl_tf.evaluate", "--model_dir={tmp}/nothing"],
         ["{tmp}/nothing' does not exist", "python -m sdl_tf.train"]),
        (["sdl_tf.evaluate", "--model_dir={tmp}/empty", "--data_dir={tmp}/empty"],
         ["{tmp}/empty' has no final.keras", "python -m sdl_tf.train"]),
        (["sdl_tf.export", "--model_dir={tmp}/empty", "--export_dir={tmp}/exports"],
         ["{tmp}/empty' has no final.keras", "python -m sdl_tf.train"]),
        (["sdl_tf.predict", "--model={tmp}/nothing", "--images={tmp}/img.png"],
         ["{tmp}/nothing' is neither a SavedModel export", "python -m sdl_tf.export"]),
    ],
    ids=["train_no_data_dir", "train_empty_data_dir", "evaluate_no_model_dir",
         "evaluate_empty_model_dir", "export_empty_model_dir", "predict_no_export"],
)
def test_missing_inputs_give_one_line_naming_path_and_command(tmp_path, args, expect):
    from PIL import Image

    (tmp_path / "empty").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "img.png")
    code, lines = _run(*[a.format(tmp=tmp_path) for a in args])
    assert code != 0
    assert len(lines) == 1, lines  # one line, no traceback
    for part in expect:
        assert part.format(tmp=tmp_path) in lines[0], lines[0]


def test_evaluate_with_missing_split_names_the_split(tmp_path):
    """A data dir with a label space but no shards of the split."""
    import numpy as np

    from sdl_tf.data import pipeline
    from sdl_tf.labels.label_space import LabelSpace

    LabelSpace.create(["a", "b"], [False, True], np.eye(2), source="test").save(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"no 'test' shards .*python -m data_prep\."):
        pipeline.require_dataset(str(tmp_path), ["test"])
    pipeline.require_dataset(str(tmp_path))  # the label space alone is enough when no split asked


@pytest.mark.parametrize("module", ["coco", "nus_wide", "open_images", "manifest"])
def test_converter_help_lists_common_flags(module):
    proc = subprocess.run([sys.executable, "-m", f"data_prep.{module}", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    for flag in ("--output_dir", "--word_vectors", "--num_shards", "--max_side", "--num_workers"):
        assert flag in proc.stdout, (flag, proc.stdout[-2000:])


def _console_scripts() -> dict[str, str]:
    """setup.cfg's console_scripts: script name -> "module:function"."""
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    lines = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=", 1)) for line in lines)


def test_console_scripts_resolve_to_callable_run():
    scripts = _console_scripts()
    assert {"sdl-train", "sdl-evaluate", "sdl-export", "sdl-predict", "sdl-retrieve",
            "sdl-serving-client", "sdl-convert-weights", "sdl-prep-demo", "sdl-prep-manifest",
            "sdl-prep-coco", "sdl-prep-nus-wide", "sdl-prep-open-images",
            "sdl-prep-mosaics"} == set(scripts)
    for script, target in scripts.items():
        module, function = target.split(":")
        assert function == "run", (script, target)
        entry = getattr(importlib.import_module(module), function)
        assert callable(entry), (script, target)


def test_installed_console_script_runs():
    path = shutil.which("sdl-train") or shutil.which(
        "sdl-train", path=os.path.dirname(sys.executable))
    if path is None:
        pytest.skip("sdl-train is not installed (pip install -e .)")
    proc = subprocess.run([path, "--helpshort"], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    # absl prints the help and exits with status 1 (app.HelpshortFlag), the same as
    # `python -m sdl_tf.train --helpshort`; what matters is the help, not a traceback.
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "--model_dir" in proc.stdout and "--epochs" in proc.stdout, proc.stdout[-2000:]


def test_user_error_types_come_from_the_library_modules(monkeypatch):
    from sdl_tf import cli
    from sdl_tf.modeling import tresnet_weights
    from sdl_tf.serving import client, retrieval, tagger

    monkeypatch.setattr(sys, "argv", ["sdl-train"])
    types = cli._user_error_types()
    for error in (tagger.PredictError, retrieval.RetrievalError, client.ServingError,
                  tresnet_weights.ConversionError):
        assert error in types
    for module, name in cli._PROJECT_ERRORS:  # every entry names a real class
        assert isinstance(getattr(importlib.import_module(module), name), type), (module, name)


def test_console_script_error_names_the_script(tmp_path):
    path = shutil.which("sdl-evaluate") or shutil.which(
        "sdl-evaluate", path=os.path.dirname(sys.executable))
    if path is None:
        pytest.skip("sdl-evaluate is not installed (pip install -e .)")
    proc = subprocess.run([path, f"--model_dir={tmp_path}/nothing"], capture_output=True,
                          text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    lines = [ln for ln in proc.stderr.splitlines()
             if ln.strip() and not ln.startswith(("I0000", "E0000", "W0000", "WARNING: All log"))]
    assert proc.returncode == 1 and len(lines) == 1, lines
    assert lines[0].startswith("sdl-evaluate: error: ") and "does not exist" in lines[0], lines
