"""Tests for scripts/compare_runs.py (the demo's comparison table)."""

import json

from tests.helpers.scripts import load_script


def _load():
    return load_script("compare_runs")


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


def _seed_json(path, method, zsl_map, gzsl_map, scoring="max", diverse_f1=None):
    result = {"method": method, "ks": [3], "scoring": scoring,
              "zsl": {"mAP": zsl_map, "F1@3": 10.0}, "gzsl": {"mAP": gzsl_map, "F1@3": None}}
    if diverse_f1 is not None:
        result["diverse"] = {"min_labels": 6, "k": 10,
                             "zsl": {"num_images": 0, "F1@10": None},
                             "gzsl": {"num_images": 40, "F1@10": diverse_f1}}
    path.write_text(json.dumps(result))
    return str(path)


def test_method_name_drops_the_seed_and_names_the_l2_baseline():
    compare_runs = _load()
    assert compare_runs.method_name({"method": "Random (seed 2)"}) == "Random"
    assert compare_runs.method_name({"method": "SDL (M=3)", "scoring": "max"}) == "SDL (M=3)"
    assert compare_runs.method_name({"method": "SDL (M=3)", "scoring": "l2"}) == "l2 (M=3)"


def test_mean_std_by_hand():
    compare_runs = _load()
    # mean 2, sample std sqrt(((1-2)^2 + 0 + (3-2)^2) / 2) = 1.
    assert compare_runs.mean_std([1.0, 2.0, 3.0]) == "2.0 ± 1.0"
    assert compare_runs.mean_std([4.0]) == "4.0"
    assert compare_runs.mean_std([None, float("nan")]) == "-"


def test_seeds_aggregate_one_row_per_method_and_task(tmp_path):
    compare_runs = _load()
    paths = [_seed_json(tmp_path / f"sdl{s}.json", "SDL (M=3)", 80.0 + 2 * s, 60.0,
                        diverse_f1=30.0 + s) for s in range(3)]
    paths += [_seed_json(tmp_path / f"l2{s}.json", "SDL (M=3)", 50.0, 40.0, scoring="l2")
              for s in range(3)]
    paths += [_seed_json(tmp_path / f"rnd{s}.json", f"Random (seed {s})", 20.0, 10.0)
              for s in range(2)]
    out = tmp_path / "table.md"
    assert compare_runs.main(["compare_runs.py", "--seeds", *paths, f"--out={out}"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "| Method | Task | seeds | mAP | F1@3 | diverse F1@10 |"
    assert lines[2] == "| SDL (M=3) | ZSL | 3 | 82.0 ± 2.0 | 10.0 ± 0.0 | - |"
    assert lines[3] == "| SDL (M=3) | GZSL | 3 | 60.0 ± 0.0 | - | 31.0 ± 1.0 |"
    assert lines[4].startswith("| l2 (M=3) | ZSL | 3 | 50.0 ± 0.0 |")
    assert lines[6].startswith("| Random | ZSL | 2 | 20.0 ± 0.0 |")
    assert len([line for line in lines if line.startswith("| ")]) == 1 + 3 * 2  # header, 3 x 2 rows
    assert "more than 6 positives (40 test images in GZSL" in out.read_text()
