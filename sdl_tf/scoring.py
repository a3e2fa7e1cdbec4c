"""Tag scores from per-image matrices (paper eq. 1), shared by the loss, metrics, model and export.

An image is represented by a matrix A of shape (M, d) whose rows are "principal directions" in the
word-vector space. The relevance of a tag with word vector t is

* ``"max"`` (SDL, eq. 1): ``s = max_m (A t)_m``: one row is enough to rank a tag high, so the
  rows can specialise in different semantic concepts;
* ``"l2"`` (the multi-direction baseline of section 4.1): ``s = ||A t||_2``.

`sdl_tf.metrics.numpy_scores` is the NumPy twin used by the streaming evaluator (kept there so
evaluation does not need TensorFlow).
"""

import keras

SCORINGS = ("max", "l2")


def check_scoring(scoring):
    """Returns `scoring` if it names a known scoring function, else raises ValueError."""
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
    return scoring


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
    matrices = keras.ops.convert_to_tensor(matrices)
    vectors = keras.ops.cast(vectors, matrices.dtype)
    # (B, M, d) x (d, C) -> (B, M, C): one batched GEMM, the irreducible work of eq. (1).
    products = keras.ops.matmul(matrices, keras.ops.transpose(vectors))
    if scoring == "max":
        return keras.ops.max(products, axis=1)
    squared = keras.ops.sum(keras.ops.square(products), axis=1)
    # sqrt has an infinite derivative at 0; route exact zeros through sqrt(1) so gradients stay
    # finite (the value there is still exactly 0).
    positive = squared > 0
    safe = keras.ops.where(positive, squared, keras.ops.ones_like(squared))
    return keras.ops.where(positive, keras.ops.sqrt(safe), keras.ops.zeros_like(squared))
