"""Tests for sdl_tf.evaluation.metrics: golden ZSL/GZSL values, tie-breaking, streaming, edges."""

import os

import numpy as np
import pytest

from sdl_tf.evaluation import metrics
from sdl_tf.modeling import scoring

KS = (3, 5, 10)


def _golden_cases(golden_dir):
    with np.load(os.path.join(golden_dir, "metrics.npz"), allow_pickle=False) as z:
        cases = sorted({k.split("_")[0] for k in z.files})
        return [{k[len(c) + 1 :]: z[k] for k in z.files if k.startswith(c + "_")} for c in cases]


def _assert_matches_golden(result, g):
    for protocol in ("zsl", "gzsl"):
        for k in KS:
            for name in ("P", "R", "F1"):
                expected = float(g[f"{protocol}_{name}{k}"])
                assert abs(result[protocol][f"{name}@{k}"] - expected) < 1e-6, (protocol, name, k)
        assert abs(result[protocol]["mAP"] - float(g[f"{protocol}_mAP"])) < 1e-6, protocol


def test_golden_one_shot(golden_dir):
    cases = _golden_cases(golden_dir)
    assert len(cases) == 4
    for g in cases:
        result = metrics.evaluate_scores(g["scores"], g["labels"], g["unseen"], ks=KS)
        _assert_matches_golden(result, g)
        gzsl = result["gzsl"]
        assert gzsl["num_labels"] == g["labels"].shape[1]
        assert gzsl["num_images"] == int((g["labels"].sum(1) > 0).sum())
        assert result["zsl"]["num_labels"] == g["unseen"].size
        assert result["zsl"]["num_images"] == int((g["labels"][:, g["unseen"]].sum(1) > 0).sum())
        assert gzsl["num_labels_without_positive"] == 0
        assert gzsl["per_label_ap"].shape == (g["labels"].shape[1],)
        seen = np.setdiff1d(np.arange(g["labels"].shape[1]), g["unseen"])
        assert np.all(np.isnan(result["zsl"]["per_label_ap"][seen]))


def test_golden_streaming_from_matrices(golden_dir, monkeypatch):
    # Tiny store blocks so batches straddle block boundaries.
    monkeypatch.setattr(metrics, "_BLOCK_BYTES", 600)
    for g in _golden_cases(golden_dir):
        evaluator = metrics.ZSLEvaluator(g["unseen"], ks=KS)
        for start in range(0, g["A"].shape[0], 37):
            scores = scoring.numpy_scores(g["A"][start : start + 37], g["wordvecs"])
            evaluator.update_scores(scores, g["labels"][start : start + 37])
        assert len(evaluator._blocks) > 1
        _assert_matches_golden(evaluator.result(), g)


def _reference(scores, labels, unseen, ks):
    """Brute-force protocol with the documented tie rules, loop by loop."""
    out = {}
    for protocol, cols in (("zsl", np.sort(unseen)), ("gzsl", np.arange(scores.shape[1]))):
        s, y = scores[:, cols], labels[:, cols] > 0
        keep = y.any(1)
        s, y = s[keep], y[keep]
        res = {}
        for k in ks:
            tp = pred = 0
            for si, yi in zip(s, y, strict=True):
                top = sorted(range(len(si)), key=lambda c, si=si: (-si[c], c))[:k]
                tp += yi[top].sum()
                pred += len(top)
            p, r = 100 * tp / pred, 100 * tp / y.sum()
            res[f"P@{k}"], res[f"R@{k}"] = p, r
            res[f"F1@{k}"] = 2 * p * r / (p + r) if p and r else 0.0
        aps = []
        for c in range(len(cols)):
            if not y[:, c].any():
                continue
            order = sorted(range(len(s)), key=lambda i, c=c: (-s[i, c], i))
            hits = y[order, c]
            ranks = np.flatnonzero(hits) + 1
            aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
        res["mAP"] = 100 * np.mean(aps)
        res["num_without"] = len(cols) - len(aps)
        out[protocol] = res
    return out


@pytest.mark.parametrize("num_labels", [40, 1300])  # argsort path and group-bound path
def test_ties_match_reference(num_labels, monkeypatch):
    monkeypatch.setattr(metrics, "_BLOCK_BYTES", 1 << 16)
    rng = np.random.default_rng(0)
    n = 60
    scores = rng.integers(0, 4, size=(n, num_labels)).astype(np.float32)  # many ties
    labels = (rng.random((n, num_labels)) < 0.05).astype(np.float32)
    labels[:5] = 0  # dropped images
    labels[:, 3] = 0  # a label without positive
    unseen = rng.choice(num_labels, size=12, replace=False)
    unseen[0] = 3
    got = metrics.evaluate_scores(scores, labels, unseen, ks=KS, batch_size=17)
    ref = _reference(scores, labels, unseen, KS)
    for protocol in ("zsl", "gzsl"):
        for key, value in ref[protocol].items():
            if key == "num_without":
                assert got[protocol]["num_labels_without_positive"] == value
            else:
                assert abs(got[protocol][key] - value) < 1e-9, (protocol, key)
        assert np.isnan(got[protocol]["per_label_ap"][3])


def test_top_k_indices_tie_rule():
    rng = np.random.default_rng(1)
    for c in (30, 2000):
        scores = rng.integers(0, 5, size=(50, c)).astype(np.float32)
        scores[0] = 7.0  # a row of all ties
        for k in (1, 3, 20):
            expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            np.testing.assert_array_equal(metrics.top_k_indices(scores, k), expected)
    np.testing.assert_array_equal(metrics.top_k_indices(np.zeros((1, 5)), 3), [[0, 1, 2]])
    with pytest.raises(ValueError, match="k must be"):
        metrics.top_k_indices(np.zeros((1, 5)), 6)


def test_hand_computed_ties():
    # Top-K: scores (1, 2, 2, 2, 0), positive = label 3. Ties -> lower label index first, so
    # the top-2 is labels (1, 2): TP = 0; top-3 is (1, 2, 3): TP = 1.
    scores = np.array([[1.0, 2.0, 2.0, 2.0, 0.0]])
    labels = np.array([[0, 0, 0, 1, 0]])
    res = metrics.evaluate_scores(scores, labels, [3], ks=(2, 3))["gzsl"]
    assert res["P@2"] == 0.0 and res["R@2"] == 0.0 and res["F1@2"] == 0.0
    assert res["P@3"] == pytest.approx(100 / 3) and res["R@3"] == 100.0

    # AP: one label, scores over 4 images (0.5, 0.9, 0.5, 0.1), positives = images 2 and 3.
    # Ties -> earlier image first: order 1, 0, 2, 3; positives at ranks 3 and 4:
    # AP = (1/3 + 2/4) / 2 = 5/12 (the other tie order would give 1/2).
    scores = np.array([[0.5], [0.9], [0.5], [0.1]])
    labels = np.array([[0], [0], [1], [1]])
    res = metrics.evaluate_scores(scores, labels, [0], ks=(1,))
    assert res["gzsl"]["num_images"] == 2  # images 0 and 1 have no positive: dropped
    # After dropping, the kept images are 2 and 3: AP = 1.
    assert res["gzsl"]["mAP"] == pytest.approx(100.0)
    # With two labels so that images 0 and 1 are kept (positives of label 1):
    scores = np.array([[0.5, 0.0], [0.9, 0.0], [0.5, 0.0], [0.1, 0.0]])
    labels = np.array([[0, 1], [0, 1], [1, 0], [1, 0]])
    res = metrics.evaluate_scores(scores, labels, [0], ks=(1,))
    assert res["gzsl"]["per_label_ap"][0] == pytest.approx(5 / 12)
    # ZSL evaluates only label 0: images 0 and 1 are dropped, AP = 1.
    assert res["zsl"]["per_label_ap"][0] == pytest.approx(1.0)
    assert np.isnan(res["zsl"]["per_label_ap"][1])


def test_k_larger_than_evaluated_labels():
    # ZSL with 2 unseen labels and K = 5: each image predicts only 2.
    scores = np.array([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.1, 0.7]])
    labels = np.array([[1, 0, 1, 0], [0, 1, 0, 0]])
    res = metrics.evaluate_scores(scores, labels, [2, 3], ks=(1, 5))["zsl"]
    assert res["num_images"] == 1 and res["num_labels"] == 2
    assert res["P@5"] == 50.0 and res["R@5"] == 100.0  # 1 TP of 2 predicted
    assert res["P@1"] == 100.0  # label 2 (0.5) beats label 3 (0.3)


def test_numpy_scores_and_brute_force_scores_agree():
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(9, 5))
    matrices = rng.normal(size=(30, 3, 5))
    labels = (rng.random((30, 9)) < 0.3).astype(int)
    a = metrics.ZSLEvaluator([1, 4], ks=(2,))
    b = metrics.ZSLEvaluator([4, 1], ks=(2,), num_labels=9)
    scorer = scoring.NumpyScorer(vectors)  # as the evaluator: one scorer, many batches
    for s in range(0, 30, 8):
        a.update_scores(scorer.scores(matrices[s : s + 8]), labels[s : s + 8])
        b.update_scores((matrices[s : s + 8] @ vectors.T).max(1), labels[s : s + 8])
    ra, rb = a.result(), b.result()
    for protocol in ("zsl", "gzsl"):
        for key in ("mAP", "P@2", "R@2", "F1@2", "num_images"):
            assert ra[protocol][key] == pytest.approx(rb[protocol][key], abs=1e-9)
    # l2 scoring uses the norm of A t.
    c = metrics.ZSLEvaluator([1, 4], ks=(2,))
    c.update_scores(scoring.numpy_scores(matrices, vectors, "l2"), labels)
    ref = metrics.evaluate_scores(np.linalg.norm(matrices @ vectors.T, axis=1), labels, [1, 4])
    assert c.result()["gzsl"]["mAP"] == pytest.approx(ref["gzsl"]["mAP"], abs=1e-4)


def test_errors_and_nan_rollback():
    evaluator = metrics.ZSLEvaluator([0], ks=(1,), num_labels=3)
    with pytest.raises(ValueError, match="no batch"):
        metrics.ZSLEvaluator([0]).result()
    with pytest.raises(ValueError, match="labels"):
        evaluator.update_scores(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"expected scores \(B, C\)"):  # matrices, not scores
        evaluator.update_scores(np.zeros((1, 1, 2)), np.zeros((1, 3)))
    evaluator.update_scores([[0.3, 0.1, 0.2]], [[1, 0, 0]])
    with pytest.raises(ValueError, match="NaN scores in the batch starting at image 1"):
        evaluator.update_scores([[np.nan, 0.1, 0.2]], [[0, 1, 0]])
    res = evaluator.result()  # the rejected batch left no trace
    assert res["gzsl"]["num_images"] == 1 and res["gzsl"]["mAP"] == 100.0
    assert res["gzsl"]["num_labels_without_positive"] == 2
    with pytest.raises(ValueError, match="out of range"):
        metrics.ZSLEvaluator([5], num_labels=3)
    with pytest.raises(ValueError, match="duplicates"):
        metrics.ZSLEvaluator([1, 1], num_labels=3)


def _assert_same_result(a, b):
    for protocol in ("zsl", "gzsl"):
        assert a[protocol].keys() == b[protocol].keys()
        for key, value in a[protocol].items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(value, b[protocol][key])
            else:
                assert value == b[protocol][key] or (np.isnan(value) and np.isnan(b[protocol][key]))


def _tied_batches(rng, n, num_labels, m=3, d=4):
    """Matrices and labels whose scores tie a lot (small integers), plus dropped images."""
    vectors = rng.integers(-1, 2, size=(num_labels, d)).astype(np.float32)
    matrices = rng.integers(-2, 3, size=(n, m, d)).astype(np.float32)
    labels = (rng.random((n, num_labels)) < 0.03).astype(np.uint8)
    labels[::7] = 0  # dropped images
    return vectors, matrices, labels


@pytest.mark.parametrize("num_labels", [40, 1300])  # exact-bound path and group-bound path
def test_results_do_not_depend_on_threads_or_chunks(num_labels, monkeypatch):
    # Small GEMM blocks, store blocks and update_scores chunks, so that batches span several of
    # each; 1 or 3 AP worker threads.
    monkeypatch.setattr(metrics, "_CHUNK_ROWS", 5)
    monkeypatch.setattr(metrics, "_BLOCK_BYTES", 4 * num_labels * 23)
    rng = np.random.default_rng(3)
    vectors, matrices, labels = _tied_batches(rng, 101, num_labels)
    unseen = rng.choice(num_labels, size=12, replace=False)
    scorer = scoring.NumpyScorer(vectors, block_size=8)
    results = {}
    for threads in (1, 3):
        monkeypatch.setattr(metrics, "_cpu_count", lambda threads=threads: threads)
        a = metrics.ZSLEvaluator(unseen, ks=KS)
        b = metrics.ZSLEvaluator(unseen, ks=KS, num_labels=num_labels)
        for start in range(0, 101, 37):
            a.update_scores(scorer.scores(matrices[start : start + 37]), labels[start : start + 37])
            b.update_scores(
                (matrices[start : start + 37] @ vectors.T).max(1), labels[start : start + 37]
            )
        results[threads] = a.result(), b.result()
    for i in range(2):
        _assert_same_result(results[1][i], results[3][i])
    _assert_same_result(results[1][0], results[1][1])  # blocked GEMM == brute-force scores
    ref = _reference((matrices @ vectors.T).max(1), labels, unseen, KS)
    for protocol in ("zsl", "gzsl"):
        assert abs(results[3][0][protocol]["mAP"] - ref[protocol]["mAP"]) < 1e-9
        assert abs(results[3][0][protocol]["P@3"] - ref[protocol]["P@3"]) < 1e-9


@pytest.mark.parametrize("threads", [1, 2])
def test_nan_in_a_later_block_rolls_back(threads, monkeypatch):
    monkeypatch.setattr(metrics, "_CHUNK_ROWS", 3)
    monkeypatch.setattr(metrics, "_BLOCK_BYTES", 4 * 600 * 10)
    monkeypatch.setattr(metrics, "_cpu_count", lambda: threads)
    rng = np.random.default_rng(4)
    vectors, matrices, labels = _tied_batches(rng, 40, 600)
    scorer = scoring.NumpyScorer(vectors, block_size=4)

    def update(evaluator, lo, hi):
        evaluator.update_scores(scorer.scores(matrices[lo:hi]), labels[lo:hi])

    good = metrics.ZSLEvaluator([1, 5, 9], ks=KS)
    update(good, 0, 13)
    for method in ("numpy_scores", "brute_force"):
        evaluator = metrics.ZSLEvaluator([1, 5, 9], ks=KS)
        update(evaluator, 0, 13)
        bad = matrices[13:40].copy()
        bad[22, 1, 0] = np.nan  # image 35: the last GEMM block, the last row chunk
        if method == "numpy_scores":
            args = (scorer.scores(bad), labels[13:40])
        else:
            args = ((bad @ vectors.T).max(1), labels[13:40])
        with pytest.raises(ValueError, match="NaN scores in the batch starting at image 13"):
            evaluator.update_scores(*args)
        _assert_same_result(evaluator.result(), good.result())
        # The evaluator goes on as if the batch had never been added.
        update(evaluator, 13, 40)
        reference = metrics.ZSLEvaluator([1, 5, 9], ks=KS)
        update(reference, 0, 40)
        _assert_same_result(evaluator.result(), reference.result())


def test_chunk_error_rolls_back(monkeypatch):
    monkeypatch.setattr(metrics, "_CHUNK_ROWS", 4)
    rng = np.random.default_rng(5)
    vectors, matrices, labels = _tied_batches(rng, 20, 30)
    scores = scoring.numpy_scores(matrices, vectors)
    evaluator = metrics.ZSLEvaluator([2], ks=KS)
    evaluator.update_scores(scores[:6], labels[:6])
    count_rows = metrics.ZSLEvaluator._count_rows

    def failing(self, out, labels, offset, *args, **kwargs):
        if offset >= 8:
            raise MemoryError("chunk failure")
        return count_rows(self, out, labels, offset, *args, **kwargs)

    monkeypatch.setattr(metrics.ZSLEvaluator, "_count_rows", failing)
    with pytest.raises(MemoryError):
        evaluator.update_scores(scores[6:20], labels[6:20])
    monkeypatch.setattr(metrics.ZSLEvaluator, "_count_rows", count_rows)
    assert evaluator._num_images == 6 and evaluator._fill == 6
    evaluator.update_scores(scores[6:20], labels[6:20])
    evaluator.update_scores(scores[:0], labels[:0])  # an empty batch changes nothing
    reference = metrics.ZSLEvaluator([2], ks=KS)
    reference.update_scores(scores, labels)
    _assert_same_result(evaluator.result(), reference.result())


def test_label_dtypes_agree():
    rng = np.random.default_rng(6)
    scores = rng.integers(0, 3, size=(50, 20)).astype(np.float32)
    labels = rng.random((50, 20)) < 0.1
    expected = metrics.evaluate_scores(scores, labels, [0, 4], ks=KS)
    for dtype in (np.uint8, np.int64, np.float32, np.float64):
        _assert_same_result(
            metrics.evaluate_scores(scores, labels.astype(dtype), [0, 4], ks=KS), expected
        )


@pytest.mark.parametrize("num_labels", [7, 600, 2000])  # exact bound; groups of 2 (+rest); 7+
def test_top_k_indices_sort_paths(num_labels, monkeypatch):
    rng = np.random.default_rng(7)
    scores = rng.choice(
        np.array([-np.inf, -1.5, -0.0, 0.0, 0.25, 3.0, np.inf], np.float32),
        size=(40, num_labels),
    )
    for k in (1, 5, 7):
        # Stable sort of the negated scores (as in the old argsort path; -0.0 == 0.0 ties).
        expected = np.argsort(-scores.astype(np.float64), axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(metrics.top_k_indices(scores, k), expected)
        np.testing.assert_array_equal(metrics.top_k_indices(scores.astype(np.float64), k), expected)
        monkeypatch.setattr(metrics, "_SORT_KEY_BITS", 0)  # lexsort fallback
        np.testing.assert_array_equal(metrics.top_k_indices(scores, k), expected)
        monkeypatch.undo()
        strided = np.repeat(scores, 2, axis=1)[:, ::2]  # a non-contiguous view
        np.testing.assert_array_equal(metrics.top_k_indices(strided, k), expected)
    unsigned = rng.integers(0, 256, size=(10, num_labels)).astype(np.uint8)
    np.testing.assert_array_equal(
        metrics.top_k_indices(unsigned, 5),
        np.argsort(-unsigned.astype(np.int64), axis=1, kind="stable")[:, :5],
    )
    scores[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        metrics.top_k_indices(scores, 3)


@pytest.mark.parametrize("num_labels", [40, 600, 2000])
def test_nan_anywhere_in_a_batch_is_detected(num_labels):
    # The NaN check is folded into the top-K bound pass (group maxima, last partial stride
    # folded into the first groups): every column must reach it.
    for col in (0, 1, 255, 256, num_labels // 2, num_labels - 1):
        scores = np.zeros((6, num_labels), np.float32)
        scores[4, min(col, num_labels - 1)] = np.nan
        evaluator = metrics.ZSLEvaluator([0], ks=(1, 3), num_labels=num_labels)
        with pytest.raises(ValueError, match="NaN scores"):
            evaluator.update_scores(scores, np.ones((6, num_labels)))
        assert evaluator._num_images == 0 and evaluator._fill == 0
