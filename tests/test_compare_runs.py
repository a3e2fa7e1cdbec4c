"""Tests for scripts/compare_runs.py (the demo's comparison table)."""

import importlib.util
import json
import os

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def _load():
    spec = importlib.util.spec_from_file_location(
        "compare_runs", os.path.join(REPO, "scripts", "compare_runs.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_json(path, method, zsl_map, gzsl_f1):
    result = {"method": method, "ks": [3],
              "zsl": {"mAP": zsl_map, "P@3": 10.0, "R@3": 20.0, "F1@3": 13.33},
              "gzsl": {"mAP": 5.0, "P@3": 1.0, "R@3": None, "F1@3": gzsl_f1}}
    path.write_text(json.dumps(result))
    return str(path)


def test_one_row_per_run_and_task(tmp_path):
    compare_runs = _load()
    a = _run_json(tmp_path / "a.json", "SDL (M=3)", 83.14, 13.8)
    b = _run_json(tmp_path / "b.json", "Random (seed 0)", 24.66, 10.7)
    out = tmp_path / "table.md"
    assert compare_runs.main(["compare_runs.py", a, b, f"--out={out}"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "| Method | Task | mAP | P@3 | R@3 | F1@3 |"
    assert lines[2] == "| SDL (M=3) | ZSL | 83.1 | 10.0 | 20.0 | 13.3 |"
    # A missing value prints "-", numbers one decimal.
    assert lines[3] == "| SDL (M=3) | GZSL | 5.0 | 1.0 | - | 13.8 |"
    assert lines[4].startswith("| Random (seed 0) | ZSL | 24.7 |")
    assert len(lines) == 6


def test_no_arguments_is_a_usage_error(capsys):
    assert _load().main(["compare_runs.py"]) == 2
    assert "Usage" in capsys.readouterr().err
