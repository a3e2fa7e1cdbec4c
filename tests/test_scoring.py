"""Tests for sdl_tf.scoring (eq. 1 and the l2 baseline of section 4.1)."""

import os

import numpy as np
import pytest
import tensorflow as tf

from sdl_tf import metrics, scoring


def test_max_scores_match_golden(golden_dir):
    with np.load(os.path.join(golden_dir, "loss.npz"), allow_pickle=False) as z:
        for i in range(6):
            a, vectors, expected = z[f"case{i}_A"], z[f"case{i}_wordvecs"], z[f"case{i}_scores"]
            got = scoring.scores_from_matrices(a, vectors)
            assert got.dtype == tf.float64 and got.shape == expected.shape
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(
                metrics.numpy_scores(a, vectors), expected, rtol=1e-5, atol=1e-5
            )


def test_numpy_scores_blocks_and_workspace():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(7, 3, 5))
    vectors = rng.normal(size=(4, 5))
    expected = (a @ vectors.T).max(axis=1)
    workspace = np.empty(2 * 3 * 4, np.float32)
    for block in (1, 2, 3, 7, 100):
        got = metrics.numpy_scores(a, vectors, block_size=block, workspace=workspace)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    l2 = np.linalg.norm(a @ vectors.T, axis=1)
    np.testing.assert_allclose(metrics.numpy_scores(a, vectors, "l2", block_size=3), l2, rtol=1e-5)


def test_hand_computed_max_and_l2():
    a = np.array([[[1.0, 0.0], [0.0, 2.0]]])  # rows (1, 0) and (0, 2)
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])
    # A t = (1, 0), (0, 2), (0.6, 1.6), (-1, 0)
    np.testing.assert_allclose(scoring.scores_from_matrices(a, vectors), [[1.0, 2.0, 1.6, 0.0]])
    l2 = [[1.0, 2.0, np.sqrt(0.36 + 2.56), 1.0]]
    np.testing.assert_allclose(scoring.scores_from_matrices(a, vectors, "l2"), l2)
    np.testing.assert_allclose(metrics.numpy_scores(a, vectors, "l2"), l2, rtol=1e-6)
    out = np.empty((1, 4), np.float32)
    assert metrics.numpy_scores(a, vectors, out=out) is out
    np.testing.assert_allclose(out, [[1.0, 2.0, 1.6, 0.0]], rtol=1e-6)


def test_l2_gradient_finite_at_zero():
    a = tf.zeros((1, 2, 3))
    with tf.GradientTape() as tape:
        tape.watch(a)
        s = scoring.scores_from_matrices(a, np.eye(3, dtype="float32"), "l2")
        total = tf.reduce_sum(s)
    assert np.all(s.numpy() == 0.0)
    assert np.all(np.isfinite(tape.gradient(total, a).numpy()))


def test_bad_inputs():
    with pytest.raises(ValueError, match="scoring"):
        scoring.scores_from_matrices(np.ones((1, 1, 2)), np.ones((3, 2)), "sum")
    with pytest.raises(ValueError, match="same d"):
        metrics.numpy_scores(np.ones((1, 1, 2)), np.ones((3, 4)))
