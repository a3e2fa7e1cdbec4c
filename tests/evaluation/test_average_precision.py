"""Tests for sdl_tf.evaluation.average_precision: per-label AP over stored score blocks against a
direct definition, with ties, dropped images, label subsets, chunk sizes and threads."""

import numpy as np
import pytest

from sdl_tf.evaluation import average_precision


def _reference_ap(scores, labels):
    """AP of one label: images by score desc, ties -> earlier image first; mean precision at
    the positives' ranks (NaN without a positive)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    hits, precisions = 0, []
    for rank, i in enumerate(order, start=1):
        if labels[i]:
            hits += 1
            precisions.append(hits / rank)
    return float(np.mean(precisions)) if precisions else float("nan")


def _case(seed, n=60, c=12):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 5, (n, c)).astype(np.float32)  # many ties
    labels = rng.random((n, c)) < 0.2
    labels[:, 3] = False  # a label without a positive
    keep = rng.random(n) < 0.8
    return scores, labels, keep


@pytest.mark.parametrize("workers,block_bytes", [(1, 1 << 20), (3, 4 * 20), (2, 4)])
@pytest.mark.parametrize("columns", [np.arange(12), np.array([0, 3, 5, 6, 11])])
def test_column_aps_match_the_definition(workers, block_bytes, columns):
    scores, labels, keep = _case(0)
    blocks = [scores[:25], scores[25:26], scores[26:]]  # stored blocks of uneven sizes
    rows, cols = np.nonzero(labels)
    # Positives in chunks, as the evaluator stores them.
    pos_rows, pos_cols = [rows[:40], rows[40:]], [cols[:40], cols[40:]]
    got = average_precision.column_aps(blocks, keep, columns, pos_rows, pos_cols, 12,
                                       workers=workers, block_bytes=block_bytes)
    kept = np.flatnonzero(keep)
    want = [_reference_ap(scores[kept, c], labels[kept, c]) for c in columns]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert np.isnan(got[list(columns).index(3)])


def test_no_kept_image_or_no_label_gives_nan():
    scores, labels, _ = _case(1)
    rows, cols = np.nonzero(labels)
    none_kept = average_precision.column_aps([scores], np.zeros(len(scores), bool),
                                             np.arange(12), [rows], [cols], 12, workers=1,
                                             block_bytes=1 << 20)
    assert none_kept.shape == (12,) and np.isnan(none_kept).all()
    empty = average_precision.column_aps([scores], np.ones(len(scores), bool),
                                         np.zeros(0, np.int64), [rows], [cols], 12, workers=1,
                                         block_bytes=1 << 20)
    assert empty.shape == (0,)
