"""Streaming ZSL/GZSL evaluation: mAP and micro P/R/F1 at top-K (paper section 4, Table 1).

Protocol (the authors' evaluation, see ``tests/testdata/golden/README.md``):

* Tag scores are s_c = max over the rows of A t_c (eq. 1; ``scoring="l2"`` for the baseline),
  computed by `sdl_tf.modeling.scoring` (the caller passes scores in).
* ZSL evaluates only the unseen labels; GZSL evaluates all labels.
* Images with no positive among the evaluated labels are dropped (separately per protocol).
* P@K, R@K, F1@K (percent) are micro-averaged ("overall"): over the kept images, the top-K
  evaluated labels are predicted; P = TP / predicted, where each image predicts
  min(K, number of evaluated labels); R = TP / positives; F1 = 2PR / (P + R), 0 if P or R is 0.
* mAP (percent) is the mean over evaluated labels of the average precision of ranking the kept
  images by that label's score (mean over the positives of precision at their rank). Labels with
  no positive among the kept images are excluded from the mean and counted.

Deterministic tie-breaking:

* top-K: higher score first; equal scores -> the lower label index first (as ``tf.math.top_k``).
* AP: higher score first; equal scores -> the image added earlier first (stream order).

Scale: the evaluator keeps the (N, C) float32 score matrix (needed to rank the images of every
label), the positives as sparse indices, and the top-K counts; it never builds an (N, C, M) tensor
(the caller scores with `sdl_tf.modeling.scoring`, eq. 1 in GEMM blocks). `update_scores` stores a
batch and counts its positives and top-K hits in row chunks on the calling thread: each row's top-K
sorts only the scores at or above a cheap lower bound on its K-th largest score, and that bound pass
is also the NaN check. AP uses only the ranks of the positives
(`sdl_tf.evaluation.average_precision`: each label's column sorted once, in column chunks on one
worker thread per core).
"""

import os

import numpy as np

from sdl_tf.evaluation import average_precision

PROTOCOLS = ("zsl", "gzsl")

# Rows per stored score block: ~64 MB blocks keep per-block Python overhead negligible whatever
# the caller's batch size.
_BLOCK_BYTES = 1 << 26
# Worker threads of the AP computation (each holds two _BLOCK_BYTES buffers).
_MAX_AP_THREADS = 4
# Rows per chunk of `update_scores` (bounds the per-chunk temporaries; merged in order).
_CHUNK_ROWS = 256
# Column groups of the top-K bound in `_top_k_bound` (at least 4 K); rows of fewer than two
# columns per group use the exact K-th largest score instead.
_MIN_GROUPS = 256
# Bits of the packed (row, score, label) sort key of `_top_k_entries`; wider keys (or other
# dtypes than float32) fall back to np.lexsort.
_SORT_KEY_BITS = 64


def _cpu_count():
    """Cores available to this process (affinity-aware where the OS tells)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, min(len(os.sched_getaffinity(0)), os.cpu_count() or 1))
    return os.cpu_count() or 1


def _top_k_bound(scores, k):
    """Per-row lower bound on the k-th largest score, and whether `scores` holds a NaN.

    Rows of at least 2 G columns (G = max(_MIN_GROUPS, 4 k) groups) use the k-th largest of
    the maxima of G column groups: the k best groups each hold a score >= it. The groups are
    strided (column j is in group j mod G, the last partial stride folded into the first groups)
    so that their maxima are one reduction over the middle axis of an (n, c // G, G) view, with
    long contiguous inner loops: ~5x faster than maxima of contiguous groups. A NaN propagates
    into its group's maximum, so the NaN check costs no extra pass. Narrower rows use the exact
    k-th largest score (np.partition).

    Args:
        scores: (n, c) real array.
        k: 1 <= k <= c.

    Returns:
        ((n,) bound, has_nan); the bound is None if has_nan.
    """
    n, c = scores.shape
    groups = max(_MIN_GROUPS, 4 * k)
    if c < 2 * groups:
        if np.isnan(scores).any():
            return None, True
        return np.partition(scores, c - k, axis=1)[:, c - k], False
    width = c // groups
    group_max = scores[:, : width * groups].reshape(n, width, groups).max(axis=1)
    rest = c - width * groups
    if rest:
        np.maximum(group_max[:, :rest], scores[:, width * groups :], out=group_max[:, :rest])
    if np.isnan(group_max).any():
        return None, True
    return np.partition(group_max, groups - k, axis=1)[:, groups - k], False


def _descending_key(values):
    """uint64 keys of float32 `values` (no NaN) in descending order, equal values equal keys."""
    # +0.0 so that -0.0 (== 0.0) gets the key of 0.0; then the IEEE bits made monotone.
    bits = (values + np.float32(0.0)).view(np.uint32)
    ascending = bits ^ ((np.uint32(0) - (bits >> np.uint32(31))) | np.uint32(0x80000000))
    return (~ascending).astype(np.uint64)


def _top_k_entries(scores, k, bound):
    """The top-k entries of each row, ranked by the tie rule (score desc, then index asc).

    Args:
        scores: (n, c) array without NaN.
        k: 1 <= k <= c.
        bound: (n,) lower bound on each row's k-th largest score (from `_top_k_bound`).

    Returns:
        (rows, cols, ranks): (n * k,) int64 arrays sorted by row, then rank 0..k-1.
    """
    n, c = scores.shape
    # flatnonzero + divmod: 2-D np.nonzero is ~20x slower on sparse masks.
    flat = np.flatnonzero(scores >= bound[:, None])
    rows, cols = np.divmod(flat, c)
    values = scores.reshape(-1)[flat] if scores.flags.c_contiguous else scores[rows, cols]
    row_bits, col_bits = max(1, (n - 1).bit_length()), max(1, (c - 1).bit_length())
    if scores.dtype == np.float32 and row_bits + 32 + col_bits <= _SORT_KEY_BITS:
        # One sort of packed (row, descending score, column) keys: ~15x faster than lexsort.
        keys = (
            (rows.astype(np.uint64) << np.uint64(32 + col_bits))
            | (_descending_key(values) << np.uint64(col_bits))
            | cols.astype(np.uint64)
        )
        keys.sort()
        rows = (keys >> np.uint64(32 + col_bits)).astype(np.int64)
        cols = (keys & np.uint64((1 << col_bits) - 1)).astype(np.int64)
    else:
        # By row, then score desc, then index asc: the reverse of (row desc, score asc, index
        # desc), so that the scores are never negated (unsigned dtypes would wrap).
        order = np.lexsort((-cols, values, -rows))[::-1]
        rows, cols = rows[order], cols[order]
    counts = np.bincount(rows, minlength=n)
    ranks = np.arange(rows.size) - (np.cumsum(counts) - counts)[rows]
    top = ranks < k  # every row has >= k entries at or above its bound
    return rows[top], cols[top], ranks[top]


def top_k_indices(scores, k):
    """Indices of the top-k scores per row: higher score first, ties -> lower index first.

    The one NumPy top-K (P/R/F1@K here; row usage, predicted tags, retrieval); the export's
    in-graph twin is ``tf.math.top_k`` (same tie rule).

    Only the scores at or above a cheap per-row lower bound on the k-th largest score
    (`_top_k_bound`) are sorted. The result is exact, including ties.

    Args:
        scores: (n, c) real array without NaN.
        k: number of indices per row, 1 <= k <= c.

    Returns:
        (n, k) int64 array of column indices.

    Raises:
        ValueError: if k is out of range or `scores` holds a NaN.
    """
    scores = np.asarray(scores)
    n, c = scores.shape
    if not 1 <= k <= c:
        raise ValueError(f"k must be in [1, {c}], got {k}")
    if n == 0:
        return np.zeros((0, k), np.int64)
    bound, has_nan = _top_k_bound(scores, k)
    if has_nan:
        raise ValueError("scores contain NaN")
    return _top_k_entries(scores, k, bound)[1].reshape(n, k)


def _positive(labels):
    """{0, 1} labels -> bool; integers compare with 0 (same as > 0.5, ~5x faster on uint8)."""
    if labels.dtype == np.bool_:
        return labels
    if np.issubdtype(labels.dtype, np.integer):
        return labels > 0
    return labels > 0.5


class _RowCounts:
    """Per-chunk results of `ZSLEvaluator._count_rows` (merged in image order)."""

    __slots__ = ("offset", "pos_rows", "pos_cols", "keep", "num_pos", "tp")


class ZSLEvaluator:
    """Accumulates batches of scores and labels; reports ZSL and GZSL metrics.

    Args:
        unseen_indices: indices of the unseen labels (ZSL evaluates only these).
        ks: top-K values for P/R/F1.
        num_labels: C (else inferred from the first batch).
    """

    def __init__(self, unseen_indices, ks=(3, 5), num_labels=None):
        self.ks = tuple(int(k) for k in ks)
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"ks must be positive integers, got {ks}")
        unseen = np.asarray(unseen_indices, dtype=np.int64).reshape(-1)
        self.unseen_indices = np.unique(unseen)  # ascending: ties keep label-index order
        if self.unseen_indices.size != unseen.size:
            raise ValueError("unseen_indices contains duplicates")
        self.num_labels = None
        if num_labels is not None:
            self._set_num_labels(int(num_labels))
        self.reset()

    def _set_num_labels(self, num_labels):
        if self.unseen_indices.size and (
            self.unseen_indices[0] < 0 or self.unseen_indices[-1] >= num_labels
        ):
            raise ValueError(f"unseen_indices out of range for {num_labels} labels")
        self.num_labels = num_labels
        self._is_unseen = np.zeros(num_labels, bool)
        self._is_unseen[self.unseen_indices] = True

    def reset(self):
        """Forgets all accumulated batches."""
        self._blocks = []  # filled (rows, C) float32 score blocks
        self._current = None  # block being filled
        self._fill = 0
        self._num_images = 0
        self._pos_rows = []  # global image index of each positive
        self._pos_cols = []  # label index of each positive
        self._keep = {p: [] for p in PROTOCOLS}
        self._tp = {p: np.zeros(len(self.ks), np.int64) for p in PROTOCOLS}
        self._num_pos = dict.fromkeys(PROTOCOLS, 0)

    # -- accumulation ------------------------------------------------------------------------

    def _check_batch(self, labels, batch, num_labels):
        labels = np.asarray(labels)
        if self.num_labels is None:
            self._set_num_labels(num_labels)
        if labels.shape != (batch, self.num_labels) or num_labels != self.num_labels:
            raise ValueError(
                f"expected labels ({batch}, {self.num_labels}) for a batch of {batch} images "
                f"over {self.num_labels} labels, got labels {labels.shape} and {num_labels} labels"
            )
        return labels

    def _reserve(self, rows):
        """Stores room for `rows` new images: [(slice of the store, start, stop)], in order.

        The room is taken at once, so `_rollback(rows)` undoes it whatever happens next.
        """
        parts, done = [], 0
        while done < rows:
            if self._current is None:
                capacity = max(1, _BLOCK_BYTES // (4 * self.num_labels))
                self._current = np.empty((capacity, self.num_labels), np.float32)
                self._fill = 0
            take = min(rows - done, self._current.shape[0] - self._fill)
            parts.append((self._current[self._fill : self._fill + take], done, done + take))
            self._fill += take
            done += take
            if self._fill == self._current.shape[0]:
                self._blocks.append(self._current)
                self._current = None
        return parts

    def update_scores(self, scores, labels):
        """Adds a batch of tag scores (B, C) with labels (B, C) in {0, 1}.

        Raises:
            ValueError: on wrong shapes, or if a score is NaN (the batch is then not added).
        """
        scores = np.asarray(scores)
        if scores.ndim != 2:
            raise ValueError(f"expected scores (B, C), got {scores.shape}")
        labels = self._check_batch(labels, scores.shape[0], scores.shape[1])
        counts = []
        try:
            for out, start, stop in self._reserve(scores.shape[0]):
                for r0 in range(start, stop, _CHUNK_ROWS):
                    r1 = min(r0 + _CHUNK_ROWS, stop)
                    chunk = self._count_rows(
                        out[r0 - start : r1 - start], labels[r0:r1], r0, scores[r0:r1]
                    )
                    if chunk is None:
                        raise ValueError(
                            f"NaN scores in the batch starting at image {self._num_images} "
                            "(check the model outputs)"
                        )
                    counts.append(chunk)
        except BaseException:
            self._rollback(scores.shape[0])  # all or nothing
            raise
        self._merge(counts, scores.shape[0])

    def _rollback(self, rows):
        """Forgets the last `rows` stored score rows (a rejected batch)."""
        while rows > 0:
            if self._current is None or self._fill == 0:
                self._current = self._blocks.pop()
                self._fill = self._current.shape[0]
            take = min(rows, self._fill)
            self._fill -= take
            rows -= take

    def _count_rows(self, out, labels, offset, scores):
        """Stores the scores of a chunk of a batch and counts its positives and top-K hits.

        Args:
            out: (n, C) float32 slice of the store for these rows.
            labels: (n, C) labels of these rows.
            offset: index of the first row in the batch.
            scores: (n, C) scores to copy into `out`.

        Returns:
            A `_RowCounts`, or None if the scores hold a NaN.
        """
        out[...] = scores
        res = _RowCounts()
        res.offset = offset
        n, c = out.shape
        # GZSL ranks all labels of every row (a dropped row has no positive, so no hit): its
        # bound pass over all the scores is also the NaN check.
        bound, has_nan = _top_k_bound(out, min(max(self.ks), c)) if c else (None, False)
        if has_nan:
            return None
        positive = _positive(labels)
        rows, cols = np.divmod(np.flatnonzero(positive), c)
        res.pos_rows, res.pos_cols = rows, cols.astype(np.int32)
        res.keep, res.num_pos, res.tp = {}, {}, {}
        for protocol in PROTOCOLS:
            if protocol == "zsl":
                unseen = self._is_unseen[cols]
                eval_rows, num_eval = rows[unseen], self.unseen_indices.size
            else:
                eval_rows, num_eval = rows, c
            keep = np.zeros(n, bool)
            keep[eval_rows] = True
            res.keep[protocol] = keep
            res.num_pos[protocol] = eval_rows.size
            res.tp[protocol] = np.zeros(len(self.ks), np.int64)
            if eval_rows.size == 0:
                continue
            k_max = min(max(self.ks), num_eval)
            if protocol == "zsl":
                # Only the kept rows, only the unseen labels (one gather of those scores).
                kept = np.flatnonzero(keep)
                s_eval = out.reshape(-1)[(kept * c)[:, None] + self.unseen_indices]
                bound_eval, _ = _top_k_bound(s_eval, k_max)
                top_rows, top_cols, ranks = _top_k_entries(s_eval, k_max, bound_eval)
                hits = positive[kept[top_rows], self.unseen_indices[top_cols]]
            else:
                top_rows, top_cols, ranks = _top_k_entries(out, k_max, bound)
                hits = positive[top_rows, top_cols]
            # TP within the first j + 1 predictions, summed over the rows.
            cumulative = np.cumsum(np.bincount(ranks[hits], minlength=k_max))
            for i, k in enumerate(self.ks):
                res.tp[protocol][i] = cumulative[min(k, num_eval) - 1]
        return res

    def _merge(self, counts, rows):
        """Adds the per-chunk results of a batch of `rows` images."""
        for r in counts:
            self._pos_rows.append(r.pos_rows + (self._num_images + r.offset))
            self._pos_cols.append(r.pos_cols)
            for protocol in PROTOCOLS:
                self._keep[protocol].append(r.keep[protocol])
                self._num_pos[protocol] += int(r.num_pos[protocol])
                self._tp[protocol] += r.tp[protocol]
        self._num_images += rows

    # -- results -----------------------------------------------------------------------------

    def _score_blocks(self):
        blocks = list(self._blocks)
        if self._current is not None and self._fill:
            blocks.append(self._current[: self._fill])
        return blocks

    def _column_aps(self, columns, keep):
        """Average precision of each label in `columns` over the images where `keep`."""
        return average_precision.column_aps(
            self._score_blocks(), keep, columns, self._pos_rows, self._pos_cols,
            self.num_labels, workers=min(_cpu_count(), _MAX_AP_THREADS),
            block_bytes=_BLOCK_BYTES)

    def result(self):
        """Returns {"zsl": {...}, "gzsl": {...}} (see module doc; metrics in percent)."""
        if self.num_labels is None:
            raise ValueError("no batch was added")
        out = {}
        for protocol in PROTOCOLS:
            if protocol == "zsl":
                columns = self.unseen_indices
            else:
                columns = np.arange(self.num_labels)
            keep = (
                np.concatenate(self._keep[protocol]) if self._keep[protocol] else np.zeros(0, bool)
            )
            num_kept = int(keep.sum())
            res = {}
            for i, k in enumerate(self.ks):
                predicted = num_kept * min(k, columns.size)
                tp = int(self._tp[protocol][i])
                p = 100.0 * tp / predicted if predicted else float("nan")
                num_pos = self._num_pos[protocol]
                r = 100.0 * tp / num_pos if num_pos else float("nan")
                res[f"P@{k}"] = p
                res[f"R@{k}"] = r
                res[f"F1@{k}"] = 0.0 if not (p > 0 and r > 0) else 2 * p * r / (p + r)
            aps = self._column_aps(columns, keep)
            per_label = np.full(self.num_labels, np.nan)
            per_label[columns] = aps
            with_pos = ~np.isnan(aps)
            res["mAP"] = float(100.0 * aps[with_pos].mean()) if with_pos.any() else float("nan")
            res["num_images"] = num_kept
            res["num_labels"] = int(columns.size)
            res["num_labels_without_positive"] = int(columns.size - with_pos.sum())
            res["per_label_ap"] = per_label
            out[protocol] = res
        return out


def evaluate_scores(scores, labels, unseen_indices, ks=(3, 5), batch_size=4096):
    """One-shot ZSL/GZSL evaluation of a (N, C) score matrix against (N, C) {0, 1} labels.

    Returns:
        The `ZSLEvaluator.result()` dict.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be equal (N, C)")
    evaluator = ZSLEvaluator(unseen_indices, ks=ks, num_labels=scores.shape[1])
    for start in range(0, scores.shape[0], batch_size):
        evaluator.update_scores(
            scores[start : start + batch_size], labels[start : start + batch_size]
        )
    return evaluator.result()
