"""The Semantic Diversity Learning loss (paper section 3.3, eqs. 1-5).

For one image with matrix A (M, d), positive label set P and negative set N (every seen label
that is not positive: 0 = unknown and -1 = verified negative both count as negative, as in the
authors' code), with label word vectors t_c:

* eq. (1): s_c = max_m (A t_c); u_jk = s_k - s_j for j in P, k in N;
* eq. (2): rank = w_d / (|P||N|) * sum_{j,k} log(1 + exp(u_jk));
* eq. (3): w_d (SDW) = 1 + sum over the d dimensions of the unbiased variance of {t_j : j in P}
  (0 variance when |P| = 1);
* eq. (4): reg = sum over the d columns of the unbiased variance across the M rows of A
  (0 when M = 1);
* eq. (5): loss = (1 - lt) * rank + lt * reg with lt = lambda / |N|, where lambda is the
  per-image-invariant regularisation weight of the paper (default 0.3).

Implementation notes:

* Vectorised over the batch, no Python loop, and memory linear in C: the T = sum_b |P_b|
  positives of the batch are packed (no padding) with their image index, so the pairwise
  tensor is (T, C) <= (B, P_max, C), never (B, C, C).
  Positive columns get the score -1e30 in the "negative" row, so they contribute exactly
  softplus(-1e30 - s_j) = 0 with zero gradient and no mask multiply is needed.
* softplus(x) = log(1 + exp(x)) is evaluated in the stable form max(x, 0) + log1p(exp(-|x|)),
  so large score gaps neither overflow nor give NaN gradients.
* Speed: the (T, C) pairwise term is ~all the cost of the loss beyond the scoring GEMM
  (T ~ 1,900 and C = 7,186 at the Open Images shape: 14 M pairs, 3x the (B, M, C) score
  tensor). It runs in one XLA-compiled kernel (`_pairwise_kernel`) over the packed positives
  that computes the per-image sums *and* their derivatives in a single pass (sigmoid(x) =
  d softplus / dx reuses the forward's exp(-|x|)), applied through a `tf.custom_gradient`, so
  no (T, C) tensor is kept for the backward pass (`benchmarks/bench_loss.py` gives its cost
  against the bare scoring GEMM). The kernel is traced once for a variable T; XLA compiles it
  once per distinct T (~0.2 s on a CPU at the Open Images shape), a few hundred times over a
  whole training run, which is negligible next to the run. Both are TensorFlow-specific
  (Keras 3 has no portable jit/custom-gradient API); `_pairwise_sum_reference` is the same term
  in plain `keras.ops`, kept as the readable definition the kernel is tested against.
* Half-precision inputs (float16/bfloat16) are computed in float32; float64 stays float64.
* Edge cases: an image with no positive contributes exactly 0 (with zero gradient); an image
  with no negative has no pairs (rank = 0) and uses lt = lambda / max(|N|, 1).

``mode="official"`` reproduces the scale of the authors' PyTorch code (which normalises by |P|
only): 2 * ((1 - lambda) * |N| * rank + lambda * reg) when the regulariser is active (M > 1),
else |N| * rank. ``rank`` and ``reg`` are the paper's terms above in both modes.
"""

import keras
import numpy as np
import tensorflow as tf

from sdl_tf.config import LOSS_MODES as MODES  # the one list of loss scalings
from sdl_tf.modeling import scoring as scoring_lib

# Score given to positive columns in the pairwise term: softplus(-_HUGE - s) is exactly 0 and
# has zero gradient for any realistic score s, without overflow in float32.
_HUGE = 1e30


def _pairwise_sum_reference(neg_scores, pos_scores, pos_image, batch):
    """Per-image sum of softplus(s_k - s_j) over pairs, in plain `keras.ops` (eq. 2).

    The definition of the pairwise term, kept as the portable reference of `_pairwise_sum`
    (checked against it in the tests); the loss uses the faster fused kernel.

    Args:
        neg_scores: (B, C) scores with positives replaced by -_HUGE.
        pos_scores: (T,) score of each positive.
        pos_image: (T,) int32 image index of each positive.
        batch: B.

    Returns:
        (B,) sums over each image's positive-negative pairs.
    """
    x = keras.ops.take(neg_scores, pos_image, axis=0) - pos_scores[:, None]  # (T, C)
    per_positive = keras.ops.sum(keras.ops.softplus(x), axis=1)
    return keras.ops.segment_sum(per_positive, pos_image, num_segments=batch)


# reduce_retracing: one trace for every T (the positives vary per batch); XLA compiles per
# shape, hence the padding to `_padded_length` in `_pairwise_sum_kernel`.
@tf.function(jit_compile=True, reduce_retracing=True)
def _pairwise_kernel(neg_scores, pos_scores, pos_image):
    """One fused pass over the (T, C) pairs: per-image sums and their derivatives.

    x_tk = neg_scores[b_t, k] - pos_scores[t]; softplus(x) = max(x, 0) + log1p(e) and
    sigmoid(x) = (1 if x >= 0 else e) / (1 + e) with e = exp(-|x|) computed once. XLA fuses the
    gather, both functions and the reductions; no (T, C) tensor is kept for the backward pass.

    Args:
        neg_scores: (B, C) scores with positives replaced by -_HUGE.
        pos_scores: (T,) score of each positive.
        pos_image: (T,) int32 image index of each positive.

    Returns:
        pair_sum (B,): sum over t in image b and k of softplus(x_tk);
        d_neg (B, C): its derivative w.r.t. neg_scores (sum over the image's t of sigmoid);
        d_pos (T,): the derivative of image b_t's sum w.r.t. pos_scores[t].
    """
    batch = tf.shape(neg_scores)[0]
    x = tf.gather(neg_scores, pos_image) - pos_scores[:, None]  # (T, C)
    e = tf.exp(-tf.abs(x))
    softplus = tf.maximum(x, tf.zeros_like(x)) + tf.math.log1p(e)
    sigmoid = tf.where(x >= 0, tf.ones_like(e), e) / (1.0 + e)
    pair_sum = tf.math.unsorted_segment_sum(tf.reduce_sum(softplus, axis=1), pos_image, batch)
    d_neg = tf.math.unsorted_segment_sum(sigmoid, pos_image, batch)
    d_pos = -tf.reduce_sum(sigmoid, axis=1)
    return pair_sum, d_neg, d_pos


def _padded_length(t):
    """The smallest power of two >= t (>= 16): the kernel's length for t positives.

    XLA compiles `_pairwise_kernel` once per input shape, and T, the batch's number of
    positives, changes from batch to batch: unpadded, every new T paid a compile (~0.35 s on
    2 CPU cores; 27 distinct T in a 1,200-step demo-recipe run). Powers of two leave a few.
    """
    t = tf.maximum(t, 16)
    exponent = tf.math.ceil(tf.math.log(tf.cast(t, tf.float64)) / np.log(2.0))
    p = tf.cast(2.0**exponent, tf.int32)
    return tf.where(p // 2 >= t, p // 2, p)  # log rounding can overshoot an exact power


def _in_xla_context() -> bool:
    """Whether the graph being traced is compiled by XLA as a whole (an outer `jit_compile`
    step): then the kernel is inlined, T is a bounded dynamic size, and nothing is padded (XLA
    needs static pad sizes). TensorFlow has no public test for this; its cond_v2 and while_v2
    use this one."""
    try:
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # moved in a future TensorFlow: pad, which is always correct outside XLA
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


@tf.custom_gradient
def _pairwise_sum_kernel(neg_scores, pos_scores, pos_image):
    t = tf.shape(pos_scores)[0]
    if _in_xla_context():
        pair_sum, d_neg, d_pos = _pairwise_kernel(neg_scores, pos_scores, pos_image)
    else:
        pad = [[0, _padded_length(t) - t]]
        # Padded positives score +_HUGE: x = s_k - _HUGE gives softplus(x) = 0 and sigmoid(x) = 0
        # exactly, so they add nothing to image 0's sum or derivatives.
        pair_sum, d_neg, d_pos = _pairwise_kernel(
            neg_scores, tf.pad(pos_scores, pad, constant_values=_HUGE), tf.pad(pos_image, pad))
        d_pos = d_pos[:t]

    def grad(upstream):  # upstream: (B,), one value per image sum
        return upstream[:, None] * d_neg, tf.gather(upstream, pos_image) * d_pos, None

    return pair_sum, grad


def _pairwise_sum(neg_scores, pos_scores, pos_image, batch):
    """Per-image sum of softplus(s_k - s_j) over pairs (eq. 2); see `_pairwise_sum_reference`.

    Same arguments and result, through the fused XLA kernel. Only first-order gradients (the
    kernel's derivatives are not differentiable again).
    """
    del batch  # the kernel reads it from neg_scores
    return _pairwise_sum_kernel(neg_scores, pos_scores, pos_image)


def _label_set_terms(scores, y_true, positive, n_pos, vectors, use_sdw):
    """Eq. (2)'s pair sums and eq. (3)'s variance.

    The T positives of the batch are packed (no padding) and the pairs go through
    `_pairwise_sum`.

    Args:
        scores: (B, C) scores.
        y_true: (B, C) targets (> 0.5 positive).
        positive: (B, C) 0/1 positives in the dtype of `scores`.
        n_pos: (B,) number of positives per image.
        vectors: (C, d) label vectors.
        use_sdw: whether the variance is needed (else zeros).

    Returns:
        pair_sum (B,): each image's sum over its positive-negative pairs of softplus(s_k - s_j);
        variance (B,): eq. (3)'s summed variance of the positives' vectors (0 if not use_sdw).
    """
    ops = keras.ops
    num_labels = ops.shape(scores)[1]
    batch = ops.shape(scores)[0]
    # The T positives of the batch, packed (no padding): image index and label index of each.
    pos_image, pos_label = ops.nonzero(y_true > 0.5)
    pos_image = ops.cast(pos_image, "int32")
    pos_label = ops.cast(pos_label, "int32")
    pos_scores = ops.take(ops.reshape(scores, [-1]), pos_image * num_labels + pos_label)  # (T,)

    # eq. (2): sum over positive-negative pairs of softplus(s_k - s_j). Positive columns are set
    # to a huge negative score so they contribute softplus(-huge) = 0 exactly (no mask pass).
    neg_scores = ops.where(positive > 0, ops.full_like(scores, -_HUGE), scores)
    pair_sum = _pairwise_sum(neg_scores, pos_scores, pos_image, batch)  # (B,)
    if not use_sdw:
        return pair_sum, ops.zeros_like(n_pos)
    # eq. (3): unbiased variance of the positives' word vectors (T, d), summed over d.
    pos_vectors = ops.take(vectors, pos_label, axis=0)
    mean = (
        ops.segment_sum(pos_vectors, pos_image, num_segments=batch)
        / ops.maximum(n_pos, 1.0)[:, None]
    )
    centred = pos_vectors - ops.take(mean, pos_image, axis=0)
    variance = ops.segment_sum(
        ops.sum(ops.square(centred), axis=1), pos_image, num_segments=batch
    ) / ops.maximum(n_pos - 1.0, 1.0)
    return pair_sum, variance


def _compute_dtype(dtype):
    """float64 stays float64; every other float (incl. float16/bfloat16) computes in float32."""
    return "float64" if keras.backend.standardize_dtype(dtype) == "float64" else "float32"


def _check_settings(scoring, mode):
    """Raises ValueError for an unknown scoring or loss mode."""
    scoring_lib.check_scoring(scoring)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _rank_and_sdw(scores, y_true, positive, n_pos, n_neg, vectors, use_sdw):
    """Eq. (2)'s rank term, already multiplied by eq. (3)'s weight, and that weight (B,)."""
    ops = keras.ops
    pair_sum, variance = _label_set_terms(scores, y_true, positive, n_pos, vectors, use_sdw)
    rank = pair_sum / ops.maximum(n_pos * n_neg, 1.0)
    if use_sdw:  # eq. (3); a constant weight w.r.t. A
        sdw = ops.stop_gradient(1.0 + ops.where(n_pos > 1, variance, ops.zeros_like(variance)))
    else:
        sdw = ops.ones_like(n_pos)
    return sdw * rank, sdw


def _row_variance(matrices, dtype):
    """Eq. (4): unbiased variance across the M rows of A, summed over the d columns: (B,).

    Also returns M (a Python int, or a scalar tensor when the static shape is unknown)."""
    ops = keras.ops
    num_rows = matrices.shape[1]
    if num_rows is None:
        num_rows = ops.shape(matrices)[1]
    row_mean = ops.mean(matrices, axis=1, keepdims=True)
    reg = ops.sum(ops.square(matrices - row_mean), axis=(1, 2)) / ops.maximum(
        ops.cast(num_rows, dtype) - 1.0, 1.0
    )
    return reg, num_rows


def _combine(rank, reg, n_neg, num_rows, static_rows, reg_lambda, reg_on, mode):
    """Eq. (5) (`mode="paper"`), or the authors' code's scaling (`mode="official"`)."""
    ops = keras.ops
    if mode == "paper":
        if not reg_on:
            return rank
        lt = reg_lambda / ops.maximum(n_neg, 1.0)
        return (1.0 - lt) * rank + lt * reg
    # The authors' code only has the regulariser for M > 1 (reg is 0 at M = 1 anyway, and
    # their M = 1 loss is |N| * rank without the factor 2).
    if reg_on and (static_rows is None or static_rows > 1):
        official_reg = 2.0 * ((1.0 - reg_lambda) * n_neg * rank + reg_lambda * reg)
        return ops.where(ops.cast(num_rows, "int32") > 1, official_reg, n_neg * rank)
    return n_neg * rank


def sdl_loss_terms(y_true, y_pred, label_vectors, reg_lambda=0.3, use_sdw=True, use_reg=True,
                   scoring="max", mode="paper"):
    """Per-image SDL loss and its terms (eqs. 1-5), cheap and graph compatible.

    Args:
        y_true: (B, C) targets over the C seen labels: 1 positive, 0 or -1 negative.
        y_pred: (B, M, d) per-image matrices A.
        label_vectors: (C, d) seen-label word vectors (l2-normalised in the paper).
        reg_lambda: the paper's lambda (= lambda_tilde * |N|); lt = reg_lambda / |N| per image.
        use_sdw: multiply the rank term by the semantic diversity weight (eq. 3); else weight 1.
        use_reg: add the row-variance regulariser (eq. 4); off is the same as reg_lambda = 0.
        scoring: "max" (eq. 1) or "l2" (norm of A t, the section 4.1 baseline).
        mode: "paper" (eq. 5) or "official" (the authors' code's scaling, see module doc).

    Returns:
        dict with "loss", "rank", "reg", "sdw", each a (B,) tensor in float32 (float64 if
        `y_pred` is float64). Images without positives get 0 for loss, rank and reg.
    """
    _check_settings(scoring, mode)
    ops = keras.ops
    y_pred = ops.convert_to_tensor(y_pred)
    dtype = _compute_dtype(y_pred.dtype)
    matrices = ops.cast(y_pred, dtype)
    vectors = ops.cast(ops.convert_to_tensor(label_vectors), dtype)
    y_true = ops.cast(ops.convert_to_tensor(y_true), dtype)
    positive = ops.cast(y_true > 0.5, dtype)  # (B, C); 0 and -1 are both negatives
    n_pos = ops.sum(positive, axis=1)  # (B,)
    n_neg = ops.cast(ops.shape(positive)[1], dtype) - n_pos

    scores = scoring_lib.scores_from_matrices(matrices, vectors, scoring)  # (B, C), eq. (1)
    rank, sdw = _rank_and_sdw(scores, y_true, positive, n_pos, n_neg, vectors, use_sdw)
    reg, num_rows = _row_variance(matrices, dtype)
    loss = _combine(rank, reg, n_neg, num_rows, matrices.shape[1], reg_lambda,
                    use_reg and reg_lambda != 0, mode)

    has_pos = n_pos > 0
    zeros = ops.zeros_like(loss)
    return {
        "loss": ops.where(has_pos, loss, zeros),
        "rank": ops.where(has_pos, rank, zeros),
        "reg": ops.where(has_pos, reg, zeros),
        "sdw": sdw,
    }


@keras.saving.register_keras_serializable(package="sdl_tf")
class SDLLoss(keras.losses.Loss):
    """Semantic Diversity Learning loss (eqs. 1-5) as a serializable Keras loss.

    `call(y_true (B, C), y_pred (B, M, d)) -> (B,)` returns the per-image loss; Keras applies
    `reduction` (default: mean over the batch, the 1/N of eq. 5). Ablations: `use_sdw=False`,
    `use_reg=False`, `scoring="l2"`; M = 1 with SDW and regulariser off is Fast0Tag.

    Args:
        label_vectors: (C, d) seen-label word vectors, in the order of y_true's columns.
        reg_lambda: the paper's lambda (section 3.3), default 0.3.
        use_sdw: apply the semantic diversity weight (eq. 3).
        use_reg: apply the row-variance regulariser (eq. 4).
        scoring: "max" (eq. 1) or "l2" (section 4.1 baseline).
        mode: "paper" or "official" (see `sdl_tf.modeling.losses` module doc).
        **kwargs: `name`, `reduction`, `dtype` of `keras.losses.Loss`. Leave `dtype` unset for
            float32 (also under mixed precision); "float64" computes in float64.
    """

    def __init__(self, label_vectors, reg_lambda=0.3, use_sdw=True, use_reg=True, scoring="max",
                 mode="paper", **kwargs):
        kwargs.setdefault("name", "sdl_loss")
        super().__init__(**kwargs)
        vectors = np.asarray(label_vectors, dtype=np.float64)
        if vectors.ndim != 2 or vectors.size == 0:
            raise ValueError(f"label_vectors must be a non-empty (C, d) array, got {vectors.shape}")
        if not np.all(np.isfinite(vectors)):
            raise ValueError("label_vectors contain NaN or inf")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.label_vectors = vectors
        self._vectors32 = vectors.astype(np.float32)
        self.reg_lambda = float(reg_lambda)
        self.use_sdw = bool(use_sdw)
        self.use_reg = bool(use_reg)
        self.scoring = scoring_lib.check_scoring(scoring)
        self.mode = mode

    def terms(self, y_true, y_pred):
        """The per-image loss and its terms from one evaluation of eqs. 1-5.

        What training calls: it differentiates "loss" and logs the other terms of the same
        pass (`sdl_loss_terms` with this loss's settings).

        Args:
            y_true: (B, C) targets over the seen labels (1 positive, 0 / -1 negative).
            y_pred: (B, M, d) matrices A.

        Returns:
            {"loss", "rank", "reg", "sdw"}, each (B,), float32 (float64 for float64 `y_pred`).
        """
        y_true = keras.ops.convert_to_tensor(y_true)
        y_pred = keras.ops.convert_to_tensor(y_pred)
        num_labels = y_true.shape[-1]
        if num_labels is not None and num_labels != self.label_vectors.shape[0]:
            raise ValueError(
                f"y_true has {num_labels} labels but the loss has "
                f"{self.label_vectors.shape[0]} label vectors"
            )
        dtype = _compute_dtype(y_pred.dtype)
        vectors = self.label_vectors if dtype == "float64" else self._vectors32
        return sdl_loss_terms(y_true, y_pred, vectors, reg_lambda=self.reg_lambda,
                              use_sdw=self.use_sdw, use_reg=self.use_reg, scoring=self.scoring,
                              mode=self.mode)

    def call(self, y_true, y_pred):
        """Per-image loss (B,) for targets (B, C) and matrices (B, M, d)."""
        return self.terms(y_true, y_pred)["loss"]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "label_vectors": self.label_vectors.tolist(),
                "reg_lambda": self.reg_lambda,
                "use_sdw": self.use_sdw,
                "use_reg": self.use_reg,
                "scoring": self.scoring,
                "mode": self.mode,
                "dtype": self._dtype_policy.name,
            }
        )
        return config
