"""Tests for sdl_tf.native_ops: the compiled label-set kernel of the SDL loss and its build."""

import os
import shutil
import stat
import threading
import warnings

import numpy as np
import pytest
import tensorflow as tf

from sdl_tf import losses, native_ops

needs_compiler = pytest.mark.skipif(
    shutil.which(os.environ.get("CXX") or "g++") is None and shutil.which("c++") is None,
    reason="no C++ compiler: the loss uses its XLA kernel (covered by tests/test_losses.py)",
)


@pytest.fixture(scope="module")
def op_module():
    module = native_ops.load()
    assert module is not None, native_ops.unavailable_reason()
    return module


def _reference(scores, targets, vectors):
    """Float64 per-image loops: pair sums, d pair_sum / d scores, positives' vector variance."""
    scores = np.asarray(scores, np.float64)
    pair_sum = np.zeros(scores.shape[0])
    d_scores = np.zeros_like(scores)
    variance = np.zeros(scores.shape[0])
    for b, (s, y) in enumerate(zip(scores, targets, strict=True)):
        pos, neg = np.flatnonzero(y > 0.5), np.flatnonzero(y <= 0.5)
        x = s[neg][None, :] - s[pos][:, None]  # (|P|, |N|)
        pair_sum[b] = np.logaddexp(0.0, x).sum()
        e = np.exp(-np.abs(x))  # sigmoid without overflow or cancellation
        sig = np.where(x >= 0, 1.0, e) / (1.0 + e)
        d_scores[b, neg] = sig.sum(axis=0)
        d_scores[b, pos] = -sig.sum(axis=1)
        if pos.size > 1:
            variance[b] = np.asarray(vectors, np.float64)[pos].var(axis=0, ddof=1).sum()
    return pair_sum, d_scores, variance


def _edge_batch(labels=37, seed=0):
    """Images covering every path of the kernel; `labels` is not a multiple of a packet."""
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((10, labels))
    targets = np.zeros((10, labels))
    targets[:, :3] = 1.0  # three positives by default
    targets[0] = rng.choice([-1.0, 0.0, 1.0], size=labels)  # verified negatives (-1) too
    targets[1] = 0.0  # no positive: no pairs
    targets[2] = 1.0  # no negative: no pairs
    targets[3, :-1] = 1.0  # a single negative
    targets[4, 1:] = 0.0  # a single positive
    scores[5] = rng.integers(-2, 3, size=labels)  # ties, x = 0 exactly
    scores[6] *= 1e4  # range > 80: one exp per pair instead of the factored exp
    scores[7, :3] += 25.0  # well-ranked: every e ~ exp(-25), the log1p precision path
    scores[8] *= 40.0  # range close to the factored limit, overflow-prone products
    # Gaps ~9: e ~ 1e-4, where 1 + e keeps only ~3 digits of e in float32 (products of rounded
    # 1 + e would be off by ~1e-4 relative).
    scores[9] = 0.1 * scores[9]
    scores[9, :3] += 9.0
    vectors = rng.standard_normal((labels, 5))
    return scores, targets, vectors


@needs_compiler
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("labels", [37, 1000])
def test_op_matches_float64_reference(op_module, dtype, labels):
    scores, targets, vectors = _edge_batch(labels)
    pair_sum, d_scores, variance = op_module.sdl_pairwise_softplus(
        tf.constant(scores, dtype), tf.constant(targets, dtype), tf.constant(vectors, dtype)
    )
    scores_used = scores.astype(dtype).astype(np.float64)  # compare on the rounded inputs
    ref_sum, ref_d, ref_var = _reference(scores_used, targets, vectors.astype(dtype))
    rtol = 1e-5 if dtype == "float32" else 1e-12
    # Relative per image, including images 7 and 9 whose sums are made of tiny e.
    np.testing.assert_allclose(pair_sum.numpy(), ref_sum, rtol=rtol, atol=0)
    assert ref_sum[7] < 1e-6 and ref_sum[7] > 0
    for b in range(scores.shape[0]):
        np.testing.assert_allclose(
            d_scores.numpy()[b], ref_d[b], rtol=rtol, atol=rtol * np.abs(ref_d[b]).max() + 1e-30
        )
    np.testing.assert_allclose(variance.numpy(), ref_var, rtol=rtol, atol=0)
    assert pair_sum.numpy()[1] == 0 and pair_sum.numpy()[2] == 0
    assert not np.any(d_scores.numpy()[1:3])


@needs_compiler
def test_non_finite_scores_stay_in_their_image(op_module):
    scores, targets, vectors = _edge_batch(40)
    scores[0, 10] = np.nan
    scores[4, 5] = np.inf
    pair_sum, _, _ = op_module.sdl_pairwise_softplus(
        tf.constant(scores, tf.float32), tf.constant(targets, tf.float32), vectors.astype("f4")
    )
    pair_sum = pair_sum.numpy()
    assert np.isnan(pair_sum[0])
    assert pair_sum[4] == np.inf  # softplus(inf - s) = inf, as the definition says
    ref_sum, _, _ = _reference(scores[5:].astype("f4"), targets[5:], vectors)
    np.testing.assert_allclose(pair_sum[5:], ref_sum, rtol=1e-5)


@needs_compiler
def test_gradient_is_upstream_times_derivative(op_module):
    scores, targets, vectors = _edge_batch(50, seed=3)
    scores_t = tf.constant(scores, tf.float64)
    upstream = np.linspace(-1.0, 2.0, scores.shape[0])
    with tf.GradientTape() as tape:
        tape.watch(scores_t)
        pair_sum, variance = native_ops.pairwise_terms(
            op_module, scores_t, tf.constant(targets), tf.constant(vectors)
        )
        total = tf.reduce_sum(pair_sum * upstream) + tf.reduce_sum(variance)
    grad = tape.gradient(total, scores_t).numpy()
    _, ref_d, _ = _reference(scores, targets, vectors)
    np.testing.assert_allclose(grad, upstream[:, None] * ref_d, rtol=1e-10, atol=1e-12)


@needs_compiler
def test_bad_shapes_name_the_shapes(op_module):
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=r"\[3,4\]|\(3, 4\)"):
        op_module.sdl_pairwise_softplus(tf.zeros([2, 4]), tf.zeros([3, 4]), tf.zeros([4, 2]))
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="5"):
        op_module.sdl_pairwise_softplus(tf.zeros([2, 4]), tf.zeros([2, 4]), tf.zeros([5, 2]))


@needs_compiler
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_loss_is_the_same_with_the_xla_kernel(op_module, monkeypatch, dtype):
    rng = np.random.default_rng(1)
    matrices = tf.constant(0.3 * rng.standard_normal((12, 3, 16)), dtype)
    vectors = rng.standard_normal((300, 16))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    targets = (rng.random((12, 300)) < 0.03).astype(dtype)
    targets[0] = 0.0
    targets[1, ::50] = -1.0

    def value_and_grad():
        with tf.GradientTape() as tape:
            tape.watch(matrices)
            terms = losses.sdl_loss_terms(targets, matrices, vectors.astype(dtype))
            total = tf.reduce_sum(terms["loss"])
        return {k: v.numpy() for k, v in terms.items()}, tape.gradient(total, matrices).numpy()

    native_terms, native_grad = value_and_grad()
    monkeypatch.setattr(native_ops, "load", lambda: None)
    xla_terms, xla_grad = value_and_grad()
    rtol = 1e-5 if dtype == "float32" else 1e-10
    for key in ("loss", "rank", "reg", "sdw"):
        np.testing.assert_allclose(native_terms[key], xla_terms[key], rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(native_grad, xla_grad, rtol=rtol, atol=rtol * 1e-2)


# -- building and loading ---------------------------------------------------------------------

_FAKE_CXX = """#!/bin/sh
# Stand-in compiler: records each compile, then writes the -o file (or fails on request).
if [ "$1" = "--version" ]; then echo "fake-cxx 1.0"; exit 0; fi
echo compile >> "{log}"
out=""
while [ $# -gt 0 ]; do if [ "$1" = "-o" ]; then out="$2"; fi; shift; done
sleep 0.3
printf partial > "$out"
if [ -n "$FAKE_CXX_FAIL" ]; then echo "fake error: boom" >&2; exit 3; fi
printf library > "$out"
"""


@pytest.fixture
def fake_cxx(tmp_path, monkeypatch):
    log = tmp_path / "compiles.log"
    script = tmp_path / "fake-cxx"
    script.write_text(_FAKE_CXX.format(log=log))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("CXX", str(script))
    monkeypatch.setenv("SDL_TF_CACHE_DIR", str(tmp_path / "cache"))
    return log


def _compiles(log):
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_build_compiles_once_and_reuses_the_cache(fake_cxx):
    path = native_ops.build()
    assert path.startswith(native_ops.cache_dir())
    with open(path) as f:
        assert f.read() == "library"
    assert native_ops.build() == path
    assert _compiles(fake_cxx) == 1
    native_ops.build(force=True)
    assert _compiles(fake_cxx) == 2


def test_concurrent_builds_compile_once(fake_cxx):
    paths, errors = [], []

    def run():
        try:
            paths.append(native_ops.build())
        except Exception as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(paths)) == 1 and len(paths) == 3
    assert _compiles(fake_cxx) == 1


def test_failed_build_raises_with_compiler_output_and_leaves_nothing(fake_cxx, monkeypatch):
    monkeypatch.setenv("FAKE_CXX_FAIL", "1")
    with pytest.raises(native_ops.BuildError, match=r"(?s)exit 3.*boom"):
        native_ops.build()
    leftovers = [f for f in os.listdir(native_ops.cache_dir()) if not f.endswith(".lock")]
    assert leftovers == []


def test_missing_compiler_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("SDL_TF_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(native_ops.BuildError, match="no-such-compiler"):
        native_ops.build()


def test_library_path_depends_on_the_compiler(fake_cxx, monkeypatch):
    fake = native_ops.library_path()
    monkeypatch.setenv("CXX", "/no/such/compiler")
    assert native_ops.library_path() != fake


@pytest.fixture
def fresh_load_state(monkeypatch):
    """Lets a test run `load` from scratch, then restores the process's loaded kernel."""
    saved = dict(native_ops._state)
    native_ops._reset_for_tests()
    yield
    native_ops._state.update(saved)


def test_load_falls_back_with_one_warning(fake_cxx, monkeypatch, fresh_load_state):
    monkeypatch.setenv("FAKE_CXX_FAIL", "1")
    with pytest.warns(RuntimeWarning, match=r"(?s)XLA kernel.*boom"):
        assert native_ops.load() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native_ops.load() is None  # no second warning, no second build
    assert _compiles(fake_cxx) == 1
    assert "boom" in native_ops.unavailable_reason()
    # The loss still works, on the XLA kernel.
    loss = losses.SDLLoss(np.eye(4, dtype="float32"))
    value = loss(np.array([[1.0, 0.0, 0.0, 0.0]]), np.ones((1, 2, 4), "float32") * 0.1)
    assert np.isfinite(float(value))


def test_disabled_by_environment(monkeypatch, fresh_load_state):
    monkeypatch.setenv("SDL_TF_NATIVE_OPS", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native_ops.load() is None
    assert "SDL_TF_NATIVE_OPS" in native_ops.unavailable_reason()
