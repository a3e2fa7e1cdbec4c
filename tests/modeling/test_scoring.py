"""Tests for sdl_tf.modeling.scoring (eq. 1 and the l2 baseline of section 4.1): the keras.ops and
NumPy twins, each against the other and against hand-computed values."""

import os

import numpy as np
import pytest
import tensorflow as tf

from sdl_tf.modeling import scoring


def test_max_scores_match_golden(golden_dir):
    with np.load(os.path.join(golden_dir, "loss.npz"), allow_pickle=False) as z:
        for i in range(6):
            a, vectors, expected = z[f"case{i}_A"], z[f"case{i}_wordvecs"], z[f"case{i}_scores"]
            got = scoring.scores_from_matrices(a, vectors)
            assert got.dtype == tf.float64 and got.shape == expected.shape
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(
                scoring.numpy_scores(a, vectors), expected, rtol=1e-5, atol=1e-5
            )


def test_numpy_scores_blocks_and_workspace():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(7, 3, 5))
    vectors = rng.normal(size=(4, 5))
    expected = (a @ vectors.T).max(axis=1)
    for block in (1, 2, 3, 7, 100):
        scorer = scoring.NumpyScorer(vectors, block_size=block)
        for batch in (a, a[:2], a):  # the workspace is reused (and grown) across calls
            got = scorer.scores(batch)
            np.testing.assert_allclose(got, expected[: len(batch)], rtol=1e-5, atol=1e-6)
    l2 = np.linalg.norm(a @ vectors.T, axis=1)
    np.testing.assert_allclose(scoring.numpy_scores(a, vectors, "l2", block_size=3), l2, rtol=1e-5)
    # float16 input (a retrieval index) is cast block by block: same as casting it first.
    half = a.astype(np.float16)
    np.testing.assert_array_equal(
        scoring.numpy_scores(half, vectors, block_size=2),
        scoring.numpy_scores(half.astype(np.float32), vectors),
    )


def test_hand_computed_max_and_l2():
    a = np.array([[[1.0, 0.0], [0.0, 2.0]]])  # rows (1, 0) and (0, 2)
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])
    # A t = (1, 0), (0, 2), (0.6, 1.6), (-1, 0)
    np.testing.assert_allclose(scoring.scores_from_matrices(a, vectors), [[1.0, 2.0, 1.6, 0.0]])
    l2 = [[1.0, 2.0, np.sqrt(0.36 + 2.56), 1.0]]
    np.testing.assert_allclose(scoring.scores_from_matrices(a, vectors, "l2"), l2)
    np.testing.assert_allclose(scoring.numpy_scores(a, vectors, "l2"), l2, rtol=1e-6)
    out = np.empty((1, 4), np.float32)
    assert scoring.numpy_scores(a, vectors, out=out) is out
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
        scoring.numpy_scores(np.ones((1, 1, 2)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="scoring"):
        scoring.numpy_scores_and_rows(np.ones((1, 1, 2)), np.ones((1, 3, 2)), "sum")
    with pytest.raises(ValueError, match="scoring"):
        scoring.scores_and_rows(np.ones((1, 1, 2)), np.ones((3, 2)), "sum")
    with pytest.raises(ValueError, match=r"\(B, K, d\)"):
        scoring.numpy_scores_and_rows(np.ones((2, 1, 2)), np.ones((3, 4, 2)))


def _keras_scores_and_rows(matrices, vectors, scoring_name):
    scores, rows = scoring.scores_and_rows(
        tf.constant(matrices, tf.float32), tf.constant(vectors, tf.float32), scoring_name
    )
    assert rows.dtype == tf.int32
    return scores.numpy(), rows.numpy()


@pytest.mark.parametrize("scoring_name", scoring.SCORINGS)
def test_numpy_and_keras_twins_agree_on_random_shapes(scoring_name):
    rng = np.random.default_rng(1)
    for _ in range(12):
        # B >= 1: eager keras.ops.max rejects empty tensors (the graph test covers B = 0).
        b, m, d, c = rng.integers(1, 6), rng.integers(1, 8), rng.integers(1, 9), rng.integers(1, 40)
        a = rng.normal(size=(b, m, d)).astype(np.float32)
        vectors = rng.normal(size=(c, d)).astype(np.float32)
        keras_scores, keras_rows = _keras_scores_and_rows(a, vectors, scoring_name)
        np_scores, np_rows = scoring.numpy_scores_and_rows(
            a, vectors, scoring_name, block_size=int(rng.integers(1, 4))
        )
        assert np_scores.dtype == np.float32 and np_rows.dtype == np.int64
        assert np_scores.shape == np_rows.shape == keras_rows.shape == (b, c)
        np.testing.assert_allclose(np_scores, keras_scores, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            scoring.numpy_scores(a, vectors, scoring_name), keras_scores, rtol=1e-5, atol=1e-5
        )
        np.testing.assert_allclose(
            scoring.scores_from_matrices(a, vectors, scoring_name), keras_scores, rtol=1e-6
        )
        # Rows: the winning product gives the score (continuous values: no ties).
        products = np.einsum("bmd,cd->bmc", a.astype(np.float64), vectors)
        if scoring_name == "l2":
            products = np.abs(products)
        np.testing.assert_array_equal(np_rows, products.argmax(axis=1))
        np.testing.assert_array_equal(keras_rows, np_rows)


@pytest.mark.parametrize("scoring_name", scoring.SCORINGS)
def test_twins_agree_exactly_with_ties(scoring_name):
    # Small integers: every product is exact in float32 and ties are everywhere.
    rng = np.random.default_rng(2)
    a = rng.integers(-1, 2, size=(9, 4, 3)).astype(np.float32)
    a[0] = 0.0  # an all-zero matrix (a bad image in the export): every row ties at 0
    a[1, 2] = a[1, 0]  # duplicate rows
    vectors = rng.integers(-1, 2, size=(11, 3)).astype(np.float32)
    keras_scores, keras_rows = _keras_scores_and_rows(a, vectors, scoring_name)
    np_scores, np_rows = scoring.numpy_scores_and_rows(a, vectors, scoring_name)
    np.testing.assert_array_equal(np_scores, keras_scores)
    np.testing.assert_array_equal(np_rows, keras_rows)
    products = a @ vectors.T  # (B, M, C)
    winner = products if scoring_name == "max" else np.abs(products)
    best = winner.max(axis=1, keepdims=True)
    first = np.argmax(winner == best, axis=1)  # ties -> the lower row
    np.testing.assert_array_equal(np_rows, first)
    assert np.all(np_rows[0] == 0)
    assert (winner == best).sum(axis=1).max() > 1  # there were ties to break


def test_signed_zero_ties_go_to_the_lower_row():
    # (A t) = (-0.0, 0.0) or (0.0, -0.0): equal scores, so row 0 wins in both twins.
    a = np.array([[[-0.0, -0.0], [0.0, 0.0]], [[0.0, 0.0], [-0.0, -0.0]]], np.float32)
    vectors = np.array([[1.0, 1.0]], np.float32)
    for name in scoring.SCORINGS:
        assert _keras_scores_and_rows(a, vectors, name)[1].tolist() == [[0], [0]]
        assert scoring.numpy_scores_and_rows(a, vectors, name)[1].tolist() == [[0], [0]]


def test_per_image_vectors_match_all_labels():
    # (B, K, d) per-image label vectors (each image's top-K tags) = the (C, d) result gathered.
    rng = np.random.default_rng(3)
    a = rng.normal(size=(6, 5, 4)).astype(np.float32)
    vectors = rng.normal(size=(10, 4)).astype(np.float32)
    top = rng.integers(0, 10, size=(6, 3))
    for name in scoring.SCORINGS:
        scores, rows = scoring.numpy_scores_and_rows(a, vectors, name)
        got_scores, got_rows = scoring.numpy_scores_and_rows(a, vectors[top], name)
        np.testing.assert_allclose(
            got_scores, np.take_along_axis(scores, top, 1), rtol=1e-5, atol=1e-6
        )
        np.testing.assert_array_equal(got_rows, np.take_along_axis(rows, top, 1))


def test_keras_scores_and_rows_in_a_graph_with_an_empty_batch():
    # As in the SavedModel signatures: unknown batch size, possibly 0 images.
    vectors = tf.constant(np.eye(3, 4, dtype=np.float32))

    @tf.function(input_signature=[tf.TensorSpec((None, 2, 4), tf.float32)])
    def serve(matrices):
        return scoring.scores_and_rows(matrices, vectors)

    scores, rows = serve(tf.zeros((0, 2, 4)))
    assert scores.shape == (0, 3) and rows.shape == (0, 3) and rows.dtype == tf.int32
    np_scores, np_rows = scoring.numpy_scores_and_rows(np.zeros((0, 2, 4)), vectors.numpy())
    assert np_scores.shape == np_rows.shape == (0, 3)
    a = np.array([[[0.0, 2.0, 0.0, 0.0], [1.0, 0.0, 3.0, 0.0]]], np.float32)
    scores, rows = serve(a)
    np.testing.assert_array_equal(scores, [[1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(rows, [[1, 0, 1]])
