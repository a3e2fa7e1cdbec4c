"""Tests for sdl_tf.evaluation.row_usage: which row of A wins each image's top-K tags (Figure 3
made measurable), streamed, and its markdown table."""

import json

import numpy as np
import pytest

from sdl_tf.evaluation import row_usage
from sdl_tf.modeling.scoring import numpy_scores


def _usage(matrices, vectors, k, scoring="max"):
    usage = row_usage.RowUsage(vectors, k, scoring)
    rows = usage.update(matrices, numpy_scores(matrices, vectors, scoring))
    return usage.result(), rows


def test_row_usage_one_row_wins_everything():
    # Row 0 is the sum of all label vectors (scores 1); rows 1, 2 point away (scores -1, -2).
    vectors = np.eye(4, dtype=np.float32)
    a = np.stack([np.ones(4), -np.ones(4), -2 * np.ones(4)]).astype(np.float32)
    result, rows = _usage(np.stack([a, a]), vectors, k=3)
    assert rows.shape == (2, 3) and (rows == 0).all()
    assert result["share"] == [1.0, 0.0, 0.0]
    assert result["entropy"] == 0.0 and result["entropy_normalized"] == 0.0
    assert result["mean_image_entropy"] == 0.0
    assert result["num_rows"] == 3 and result["num_images"] == 2 and result["k"] == 3
    # cos(1, -1) = -1, cos(1, -2) = -1, cos(-1, -2) = 1 -> mean -1/3.
    assert result["mean_cosine"] == pytest.approx(-1 / 3)


def test_row_usage_orthogonal_rows_split_the_tags():
    # 4 labels, M = 2 orthogonal rows: row 0 wins labels 0, 1; row 1 wins labels 2, 3.
    vectors = np.eye(4, dtype=np.float32)
    a = np.array([[2, 1, 0, 0], [0, 0, 1.5, 0.5]], np.float32)
    result, rows = _usage(a[None], vectors, k=4)
    # Top-4 in score order: label 0 (2), 2 (1.5), 1 (1), 3 (0.5) -> rows 0, 1, 0, 1.
    np.testing.assert_array_equal(rows, [[0, 1, 0, 1]])
    assert result["share"] == [0.5, 0.5]
    assert result["entropy"] == pytest.approx(np.log(2))
    assert result["entropy_normalized"] == pytest.approx(1.0)
    assert result["mean_image_entropy_normalized"] == pytest.approx(1.0)
    assert result["mean_cosine"] == pytest.approx(0.0, abs=1e-7)
    # Top-2 only: labels 0 and 2, one per row; top-1: label 0, row 0 only.
    assert _usage(a[None], vectors, k=2)[0]["share"] == [0.5, 0.5]
    assert _usage(a[None], vectors, k=1)[0]["share"] == [1.0, 0.0]


def test_row_usage_identical_rows_and_aggregation():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(10, 8)).astype(np.float32)
    row = rng.normal(size=8).astype(np.float32)
    same = np.stack([row, 3 * row, row])[None]  # identical directions: cosine 1
    result, rows = _usage(same, vectors, k=5)
    assert result["mean_cosine"] == pytest.approx(1.0)
    # Per-image entropy averages the images; the share entropy pools the tags first.
    vectors = np.eye(4, dtype=np.float32)
    img0 = np.array([[1, 1, 1, 1], [0, 0, 0, 0]], np.float32)  # row 0 wins all 4
    img1 = np.array([[0, 0, 0, 0], [1, 1, 1, 1]], np.float32)  # row 1 wins all 4
    result, _ = _usage(np.stack([img0, img1]), vectors, k=4)
    assert result["share"] == [0.5, 0.5] and result["entropy"] == pytest.approx(np.log(2))
    assert result["mean_image_entropy"] == 0.0
    # A zero row has no direction: cosine 0 with the other, not NaN.
    assert result["mean_cosine"] == 0.0


def test_row_usage_streams_like_one_batch():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(12, 6)).astype(np.float32)
    matrices = rng.normal(size=(9, 3, 6)).astype(np.float32)
    whole, _ = _usage(matrices, vectors, k=5)
    usage = row_usage.RowUsage(vectors, 5)
    for lo in range(0, 9, 4):
        usage.update(matrices[lo:lo + 4], numpy_scores(matrices[lo:lo + 4], vectors))
    streamed = usage.result()
    for key in ("share", "entropy", "mean_image_entropy", "mean_cosine"):
        np.testing.assert_allclose(streamed[key], whole[key], rtol=1e-6)
    assert sum(whole["share"]) == pytest.approx(1.0)
    # By hand: the arg-max row of every top-5 label of every image.
    scores = numpy_scores(matrices, vectors)
    counts = np.zeros(3)
    for i in range(9):
        for c in np.argsort(-scores[i], kind="stable")[:5]:
            counts[np.argmax(matrices[i] @ vectors[c])] += 1
    np.testing.assert_allclose(whole["share"], counts / counts.sum())


def test_row_usage_single_row():
    vectors = np.eye(3, dtype=np.float32)
    result, rows = _usage(np.ones((2, 1, 3), np.float32), vectors, k=10)  # k capped at C = 3
    assert result["k"] == 3 and (rows == 0).all()
    assert result["share"] == [1.0] and result["entropy"] == 0.0
    assert result["entropy_normalized"] is None and result["mean_cosine"] is None
    table = "\n".join(row_usage.row_usage_table(result))
    assert "| Share of tags (%) | 100.0 |" in table and "cosine between rows -" in table
    json.dumps(result)  # JSON-able, no NaN


def test_winning_rows_l2_picks_the_largest_magnitude():
    from sdl_tf.modeling.scoring import numpy_scores_and_rows

    a = np.array([[[1.0, 0.0], [-3.0, 0.0]]], np.float32)
    vectors = np.array([[1.0, 0.0]], np.float32)
    assert numpy_scores_and_rows(a, vectors, "max")[1][0, 0] == 0  # 1 > -3
    assert numpy_scores_and_rows(a, vectors, "l2")[1][0, 0] == 1  # |-3| dominates ||A t||
    # The same through RowUsage (per-image top-K vectors): one image, one label.
    for scoring, row in (("max", 0), ("l2", 1)):
        assert _usage(a, vectors, k=1, scoring=scoring)[1][0, 0] == row
