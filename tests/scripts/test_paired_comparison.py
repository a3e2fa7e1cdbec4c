"""Tests for scripts/paired_comparison.py: run discovery, mean ± std, paired differences."""

import json
import math
import os

import pytest

from tests.helpers.scripts import load_script

paired = load_script("paired_comparison")


def _write(path, zsl, gzsl):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    metrics = {"ks": [3], "zsl": {"mAP": zsl, "F1@3": zsl / 2},
               "gzsl": {"mAP": gzsl, "F1@3": gzsl / 2},
               "row_usage": {"num_rows": 2, "share": [0.25, 0.75] if zsl > 12 else [0.5, 0.5],
                             "mean_cosine": 0.1, "mean_image_entropy_normalized": 0.5}}
    with open(path, "w") as f:
        json.dump(metrics, f)


@pytest.fixture
def runs_dir(tmp_path):
    # SDL leads Fast0Tag by 1, 2, 3 ZSL points in the three (fold, seed) pairs.
    for (fold, seed), lead in zip([(0, 0), (0, 1), (1, 0)], [1.0, 2.0, 3.0], strict=True):
        base = tmp_path / f"fold{fold}" / f"seed{seed}"
        _write(str(base / "sdl" / "eval" / "test_metrics.json"), 10 + lead, 20.0)
        _write(str(base / "fast0tag" / "eval" / "test_metrics.json"), 10.0, 21.0)
    _write(str(tmp_path / "fold0" / "random" / "random_test_metrics.json"), 3.0, 1.0)
    _write(str(tmp_path / "fold0" / "supervised" / "eval" / "test_metrics.json"), 50.0, 30.0)
    _write(str(tmp_path / "notes" / "test_metrics.json"), 0.0, 0.0)  # not a fold: ignored
    return str(tmp_path)


def test_runs_are_found_by_method_fold_and_seed(runs_dir):
    runs = paired.load_runs(runs_dir)
    assert sorted(runs) == sorted([("sdl", 0, 0), ("sdl", 0, 1), ("sdl", 1, 0),
                                   ("fast0tag", 0, 0), ("fast0tag", 0, 1), ("fast0tag", 1, 0),
                                   ("random", 0, None), ("supervised", 0, None)])


def test_report_tables(runs_dir):
    text = paired.report(runs_dir)
    # SDL ZSL 11, 12, 13: mean 12, sample std 1.
    assert "| SDL | 3 | 12.0 ± 1.0 | 20.0 ± 0.0 | 6.0 ± 0.5 | 10.0 ± 0.0 |" in text
    assert "| random scores | 1 | 3.0 ± 0.0 |" in text
    # Differences 1, 2, 3: mean 2, SE = 1 / sqrt(3) = 0.577, mean / SE = 3.5.
    se = 1 / math.sqrt(3)
    assert (f"| Fast0Tag | ZSL mAP | 3 | +2.00 | {se:.2f} | {2 / se:.1f} | +1.00 | 3 of 3 |"
            in text)
    assert "| Fast0Tag | GZSL mAP | 3 | -1.00 | 0.00 | - | -1.00 | 0 of 3 |" in text
    assert "| 1 | 0 | 13.0 | 20.0 | 10.0 | 21.0 |" in text
    # Shares sorted per run, then averaged: (0.5, 0.5), (0.5, 0.5), (0.75, 0.25).
    assert "| SDL | 2 | 0.58 / 0.42 | 0.10 | 0.50 |" in text


def test_no_results_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no .*test_metrics.json"):
        paired.load_runs(str(tmp_path))
