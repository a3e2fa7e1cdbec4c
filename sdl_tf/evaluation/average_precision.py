"""Per-label average precision over a stored (N, C) score matrix (the mAP of `metrics`).

AP of a label: rank the kept images by that label's score (higher first; equal scores -> the
image added earlier first) and average, over the label's positives, the precision at their
rank. Only the ranks of the positives are needed: each label's column is sorted once (in column
chunks, one worker thread per core: numpy releases the GIL in these copies and sorts, and each
chunk writes only its own labels, so the results do not depend on the number of threads) and the
positives' scores are located by binary search; only a positive whose score ties with another
image's score needs one extra comparison pass over its column.
"""

import concurrent.futures
import threading

import numpy as np

# Rows per transposed tile when the AP slabs are built from the row-major score blocks.
_TILE_ROWS = 256


def column_aps(blocks, keep, columns, pos_rows, pos_cols, num_labels, *, workers: int,
               block_bytes: int) -> np.ndarray:
    """Average precision of each label in `columns` over the images where `keep`.

    Args:
        blocks: the (rows, C) float32 score blocks, in image order (N rows in all).
        keep: (N,) bool, the images evaluated.
        columns: (L,) ascending int64 label indices.
        pos_rows, pos_cols: lists of arrays: image index and label index of every positive.
        num_labels: C.
        workers: worker threads (at most; fewer when there are fewer label chunks).
        block_bytes: bytes per buffer of a label chunk (each worker holds two).

    Returns:
        (L,) float64 AP in [0, 1], NaN for a label without a positive among the kept images.
    """
    aps = np.full(columns.size, np.nan)
    n = int(keep.sum())
    if n == 0 or columns.size == 0:
        return aps
    computer = _ColumnAPs(blocks, keep, columns, pos_rows, pos_cols, num_labels, aps)
    # Chunks of at most block_bytes per buffer, and enough of them to keep every worker busy.
    computer.chunk = int(max(1, min(-(-columns.size // (4 * workers)), block_bytes // (4 * n))))
    # Label chunks are independent (each writes only its own `aps` entries) and the work is
    # numpy copies and sorts, which release the GIL: one thread per core.
    starts = range(0, columns.size, computer.chunk)
    workers = min(len(starts), workers)
    if workers <= 1:
        for c0 in starts:
            computer.process(c0)
    else:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(computer.process, starts):
                pass  # re-raises a worker's exception
    return aps


def _positives_by_label(keep, columns, pos_rows, pos_cols, num_labels):
    """The positives among the kept images and `columns`, sorted by label slot then image.

    Returns:
        (rows: kept-image index of each, slots: index into `columns` of each, bounds:
        (L + 1,) start of each slot's positives).
    """
    kept_index = np.full(keep.size, -1, np.int64)
    kept_index[keep] = np.arange(int(keep.sum()))
    slot_of_label = np.full(num_labels, -1, np.int64)
    slot_of_label[columns] = np.arange(columns.size)
    rows = kept_index[np.concatenate(pos_rows)]
    slots = slot_of_label[np.concatenate(pos_cols)]
    valid = (rows >= 0) & (slots >= 0)
    rows, slots = rows[valid], slots[valid]
    order = np.lexsort((rows, slots))
    rows, slots = rows[order], slots[order]
    return rows, slots, np.searchsorted(slots, np.arange(columns.size + 1))


def _positive_ranks(slab, ordered, pos_labels, pos_rows, segments, with_pos, n):
    """Rank (1-based) of each positive among the n kept images of its label.

    rank = 1 + (number of higher scores) + (number of equal scores of earlier images).

    Args:
        slab: (labels, n) scores of a label chunk, images in order.
        ordered: the same, each row sorted ascending.
        pos_labels, pos_rows: label (in the chunk) and kept-image index of each positive,
            grouped by label; `segments`: start of each label's positives (+ the end).
        with_pos: the chunk's labels with at least one positive.
    """
    pos_scores = slab[pos_labels, pos_rows]
    at_or_below = np.empty(pos_rows.size, np.int64)
    for j in with_pos:  # one binary search per label, the rest per chunk
        lo, hi = segments[j], segments[j + 1]
        at_or_below[lo:hi] = ordered[j].searchsorted(pos_scores[lo:hi], side="right")
    ranks = n - at_or_below + 1
    # p itself is at at_or_below - 1; another image ties iff the one before is p.
    before = ordered[pos_labels, np.maximum(at_or_below - 2, 0)]
    for t in np.flatnonzero((at_or_below >= 2) & (before == pos_scores)):
        equal = np.flatnonzero(slab[pos_labels[t]] == pos_scores[t])  # image order
        ranks[t] += np.searchsorted(equal, pos_rows[t])
    return ranks


class _ColumnAPs:
    """The state shared by the label chunks of one `column_aps` call."""

    def __init__(self, blocks, keep, columns, pos_rows, pos_cols, num_labels, aps):
        self.blocks = blocks
        self.block_keep, start = [], 0
        for block in blocks:
            self.block_keep.append(keep[start : start + block.shape[0]])
            start += block.shape[0]
        self.columns = columns
        self.contiguous = bool(np.all(np.diff(columns) == 1))
        self.n = int(keep.sum())
        self.rows, self.slots, self.bounds = _positives_by_label(keep, columns, pos_rows,
                                                                 pos_cols, num_labels)
        self.aps = aps
        self.chunk = 1
        self.buffers = threading.local()

    def fill(self, slab, c0, c1):
        """(labels c0..c1, kept images) slab of the score matrix, one label per row."""
        columns, offset = self.columns, 0
        for block, bk in zip(self.blocks, self.block_keep, strict=True):
            part = (
                block[:, columns[c0] : columns[c0] + (c1 - c0)]
                if self.contiguous
                else block[:, columns[c0:c1]]
            )
            if not bk.all():
                part = part[bk]
            # Transpose in tiles: a whole strided `.T` copy is ~4x slower (and 64-row
            # tiles ~1.5x slower: more Python calls, shorter contiguous runs per label).
            for r in range(0, part.shape[0], _TILE_ROWS):
                tile = part[r : r + _TILE_ROWS]
                slab[:, offset : offset + tile.shape[0]] = tile.T
                offset += tile.shape[0]

    def process(self, c0):
        """Computes the APs of the labels c0 .. c0 + chunk - 1."""
        bounds, chunk = self.bounds, self.chunk
        c1 = min(c0 + chunk, self.columns.size)
        if bounds[c0] == bounds[c1]:
            return  # no positive in these labels
        if not hasattr(self.buffers, "slab"):  # one pair of buffers per worker thread
            self.buffers.slab = np.empty((chunk, self.n), np.float32)
            self.buffers.ordered = np.empty((chunk, self.n), np.float32)
        slab = self.buffers.slab[: c1 - c0]
        self.fill(slab, c0, c1)
        # The chunk's positives, grouped by label (ascending), then by image.
        segments = bounds[c0 : c1 + 1] - bounds[c0]
        with_pos = np.flatnonzero(np.diff(segments))
        pos_rows = self.rows[bounds[c0] : bounds[c1]]
        pos_labels = self.slots[bounds[c0] : bounds[c1]] - c0
        # A sorted copy: the image order in `slab` is needed for ties, which are not rare
        # (float32 scores of ~1e5 images collide in most label chunks).
        ordered = self.buffers.ordered[: c1 - c0]
        ordered[...] = slab
        ordered.sort(axis=1)
        ranks = _positive_ranks(slab, ordered, pos_labels, pos_rows, segments, with_pos, self.n)
        # Ranking a label's positives by rank, the i-th has i positives at or above it.
        ranks = ranks[np.lexsort((ranks, pos_labels))]
        precision = (np.arange(ranks.size) - segments[pos_labels] + 1) / ranks
        for j in with_pos:
            lo, hi = segments[j], segments[j + 1]
            self.aps[c0 + j] = np.add.reduce(precision[lo:hi]) / (hi - lo)
