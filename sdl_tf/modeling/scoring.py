"""Tag scores from per-image matrices (paper eq. 1): the one implementation, in two twins.

An image is represented by a matrix A of shape (M, d) whose rows are "principal directions" in the
word-vector space. The relevance of a tag with word vector t is

* ``"max"`` (SDL, eq. 1): ``s = max_m (A t)_m``: one row is enough to rank a tag high, so the
  rows can specialise in different semantic concepts;
* ``"l2"`` (the multi-direction baseline of section 4.1): ``s = ||A t||_2``.

The *winning row* of a tag is the row that gives it its score (the numbers of Figure 3): the
arg-max of eq. (1) for ``"max"``, the row with the largest ``|(A t)_m|`` (the largest
contribution to the norm) for ``"l2"``. Ties go to the lower row (-0.0 equals 0.0).

Two twins, tested against each other (`tests/modeling/test_scoring.py`):

* keras.ops (`scores_from_matrices`, `scores_and_rows`): differentiable, and traceable inside a
  `tf.function`, so the loss, the model and the SavedModel signatures use it.
* NumPy, float32 (`NumpyScorer`, `numpy_scores`, `numpy_scores_and_rows`): images in blocks,
  each block one BLAS GEMM (block*M, d) x (d, C) into a reused workspace, so memory stays
  O(block x M x C) at Open Images scale (C ~ 7.5k, M = 7); used by evaluation, metrics users,
  predict, retrieval and the training-time Figure-3 grid. A `NumpyScorer` keeps the transposed
  label vectors and the workspace across batches (the evaluation loop: ~25 % faster than
  re-creating them per batch of 64 images at Open Images scale).

Keras is imported inside the keras.ops functions, not at module level: the NumPy users (e.g. a
retrieval query, `sdl_tf.evaluation.metrics`-only evaluation of saved scores) then import no
TensorFlow from here. The scoring names are `sdl_tf.config.SCORINGS` (the flags' choices).
TensorFlow's `tf.math.top_k` in the export is the in-graph twin of the one NumPy top-K,
`sdl_tf.evaluation.metrics.top_k_indices`.
"""

import numpy as np

from sdl_tf.config import SCORINGS  # the one list of scoring names (also the flags' choices)

# Images per GEMM block of the NumPy twin (the workspace is block*M*C float32; measured faster
# than smaller cache-sized blocks with OpenBLAS on 2 cores).
_GEMM_BLOCK = 512


def check_scoring(scoring):
    """Returns `scoring` if it names a known scoring function, else raises ValueError."""
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
    return scoring


# -- keras.ops twin ----------------------------------------------------------------------------


def _keras_products(matrices, vectors):
    """(B, M, d) x (C, d) -> (B, M, C) products A t_c: one batched GEMM (vectors cast)."""
    import keras

    matrices = keras.ops.convert_to_tensor(matrices)
    vectors = keras.ops.cast(vectors, matrices.dtype)
    return keras.ops.matmul(matrices, keras.ops.transpose(vectors))


def _keras_reduce(products, scoring):
    """(B, M, C) products -> (B, C) scores: max over M (eq. 1) or the l2 norm."""
    import keras

    if scoring == "max":
        return keras.ops.max(products, axis=1)
    squared = keras.ops.sum(keras.ops.square(products), axis=1)
    # sqrt has an infinite derivative at 0; route exact zeros through sqrt(1) so gradients stay
    # finite (the value there is still exactly 0).
    positive = squared > 0
    safe = keras.ops.where(positive, squared, keras.ops.ones_like(squared))
    return keras.ops.where(positive, keras.ops.sqrt(safe), keras.ops.zeros_like(squared))


def scores_from_matrices(matrices, vectors, scoring="max"):
    """Scores every tag vector against every image matrix.

    Args:
        matrices: (B, M, d) float tensor, the per-image matrices A (row m = direction m).
        vectors: (C, d) float tensor, the tag word vectors t_c.
        scoring: "max" (eq. 1, max over rows of A t_c) or "l2" (l2 norm of A t_c, sec. 4.1).

    Returns:
        (B, C) tensor of scores in the dtype of `matrices` (vectors are cast to it).
    """
    check_scoring(scoring)
    return _keras_reduce(_keras_products(matrices, vectors), scoring)


def scores_and_rows(matrices, vectors, scoring="max"):
    """Scores and winning rows (module doc) from one GEMM; graph/SavedModel-compatible.

    Args:
        matrices: (B, M, d) float tensor; B may be 0.
        vectors: (C, d) float tensor.
        scoring: "max" or "l2".

    Returns:
        scores (B, C) in the dtype of `matrices`, rows (B, C) int32 in [0, M).
    """
    import keras

    check_scoring(scoring)
    products = _keras_products(matrices, vectors)
    scores = _keras_reduce(products, scoring)
    magnitude = products if scoring == "max" else keras.ops.abs(products)
    best = scores if scoring == "max" else keras.ops.max(magnitude, axis=1)
    # The first row equal to the best: as np.argmax (keras.ops.argmax ranks 0.0 above -0.0).
    hit = keras.ops.cast(keras.ops.equal(magnitude, keras.ops.expand_dims(best, 1)), "int32")
    return scores, keras.ops.argmax(hit, axis=1)


# -- NumPy twin --------------------------------------------------------------------------------


def _reduce(products, scoring, scores, rows=None):
    """(n, M, K) products -> `scores` (n, K), and the winning rows into `rows` (n, K) if given."""
    if scoring == "max":
        np.max(products, axis=1, out=scores)
        if rows is not None:
            np.argmax(products, axis=1, out=rows)
    else:
        np.sqrt(np.einsum("bmc,bmc->bc", products, products), out=scores)
        if rows is not None:
            np.argmax(np.abs(products), axis=1, out=rows)


def _check_matrices(matrices, dim):
    matrices = np.asarray(matrices)
    if matrices.ndim != 3 or matrices.shape[2] != dim:
        raise ValueError(
            f"expected matrices (B, M, d) and vectors with the same d = {dim}, got matrices "
            f"{matrices.shape}"
        )
    return matrices


class NumpyScorer:
    """Eq. (1) (or l2) in NumPy against a fixed set of C label vectors, in GEMM blocks.

    Args:
        vectors: (C, d) label vectors (cast to float32).
        scoring: "max" or "l2".
        block_size: images per GEMM block.
    """

    def __init__(self, vectors, scoring="max", block_size=_GEMM_BLOCK):
        self.scoring = check_scoring(scoring)
        vectors = np.asarray(vectors, np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"expected vectors (C, d), got {vectors.shape}")
        self.vectors_t = np.ascontiguousarray(vectors.T)  # (d, C), reused by every GEMM
        self.block_size = max(1, int(block_size))
        self._workspace = np.empty(0, np.float32)  # grown once, reused (no page faults)

    def scores(self, matrices, out=None):
        """(B, M, d) matrices -> (B, C) float32 scores (written into `out` if given)."""
        return self._run(matrices, out, None)

    def scores_and_rows(self, matrices):
        """(B, M, d) matrices -> scores (B, C) float32, winning rows (B, C) int64."""
        matrices = np.asarray(matrices)
        rows = np.empty(matrices.shape[:1] + self.vectors_t.shape[1:], np.int64)
        return self._run(matrices, None, rows), rows

    def _run(self, matrices, out, rows):
        d, c = self.vectors_t.shape
        matrices = _check_matrices(matrices, d)
        b, m, _ = matrices.shape
        if out is None:
            out = np.empty((b, c), np.float32)
        elif out.shape != (b, c) or out.dtype != np.float32:
            raise ValueError(f"out must be a float32 array of shape {(b, c)}, got {out.shape}")
        block = max(1, min(self.block_size, b))
        if self._workspace.size < block * m * c:
            self._workspace = np.empty(block * m * c, np.float32)
        for start in range(0, b, block):
            stop = min(start + block, b)
            # Cast one block at a time: a float16 (or float64) input is never copied whole.
            chunk = matrices[start:stop].astype(np.float32, copy=False).reshape(-1, d)
            products = self._workspace[: chunk.shape[0] * c].reshape(-1, c)
            np.matmul(chunk, self.vectors_t, out=products)
            _reduce(
                products.reshape(stop - start, m, c),
                self.scoring,
                out[start:stop],
                None if rows is None else rows[start:stop],
            )
        return out


def numpy_scores(matrices, vectors, scoring="max", out=None, block_size=_GEMM_BLOCK):
    """NumPy twin of `scores_from_matrices`: (B, M, d), (C, d) -> (B, C) float32 (`out`)."""
    return NumpyScorer(vectors, scoring, block_size).scores(matrices, out)


def numpy_scores_and_rows(matrices, vectors, scoring="max", block_size=_GEMM_BLOCK):
    """NumPy twin of `scores_and_rows`, also for per-image label vectors.

    Args:
        matrices: (B, M, d).
        vectors: (C, d) for all images, or (B, K, d): K label vectors per image (e.g. each
            image's top-K tags).
        scoring: "max" or "l2".
        block_size: images per GEMM block (shared vectors).

    Returns:
        scores (B, C or K) float32, rows (B, C or K) int64 in [0, M).
    """
    vectors = np.asarray(vectors)
    if vectors.ndim != 3:
        return NumpyScorer(vectors, scoring, block_size).scores_and_rows(matrices)
    check_scoring(scoring)
    matrices = _check_matrices(matrices, vectors.shape[2]).astype(np.float32, copy=False)
    if vectors.shape[0] != matrices.shape[0]:
        raise ValueError(f"expected vectors (B, K, d) for B = {matrices.shape[0]} images, "
                         f"got {vectors.shape}")
    products = np.matmul(matrices, vectors.astype(np.float32).transpose(0, 2, 1))  # (B, M, K)
    scores = np.empty((products.shape[0], products.shape[2]), np.float32)
    rows = np.empty(scores.shape, np.int64)
    _reduce(products, scoring, scores, rows)
    return scores, rows
