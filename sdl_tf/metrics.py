"""Streaming ZSL/GZSL evaluation: mAP and micro P/R/F1 at top-K (paper section 4, Table 1).

Protocol (the authors' evaluation, see ``../shared/golden/README.md``):

* Tag scores are s_c = max over the rows of A t_c (eq. 1; ``scoring="l2"`` for the baseline).
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
label), the positives as sparse indices, and the top-K counts; it never builds an (N, C, M)
tensor. AP uses only the ranks of the positives: each label's column is sorted once (in column
chunks) and the positives' scores are located by binary search; only a positive whose score
ties with another image's score needs one extra comparison pass over its column.
"""

import concurrent.futures
import os
import threading

import numpy as np

PROTOCOLS = ("zsl", "gzsl")
SCORINGS = ("max", "l2")  # as sdl_tf.scoring.SCORINGS (not imported: no TensorFlow here)

# Rows per stored score block: ~64 MB blocks keep per-block Python overhead negligible whatever
# the caller's batch size.
_BLOCK_BYTES = 1 << 26
# Worker threads of the AP computation (each holds two _BLOCK_BYTES buffers).
_MAX_AP_THREADS = 4
# Columns with at most this many labels are ranked by a full stable argsort per row; wider rows
# use the group-maximum bound in `top_k_indices`.
_ARGSORT_MAX_LABELS = 512
# Images per score GEMM block in `numpy_scores` (into a reused workspace; measured faster than
# smaller cache-sized blocks with OpenBLAS on 2 cores).
_GEMM_BLOCK = 512


def _check_scoring(scoring):
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
    return scoring


def numpy_scores(
    matrices,
    vectors,
    scoring="max",
    out=None,
    block_size=_GEMM_BLOCK,
    workspace=None,
    vectors_t=None,
):
    """NumPy (float32) twin of `sdl_tf.scoring.scores_from_matrices` (eq. 1 or l2).

    Images are processed in blocks of `block_size`: each block is one BLAS GEMM
    (block*M, d) x (d, C) into a reused workspace (no page faults of a fresh allocation), then
    the max over the M rows (eq. 1) is one pass over that workspace. Never (B, M, C) at once
    beyond one block.

    Args:
        matrices: (B, M, d) array.
        vectors: (C, d) array.
        scoring: "max" or "l2".
        out: optional (B, C) float32 array to write the scores into.
        block_size: images per GEMM block.
        workspace: optional float32 array with at least block_size*M*C elements, reused.
        vectors_t: optional C-contiguous float32 (d, C) transpose of `vectors`, reused.

    Returns:
        (B, C) float32 array of scores (`out` if given).
    """
    _check_scoring(scoring)
    matrices = np.asarray(matrices, dtype=np.float32)
    vectors = np.asarray(vectors, dtype=np.float32)
    if matrices.ndim != 3 or vectors.ndim != 2 or matrices.shape[2] != vectors.shape[1]:
        raise ValueError(
            f"expected matrices (B, M, d) and vectors (C, d) with the same d, got "
            f"{matrices.shape} and {vectors.shape}"
        )
    b, m, d = matrices.shape
    c = vectors.shape[0]
    if out is None:
        out = np.empty((b, c), np.float32)
    elif out.shape != (b, c) or out.dtype != np.float32:
        raise ValueError(f"out must be a float32 array of shape {(b, c)}, got {out.shape}")
    block_size = max(1, min(block_size, b))
    if workspace is None or workspace.size < block_size * m * c:
        workspace = np.empty(block_size * m * c, np.float32)
    if vectors_t is None:
        vectors_t = np.ascontiguousarray(vectors.T)
    for start in range(0, b, block_size):
        stop = min(start + block_size, b)
        products = workspace.reshape(-1)[: (stop - start) * m * c].reshape((stop - start) * m, c)
        np.matmul(matrices[start:stop].reshape(-1, d), vectors_t, out=products)
        products = products.reshape(stop - start, m, c)
        if scoring == "max":
            np.max(products, axis=1, out=out[start:stop])
        else:
            np.sqrt(np.einsum("bmc,bmc->bc", products, products), out=out[start:stop])
    return out


def top_k_indices(scores, k):
    """Indices of the top-k scores per row: higher score first, ties -> lower index first.

    For wide rows, a lower bound on each row's k-th largest score is the k-th largest of the
    maxima of G >= k column groups (the k best groups each hold a score >= it), so only the few
    scores above the bound are sorted. The result is exact, including ties.

    Args:
        scores: (n, c) float array without NaN.
        k: number of indices per row, 1 <= k <= c.

    Returns:
        (n, k) int64 array of column indices.
    """
    n, c = scores.shape
    if not 1 <= k <= c:
        raise ValueError(f"k must be in [1, {c}], got {k}")
    num_groups = max(64, 4 * k)
    if c <= max(_ARGSORT_MAX_LABELS, 4 * num_groups) or n == 0:
        # Stable sort of the negated scores: descending, equal scores keep index order.
        return np.argsort(-scores, axis=1, kind="stable")[:, :k].astype(np.int64)
    width = c // num_groups
    group_max = scores[:, : num_groups * width].reshape(n, num_groups, width).max(axis=2)
    if num_groups * width < c:
        rest = scores[:, num_groups * width :].max(axis=1, keepdims=True)
        group_max = np.concatenate([group_max, rest], axis=1)
    num = group_max.shape[1]
    bound = np.partition(group_max, num - k, axis=1)[:, num - k]
    # flatnonzero + divmod: 2-D np.nonzero is ~20x slower on sparse masks.
    rows, cols = np.divmod(np.flatnonzero(scores >= bound[:, None]), c)
    values = scores[rows, cols]
    order = np.lexsort((cols, -values, rows))  # by row, then score desc, then index asc
    rows, cols = rows[order], cols[order]
    counts = np.bincount(rows, minlength=n)
    starts = np.cumsum(counts) - counts
    rank_in_row = np.arange(rows.size) - starts[rows]
    return cols[rank_in_row < k].reshape(n, k).astype(np.int64)


class ZSLEvaluator:
    """Accumulates batches of matrices (or scores) and labels; reports ZSL and GZSL metrics.

    Args:
        label_vectors: (C, d) word vectors of all labels (in label-space order), or None to
            only use `update_scores`.
        unseen_indices: indices of the unseen labels (ZSL evaluates only these).
        ks: top-K values for P/R/F1.
        scoring: "max" (eq. 1) or "l2".
        num_labels: C, needed only when `label_vectors` is None (else inferred from the first
            batch).
    """

    def __init__(self, label_vectors, unseen_indices, ks=(3, 5), scoring="max", num_labels=None):
        self.scoring = _check_scoring(scoring)
        self.label_vectors = None
        if label_vectors is not None:
            self.label_vectors = np.asarray(label_vectors, dtype=np.float32)
            if self.label_vectors.ndim != 2:
                raise ValueError(f"label_vectors must be (C, d), got {self.label_vectors.shape}")
            num_labels = self.label_vectors.shape[0]
            self._vectors_t = np.ascontiguousarray(self.label_vectors.T)
        self._workspace = None  # reused GEMM output buffer
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
        return labels > 0.5

    def _reserve(self, rows):
        """Yields (slice of the store, start, stop) for `rows` new images, in order."""
        done = 0
        while done < rows:
            if self._current is None:
                capacity = max(1, _BLOCK_BYTES // (4 * self.num_labels))
                self._current = np.empty((capacity, self.num_labels), np.float32)
                self._fill = 0
            take = min(rows - done, self._current.shape[0] - self._fill)
            yield self._current[self._fill : self._fill + take], done, done + take
            self._fill += take
            done += take
            if self._fill == self._current.shape[0]:
                self._blocks.append(self._current)
                self._current = None

    def update(self, matrices, labels):
        """Adds a batch of per-image matrices (B, M, d) with labels (B, C) in {0, 1}."""
        if self.label_vectors is None:
            raise ValueError("update() needs label_vectors; use update_scores() instead")
        matrices = np.asarray(matrices, dtype=np.float32)
        if matrices.ndim != 3 or matrices.shape[2] != self.label_vectors.shape[1]:
            raise ValueError(
                f"expected matrices (B, M, {self.label_vectors.shape[1]}), got {matrices.shape}"
            )
        positive = self._check_batch(labels, matrices.shape[0], self.label_vectors.shape[0])
        size = _GEMM_BLOCK * matrices.shape[1] * self.num_labels
        if self._workspace is None or self._workspace.size < size:
            self._workspace = np.empty(size, np.float32)
        stored = []
        for out, start, stop in self._reserve(matrices.shape[0]):
            numpy_scores(
                matrices[start:stop],
                self.label_vectors,
                self.scoring,
                out=out,
                workspace=self._workspace,
                vectors_t=self._vectors_t,
            )
            stored.append(out)
        self._count(stored, positive)

    def update_scores(self, scores, labels):
        """Adds a batch of tag scores (B, C) with labels (B, C) in {0, 1}."""
        scores = np.asarray(scores)
        if scores.ndim != 2:
            raise ValueError(f"expected scores (B, C), got {scores.shape}")
        positive = self._check_batch(labels, scores.shape[0], scores.shape[1])
        stored = []
        for out, start, stop in self._reserve(scores.shape[0]):
            out[...] = scores[start:stop]
            stored.append(out)
        self._count(stored, positive)

    def _rollback(self, rows):
        """Forgets the last `rows` stored score rows (a rejected batch)."""
        while rows > 0:
            if self._current is None or self._fill == 0:
                self._current = self._blocks.pop()
                self._fill = self._current.shape[0]
            take = min(rows, self._fill)
            self._fill -= take
            rows -= take

    def _count(self, stored, positive):
        """Top-K counts of a new batch whose scores were written to the `stored` slices."""
        for part in stored:
            if np.isnan(part).any():
                self._rollback(positive.shape[0])
                raise ValueError(
                    f"NaN scores in the batch starting at image {self._num_images} "
                    "(check the model outputs)"
                )
        scores = stored[0] if len(stored) == 1 else np.concatenate(stored)
        rows, cols = np.divmod(np.flatnonzero(positive), positive.shape[1])
        self._pos_rows.append(rows.astype(np.int64) + self._num_images)
        self._pos_cols.append(cols.astype(np.int32))
        self._num_images += scores.shape[0]
        for protocol in PROTOCOLS:
            if protocol == "zsl":
                pos_eval = positive[:, self.unseen_indices]
            else:
                pos_eval = positive
            num_pos = pos_eval.sum(axis=1)
            keep = num_pos > 0
            self._keep[protocol].append(keep)
            self._num_pos[protocol] += int(num_pos.sum())
            num_eval = pos_eval.shape[1]
            if num_eval == 0 or not keep.any():
                continue
            if protocol == "zsl":
                s_eval = scores[np.ix_(keep, self.unseen_indices)]
            else:
                s_eval = scores if keep.all() else scores[keep]
            pos_kept = pos_eval if keep.all() else pos_eval[keep]
            k_max = min(max(self.ks), num_eval)
            hits = np.take_along_axis(pos_kept, top_k_indices(s_eval, k_max), axis=1)
            cumulative = np.cumsum(hits.sum(axis=0))  # TP within the first j + 1 predictions
            for i, k in enumerate(self.ks):
                self._tp[protocol][i] += int(cumulative[min(k, num_eval) - 1])

    # -- results -----------------------------------------------------------------------------

    def _score_blocks(self):
        blocks = list(self._blocks)
        if self._current is not None and self._fill:
            blocks.append(self._current[: self._fill])
        return blocks

    def _column_aps(self, columns, keep):
        """Average precision of each label in `columns` over the images where `keep`."""
        aps = np.full(columns.size, np.nan)
        kept_index = np.full(self._num_images, -1, np.int64)
        kept_index[keep] = np.arange(int(keep.sum()))
        n = int(keep.sum())
        if n == 0 or columns.size == 0:
            return aps
        slot_of_label = np.full(self.num_labels, -1, np.int64)
        slot_of_label[columns] = np.arange(columns.size)
        rows = kept_index[np.concatenate(self._pos_rows)]
        slots = slot_of_label[np.concatenate(self._pos_cols)]
        valid = (rows >= 0) & (slots >= 0)
        rows, slots = rows[valid], slots[valid]
        order = np.lexsort((rows, slots))
        rows, slots = rows[order], slots[order]
        bounds = np.searchsorted(slots, np.arange(columns.size + 1))

        blocks = self._score_blocks()
        block_keep, start = [], 0
        for block in blocks:
            block_keep.append(keep[start : start + block.shape[0]])
            start += block.shape[0]
        contiguous = bool(np.all(np.diff(columns) == 1))
        chunk = int(max(1, min(columns.size, _BLOCK_BYTES // (4 * n))))
        buffers = threading.local()

        def process(c0):
            c1 = min(c0 + chunk, columns.size)
            if bounds[c0] == bounds[c1]:
                return  # no positive in these labels
            if not hasattr(buffers, "slab"):  # one pair of buffers per worker thread
                buffers.slab = np.empty((chunk, n), np.float32)
                buffers.ordered = np.empty((chunk, n), np.float32)
            # (labels, kept images) slab of the score matrix, one label per row.
            slab = buffers.slab[: c1 - c0]
            offset = 0
            for block, bk in zip(blocks, block_keep, strict=True):
                part = (
                    block[:, columns[c0] : columns[c0] + (c1 - c0)]
                    if contiguous
                    else block[:, columns[c0:c1]]
                )
                if not bk.all():
                    part = part[bk]
                # Transpose in 64-row tiles: a whole strided `.T` copy is ~15x slower.
                for r in range(0, part.shape[0], 64):
                    tile = part[r : r + 64]
                    slab[:, offset : offset + tile.shape[0]] = tile.T
                    offset += tile.shape[0]
            pos_rows = rows[bounds[c0] : bounds[c1]]
            pos_scores = slab[slots[bounds[c0] : bounds[c1]] - c0, pos_rows]
            ordered = buffers.ordered[: c1 - c0]
            ordered[...] = slab
            ordered.sort(axis=1)
            for j in range(c0, c1):
                lo, hi = bounds[j] - bounds[c0], bounds[j + 1] - bounds[c0]
                if lo == hi:
                    continue
                p = pos_scores[lo:hi]
                ordered_column = ordered[j - c0]
                greater = n - np.searchsorted(ordered_column, p, side="right")
                tied = (n - np.searchsorted(ordered_column, p, side="left")) - greater > 1
                # rank = 1 + (number of higher scores) + (number of equal scores of earlier
                # images); ranking the positives by rank, the i-th has i positives at or above.
                ranks = greater + 1
                for t in np.flatnonzero(tied):
                    equal = np.flatnonzero(slab[j - c0] == p[t])  # ascending image index
                    ranks[t] += np.searchsorted(equal, pos_rows[lo + t])
                ranks.sort()
                aps[j] = np.add.reduce(np.arange(1, hi - lo + 1) / ranks) / (hi - lo)

        # Label chunks are independent (each writes only its own `aps` entries) and the work is
        # numpy copies and sorts, which release the GIL: one thread per core.
        starts = range(0, columns.size, chunk)
        workers = min(len(starts), os.cpu_count() or 1, _MAX_AP_THREADS)
        if workers <= 1:
            for c0 in starts:
                process(c0)
        else:
            with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                for _ in pool.map(process, starts):
                    pass  # re-raises a worker's exception
        return aps

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
                np.concatenate(self._keep[protocol])
                if self._keep[protocol]
                else np.zeros(0, bool)
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
    evaluator = ZSLEvaluator(None, unseen_indices, ks=ks, num_labels=scores.shape[1])
    for start in range(0, scores.shape[0], batch_size):
        evaluator.update_scores(
            scores[start : start + batch_size], labels[start : start + batch_size]
        )
    return evaluator.result()
