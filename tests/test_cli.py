"""Tests for sdl_tf.cli and the entry points: bad inputs print one actionable line
(`<command>: error: <message>`, status 1), bugs keep their traceback; every console script of
setup.cfg resolves to a callable `run`."""

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


@pytest.mark.parametrize(
    "args, expect",
    [
        (["sdl_tf.train", "--flagfile=configs/demo.flags", "--model_dir={tmp}/run", "--epochs=0"],
         "sdl_tf.train: error: epochs must be >= 1, got 0"),
        (["sdl_tf.export", "--model_dir={tmp}/empty", "--keras_model={tmp}/m.keras",
          "--checkpoint"],
         "sdl_tf.export: error: give at most one of --keras_model and --checkpoint"),
        (["sdl_tf.retrieve", "query", "--index={tmp}/none.npz", "--tags=a"],
         "sdl_tf.retrieve: error: index file {tmp}/none.npz not found"),
        (["sdl_tf.serving_client", "--server=http://127.0.0.1:9", "--images={tmp}/img.png"],
         "sdl_tf.serving_client: error: cannot reach http://127.0.0.1:9/"),
        (["sdl_tf.convert_weights", "--from={tmp}/bad.safetensors", "--to={tmp}/w.weights.h5"],
         "sdl_tf.convert_weights: error: {tmp}/bad.safetensors: "),
    ],
    ids=["train_bad_flag_value", "export_conflicting_flags", "retrieve_no_index",
         "serving_client_no_server", "convert_weights_bad_file"],
)
def test_bad_inputs_give_one_line_and_status_1(tmp_path, args, expect):
    from PIL import Image

    (tmp_path / "empty").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "img.png")
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 64)
    code, lines = _run(*[a.format(tmp=tmp_path) for a in args])
    assert code == 1 and len(lines) == 1, (code, lines)
    assert lines[0].startswith(expect.format(tmp=tmp_path)), lines[0]


# cli.run around a `main` that raises `error`, as a program named sdl-x.
_RAISE = """
import sys
from sdl_tf import cli, errors

class LibraryError(errors.SDLError):
    pass

def main(argv):
    raise {error}

sys.argv = ["sdl-x"]
cli.run(main)
"""


@pytest.mark.parametrize("error, line", [
    ('errors.SDLError("bad --k=0", "use --k=1")', "sdl-x: error: bad --k=0; use --k=1"),
    ('LibraryError("label \'x\' has no vector")', "sdl-x: error: label 'x' has no vector"),
    ('errors.MissingPathError("no dir d", errors.missing_data_hint("data/coco"))',
     "sdl-x: error: no dir d; create it with `python -m data_prep.coco ... "
     "--output_dir=data/coco`"),
    ('errors.ConfigError("epochs must be >= 1")', "sdl-x: error: epochs must be >= 1"),
    ('PermissionError(13, "Permission denied", "/p")',
     "sdl-x: error: [Errno 13] Permission denied: '/p'"),
    ('IsADirectoryError("a dir")', "sdl-x: error: a dir"),
])
def test_run_prints_one_line_for_bad_inputs(error, line):
    proc = subprocess.run([sys.executable, "-c", _RAISE.format(error=error)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stderr) == (1, line + "\n")


def test_run_keeps_the_traceback_of_a_bug():
    proc = subprocess.run([sys.executable, "-c", _RAISE.format(error='KeyError("bug")')],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "KeyError: 'bug'" in proc.stderr
    assert "error:" not in proc.stderr


def test_run_ends_quietly_when_the_reader_goes_away():
    script = _RAISE.format(error="SystemExit(0)").replace(
        "    raise SystemExit(0)", "    for i in range(10 ** 6):\n        print(i)")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "0\n"
    proc.stdout.close()  # as `| head -1` does
    assert proc.wait(timeout=120) == 1
    assert proc.stderr.read() == ""


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
