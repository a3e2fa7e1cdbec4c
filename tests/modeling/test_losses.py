"""Tests for sdl_tf.modeling.losses: golden values of eqs. (1)-(5), ablations, edge cases,
distribution."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from sdl_tf.modeling import losses

NUM_GOLDEN_CASES = 6


@pytest.fixture(params=["xla", "reference"])
def backend(request, monkeypatch):
    """Runs a test with the fused XLA kernel (what the loss uses) and with the plain
    `keras.ops` definition of the pairwise term (`_pairwise_sum_reference`, the spec)."""
    if request.param == "reference":
        monkeypatch.setattr(losses, "_pairwise_sum", losses._pairwise_sum_reference)
    return request.param


def _golden_case(golden_dir, i):
    with np.load(os.path.join(golden_dir, "loss.npz"), allow_pickle=False) as z:
        return {k[len(f"case{i}_") :]: z[k] for k in z.files if k.startswith(f"case{i}_")}


def _rel_err(actual, expected):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    return np.max(np.abs(actual - expected) / np.maximum(np.abs(expected), 1e-12))


def _reference_terms(labels, a, vectors, reg_lambda, use_sdw=True, use_reg=True, scoring="max"):
    """Straightforward per-image loop over eqs. (1)-(5), an independent check of the ablations."""
    out = []
    for y, mat in zip(labels, a, strict=True):
        products = mat @ vectors.T  # (M, C)
        s = products.max(0) if scoring == "max" else np.sqrt((products**2).sum(0))
        pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y != 1)
        if len(pos) == 0:
            out.append(0.0)
            continue
        pairs = sum(np.logaddexp(0.0, s[k] - s[j]) for j in pos for k in neg)
        rank = pairs / (len(pos) * max(len(neg), 1))
        if use_sdw and len(pos) > 1:
            rank *= 1.0 + vectors[pos].var(axis=0, ddof=1).sum()
        reg = mat.var(axis=0, ddof=1).sum() if mat.shape[0] > 1 else 0.0
        lt = reg_lambda / max(len(neg), 1) if use_reg else 0.0
        out.append((1 - lt) * rank + lt * reg)
    return np.array(out)


@pytest.mark.parametrize("case", range(NUM_GOLDEN_CASES))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf_function"])
def test_terms_match_golden(golden_dir, case, dtype, graph, backend):
    g = _golden_case(golden_dir, case)
    kwargs = {"reg_lambda": float(g["reg_lambda"])}

    def terms(y, a):
        return losses.sdl_loss_terms(y, a, g["wordvecs"].astype(dtype), **kwargs)

    def official(y, a):
        return losses.sdl_loss_terms(y, a, g["wordvecs"].astype(dtype), mode="official", **kwargs)

    if graph:
        terms, official = tf.function(terms), tf.function(official)
    y, a = tf.constant(g["labels"].astype(dtype)), tf.constant(g["A"].astype(dtype))
    got = terms(y, a)
    for name in ("loss", "rank", "reg", "sdw"):
        assert got[name].dtype == dtype
        assert got[name].shape == (g["A"].shape[0],)
    assert _rel_err(got["loss"], g["paper_loss_per_image"]) < 1e-5
    assert _rel_err(got["rank"], g["paper_rank"]) < 1e-5
    assert _rel_err(got["reg"], g["paper_reg"]) < 1e-5
    assert _rel_err(got["sdw"], g["paper_sdw"]) < 1e-5
    assert _rel_err(np.mean(got["loss"]), g["paper_loss_mean"]) < 1e-5
    assert _rel_err(official(y, a)["loss"], g["official_loss_per_image"]) < 1e-5


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mode", ["paper", "official"])
def test_keras_loss_mean_matches_golden(golden_dir, dtype, mode, backend):
    for case in range(NUM_GOLDEN_CASES):
        g = _golden_case(golden_dir, case)
        loss = losses.SDLLoss(
            g["wordvecs"], reg_lambda=float(g["reg_lambda"]), mode=mode, dtype=dtype
        )
        expected = (
            g["paper_loss_mean"] if mode == "paper" else np.mean(g["official_loss_per_image"])
        )
        value = loss(g["labels"], g["A"])
        assert value.dtype == dtype
        assert _rel_err(value, expected) < 1e-5
        assert _rel_err(tf.function(loss)(g["labels"], g["A"]), expected) < 1e-5
        # Keras "none" reduction gives the per-image values.
        per_image = losses.SDLLoss(
            g["wordvecs"], reg_lambda=float(g["reg_lambda"]), mode=mode, reduction=None
        )(g["labels"], g["A"])
        expected_pi = g["paper_loss_per_image"] if mode == "paper" else g["official_loss_per_image"]
        assert _rel_err(per_image, expected_pi) < 1e-5


def test_gradient_matches_finite_differences(golden_dir, backend):
    g = _golden_case(golden_dir, 1)
    y = tf.constant(g["labels"], tf.float64)
    vectors = g["wordvecs"]

    def f(a):
        return tf.reduce_mean(losses.sdl_loss_terms(y, a, vectors, reg_lambda=0.3)["loss"])

    theoretical, numerical = tf.test.compute_gradient(f, [tf.constant(g["A"])], delta=1e-6)
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-5, atol=1e-7)


def test_distributed_equals_single_device(golden_dir, backend):
    """Per-replica per-example losses summed / global batch == the single-device batch mean."""
    assert len(tf.config.list_logical_devices("CPU")) >= 2, "conftest should create 2 CPUs"
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    for case in (2, 4):  # B = 6 and 8, M = 7, d = 300
        g = _golden_case(golden_dir, case)
        global_batch = g["A"].shape[0]
        loss_obj = losses.SDLLoss(g["wordvecs"], reg_lambda=float(g["reg_lambda"]), reduction=None)
        dataset = tf.data.Dataset.from_tensor_slices(
            (g["labels"].astype("float32"), g["A"].astype("float32"))
        ).batch(global_batch)
        dist_dataset = strategy.experimental_distribute_dataset(dataset)

        @tf.function
        def step(batch, loss_obj=loss_obj, global_batch=global_batch):
            def replica_fn(y, mats):
                with tf.GradientTape() as tape:
                    tape.watch(mats)
                    loss = tf.reduce_sum(loss_obj(y, mats)) / global_batch
                return loss, tape.gradient(loss, mats)

            loss, grad = strategy.run(replica_fn, args=batch)
            return strategy.reduce("SUM", loss, axis=None), grad

        loss, grad = step(next(iter(dist_dataset)))
        local_grads = strategy.experimental_local_results(grad)
        assert len(local_grads) == 2 and all(lg.shape[0] < global_batch for lg in local_grads)
        assert _rel_err(loss, g["paper_loss_mean"]) < 1e-5

        a = tf.constant(g["A"].astype("float32"))
        with tf.GradientTape() as tape:
            tape.watch(a)
            single = tf.reduce_mean(loss_obj(g["labels"].astype("float32"), a))
        np.testing.assert_allclose(
            np.concatenate([lg.numpy() for lg in local_grads]),
            tape.gradient(single, a).numpy(),
            rtol=1e-5,
            atol=1e-8,
        )


@pytest.mark.parametrize(
    "use_sdw,use_reg,scoring",
    [(False, True, "max"), (True, False, "max"), (False, False, "l2"), (True, True, "l2")],
)
def test_ablations_match_reference(use_sdw, use_reg, scoring, backend):
    rng = np.random.default_rng(0)
    b, m, d, c = 5, 3, 12, 9
    vectors = rng.normal(size=(c, d))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    a = rng.normal(size=(b, m, d))
    labels = rng.choice([1, 0, -1], size=(b, c), p=[0.3, 0.4, 0.3])
    labels[:, 0] = 1
    kwargs = {"use_sdw": use_sdw, "use_reg": use_reg, "scoring": scoring}
    got = losses.sdl_loss_terms(labels.astype("float64"), a, vectors, reg_lambda=0.3, **kwargs)
    np.testing.assert_allclose(
        got["loss"], _reference_terms(labels, a, vectors, 0.3, **kwargs), rtol=1e-10
    )
    if not use_sdw:
        np.testing.assert_array_equal(got["sdw"], np.ones(b))
    if not use_reg:
        np.testing.assert_allclose(got["loss"], got["rank"], rtol=1e-12)


def test_fast0tag_is_m1_without_sdw_and_reg():
    """M = 1, no SDW, no regulariser: mean over pairs of log(1 + exp(s_k - s_j)), A t scores."""
    a = np.array([[[1.0, 0.0]]])  # (1, 1, 2)
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # scores 1, 0, -1
    labels = np.array([[1.0, 0.0, -1.0]])  # one positive (score 1), two negatives (0, -1)
    expected = (np.log1p(np.exp(-1.0)) + np.log1p(np.exp(-2.0))) / 2
    loss = losses.SDLLoss(vectors, use_sdw=False, use_reg=False, dtype="float64")
    assert abs(float(loss(labels, a)) - expected) < 1e-12


def _value_and_grad(labels, a, vectors, **kwargs):
    a = tf.constant(a)
    with tf.GradientTape() as tape:
        tape.watch(a)
        terms = losses.sdl_loss_terms(tf.constant(labels, a.dtype), a, vectors, **kwargs)
        total = tf.reduce_sum(terms["loss"])
    return terms, tape.gradient(total, a)


def test_edge_cases_are_finite(backend):
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(6, 4)).astype("float32")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    a = rng.normal(size=(4, 3, 4)).astype("float32")
    labels = np.array(
        [
            [0, 0, -1, 0, 0, 0],  # no positive
            [1, 0, 0, -1, 0, 0],  # |P| = 1
            [1, 1, 1, 1, 1, 1],  # no negative
            [1, 1, 0, 0, 0, -1],
        ],
        dtype="float32",
    )
    terms, grad = _value_and_grad(labels, a, vectors, reg_lambda=0.3)
    for v in terms.values():
        assert np.all(np.isfinite(v))
    assert np.all(np.isfinite(grad))
    assert float(terms["loss"][0]) == 0.0 and np.all(grad[0].numpy() == 0.0)
    assert float(terms["sdw"][1]) == 1.0  # variance of a single vector is defined as 0
    assert float(terms["rank"][2]) == 0.0  # no pair; lt = 0.3 / max(|N|, 1)
    np.testing.assert_allclose(terms["loss"][2], 0.3 * terms["reg"][2], rtol=1e-6)
    # Same values when the image is alone in the batch (padding does not leak).
    alone, _ = _value_and_grad(labels[3:], a[3:], vectors, reg_lambda=0.3)
    np.testing.assert_allclose(alone["loss"], terms["loss"][3:], rtol=1e-6)


def test_all_images_without_positive_give_zero_and_finite_grad(backend):
    vectors = np.eye(3, dtype="float32")
    terms, grad = _value_and_grad(np.zeros((2, 3)), np.ones((2, 2, 3), "float32"), vectors)
    np.testing.assert_array_equal(terms["loss"], [0.0, 0.0])
    np.testing.assert_array_equal(grad, np.zeros((2, 2, 3)))


def test_m1_has_zero_regulariser():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(3, 1, 5)).astype("float32")
    vectors = rng.normal(size=(4, 5)).astype("float32")
    labels = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 0, -1]], dtype="float32")
    terms, grad = _value_and_grad(labels, a, vectors, reg_lambda=0.3)
    np.testing.assert_array_equal(terms["reg"], np.zeros(3))
    assert np.all(np.isfinite(grad))


def test_large_score_gaps_do_not_overflow(backend):
    vectors = np.eye(3, dtype="float32")
    a = np.array([[[1e4, -1e4, 0.0], [2e4, 0.0, -3e4]]], dtype="float32")  # gaps of ~1e4
    for labels in ([[0.0, 1.0, 0.0]], [[1.0, 0.0, 0.0]]):
        terms, grad = _value_and_grad(np.array(labels), a, vectors, reg_lambda=0.3)
        assert np.all(np.isfinite(terms["loss"])) and np.all(np.isfinite(grad))
    # Positive far below the negatives: softplus(x) ~ x, so the loss is linear in the gap.
    terms, _ = _value_and_grad(
        np.array([[0.0, 1.0, 0.0]]), a, vectors, reg_lambda=0.0, use_sdw=False
    )
    # s = (2e4, 0, 0); pairs (s0 - s1) = 2e4 and (s2 - s1) = 0 -> (2e4 + log 2) / 2.
    np.testing.assert_allclose(terms["loss"], [(2e4 + np.log(2.0)) / 2], rtol=1e-6)


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_half_precision_inputs_compute_in_float32(golden_dir, half, backend):
    g = _golden_case(golden_dir, 2)
    a16 = tf.cast(tf.constant(g["A"]), half)
    terms, grad = _value_and_grad(g["labels"].astype("float32"), a16, g["wordvecs"], reg_lambda=0.3)
    assert terms["loss"].dtype == tf.float32
    assert np.all(np.isfinite(grad.numpy().astype("float32")))
    # Same as the float32 computation on the rounded inputs (only input rounding differs).
    ref = losses.sdl_loss_terms(g["labels"], tf.cast(a16, tf.float32), g["wordvecs"])
    np.testing.assert_allclose(terms["loss"], ref["loss"], rtol=1e-6)
    # And close to the exact value (bfloat16 rounding of A is ~0.4%).
    assert _rel_err(terms["loss"], g["paper_loss_per_image"]) < 0.05
    # Through the Keras loss (which casts to its float32 dtype) as well.
    value = losses.SDLLoss(g["wordvecs"])(g["labels"], a16)
    assert value.dtype == tf.float32 and np.isfinite(float(value))


def test_memory_is_linear_in_labels():
    """C = 60,000: a (B, C, C) pairwise tensor would need 29 GB; the packed (T, C) one ~1 MB."""
    rng = np.random.default_rng(3)
    c, d = 60_000, 8
    vectors = rng.normal(size=(c, d)).astype("float32")
    a = rng.normal(size=(2, 2, d)).astype("float32")
    labels = np.zeros((2, c), "float32")
    labels[0, [5, 17, 40_000]] = 1
    labels[1, [7]] = 1
    loss = losses.SDLLoss(vectors)(labels, a)
    assert np.isfinite(float(loss))


def test_serialization_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(4, 3))
    loss = losses.SDLLoss(
        vectors, reg_lambda=0.1, use_sdw=False, use_reg=True, scoring="l2", mode="official"
    )
    config = loss.get_config()
    assert isinstance(config["label_vectors"], list) and len(config["label_vectors"]) == 4
    clone = losses.SDLLoss.from_config(config)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, losses.SDLLoss)
    labels = np.array([[1, 0, 1, -1], [0, 1, 0, 0]], "float32")
    a = rng.normal(size=(2, 2, 3)).astype("float32")
    for other in (clone, restored):
        assert other.get_config() == config
        np.testing.assert_allclose(other(labels, a), loss(labels, a), rtol=1e-7)

    # Through a saved .keras model compiled with the loss.
    inputs = keras.Input((3,))
    outputs = keras.layers.Reshape((2, 3))(keras.layers.Dense(6)(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss=loss)
    path = str(tmp_path / "m.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert isinstance(reloaded.loss, losses.SDLLoss)
    assert reloaded.loss.get_config() == config


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="scoring"):
        losses.SDLLoss(np.eye(2), scoring="mean")
    with pytest.raises(ValueError, match="mode"):
        losses.SDLLoss(np.eye(2), mode="other")
    with pytest.raises(ValueError, match="label_vectors"):
        losses.SDLLoss(np.zeros(3))
    with pytest.raises(ValueError, match="3 labels but the loss has 2"):
        losses.SDLLoss(np.eye(2))(np.ones((1, 3)), np.ones((1, 1, 2)))


def test_unknown_static_shapes(golden_dir, backend):
    """Graph with all dimensions unknown (e.g. a training loop's relaxed input signature)."""
    g = _golden_case(golden_dir, 2)
    spec = [tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None, None, None], tf.float32)]
    for mode, key in (("paper", "paper_loss_per_image"), ("official", "official_loss_per_image")):
        fn = tf.function(
            lambda y, a, mode=mode: losses.sdl_loss_terms(y, a, g["wordvecs"], mode=mode)["loss"],
            input_signature=spec,
        )
        got = fn(g["labels"].astype("float32"), g["A"].astype("float32"))
        assert _rel_err(got, g[key]) < 1e-5


def _pairwise_inputs(dtype, gap_scale=1.0, seed=5):
    """(B, C) scores with positives masked to -huge, packed positives; B = 5, C = 11."""
    rng = np.random.default_rng(seed)
    b, c = 5, 11
    scores = gap_scale * rng.normal(size=(b, c))
    positive = rng.random((b, c)) < 0.3
    positive[0] = False  # no positive
    positive[1] = True  # no negative
    positive[2, :2] = True
    pos_image, pos_label = np.nonzero(positive)
    neg = np.where(positive, -losses._HUGE, scores)
    return (
        tf.constant(neg, dtype),
        tf.constant(scores[pos_image, pos_label], dtype),
        tf.constant(pos_image, tf.int32),
        b,
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("gap_scale", [1.0, 1e4], ids=["normal", "huge_gaps"])
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf_function"])
def test_fused_pairwise_kernel_matches_keras_reference(dtype, gap_scale, graph):
    """The XLA kernel and its custom gradient equal the plain keras.ops definition of eq. (2)."""
    neg, pos, image, batch = _pairwise_inputs(dtype, gap_scale)
    # Distinct per-image weights, so a gradient routed to the wrong image would show.
    weights = tf.constant(np.arange(1.0, batch + 1.0), dtype)

    def value_and_grads(fn):
        def run(neg, pos):
            with tf.GradientTape() as tape:
                tape.watch([neg, pos])
                sums = fn(neg, pos, image, batch)
                total = tf.reduce_sum(weights * sums)
            return (sums, *tape.gradient(total, [neg, pos]))

        return tf.function(run) if graph else run

    got = value_and_grads(losses._pairwise_sum)(neg, pos)
    want = value_and_grads(losses._pairwise_sum_reference)(neg, pos)
    assert got[0].dtype == dtype and got[0].shape == (batch,)
    assert float(got[0][0]) == 0.0 and float(got[0][1]) == 0.0  # no positive / no negative
    for g, w in zip(got, want, strict=True):
        w = tf.convert_to_tensor(w).numpy()
        assert np.all(np.isfinite(g.numpy()))
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-6 if dtype == "float32" else 1e-12)


def test_kernel_is_not_retraced_per_batch():
    """24 batches with 24 different positive counts T trace the XLA kernel at most twice
    (`reduce_retracing` generalises T after the first new shape), not once per batch."""
    rng = np.random.default_rng(6)
    b, c = 8, 50
    vectors = rng.normal(size=(c, 8)).astype("float32")
    a = rng.normal(size=(b, 3, 8)).astype("float32")
    before = losses._pairwise_kernel.experimental_get_tracing_count()
    for t in range(40, 64):
        labels = np.zeros((b, c), "float32")
        labels.flat[rng.choice(b * c, size=t, replace=False)] = 1
        terms = losses.sdl_loss_terms(labels, a, vectors)
        np.testing.assert_allclose(
            terms["loss"], _reference_terms(labels, a, vectors, 0.3), rtol=1e-5, atol=1e-6
        )
    assert losses._pairwise_kernel.experimental_get_tracing_count() - before <= 2


def test_kernel_lengths_are_padded_to_powers_of_two(monkeypatch):
    """XLA compiles the kernel once per shape: T is padded to a power of two (>= 16), so 24
    batches with T = 90..113 positives all run it at length 128, and the losses and gradients
    are those of the unpadded reference."""
    for t in [0, 1, 15, 16, 17, 31, 32, 33, 64, 65, 1000, 1024, 1025, 2**20 + 1]:
        want = max(16, 1 << max(t - 1, 0).bit_length())
        assert int(losses._padded_length(tf.constant(t))) == want, t
    lengths = []
    kernel = losses._pairwise_kernel

    def recording(neg, pos, image):
        lengths.append(int(pos.shape[0]))
        return kernel(neg, pos, image)

    monkeypatch.setattr(losses, "_pairwise_kernel", recording)
    rng = np.random.default_rng(7)
    b, c = 8, 50
    vectors = rng.normal(size=(c, 8)).astype("float32")
    a = rng.normal(size=(b, 3, 8)).astype("float32")
    for t in range(40, 64):
        labels = np.zeros((b, c), "float32")
        labels.flat[2 * c + rng.choice((b - 2) * c, size=t, replace=False)] = 1  # images 2-7
        # Image 0 (which the padded pairs point to) has no positive, image 1 no negative: their
        # rank terms must stay 0. T = t + 50.
        labels[1, :] = 1
        at = tf.Variable(a)
        with tf.GradientTape() as tape:
            terms = losses.sdl_loss_terms(labels, at, vectors)
            total = tf.reduce_sum(terms["loss"])
        grad = tape.gradient(total, at)
        with monkeypatch.context() as m:
            m.setattr(losses, "_pairwise_sum", losses._pairwise_sum_reference)
            with tf.GradientTape() as tape:
                want = losses.sdl_loss_terms(labels, at, vectors)
                total = tf.reduce_sum(want["loss"])
            want_grad = tape.gradient(total, at)
        np.testing.assert_allclose(terms["loss"], want["loss"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-6)
    assert lengths and set(lengths) == {128}


def test_inside_jit_compiled_step(golden_dir):
    """Under an outer jit_compile=True step (the kernel is inlined there): same loss and grad."""
    g = _golden_case(golden_dir, 2)
    y, a = tf.constant(g["labels"], tf.float32), tf.constant(g["A"], tf.float32)

    def value_and_grad(y, a):
        with tf.GradientTape() as tape:
            tape.watch(a)
            loss = losses.sdl_loss_terms(y, a, g["wordvecs"])["loss"]
            total = tf.reduce_sum(loss)
        return loss, tape.gradient(total, a)

    loss, grad = tf.function(value_and_grad, jit_compile=True)(y, a)
    want_loss, want_grad = value_and_grad(y, a)
    assert _rel_err(loss, g["paper_loss_per_image"]) < 1e-5
    np.testing.assert_allclose(grad.numpy(), want_grad.numpy(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("mode", ["paper", "official"])
def test_terms_of_the_loss_object_are_sdl_loss_terms(golden_dir, mode):
    """`SDLLoss.terms` (what training logs) is `sdl_loss_terms` with the loss's settings, and
    its "loss" is what `call` returns per image."""
    g = _golden_case(golden_dir, 3)
    settings = dict(reg_lambda=float(g["reg_lambda"]), use_sdw=True, use_reg=True,
                    scoring="max", mode=mode)
    loss = losses.SDLLoss(g["wordvecs"], reduction=None, **settings)
    y, a = tf.constant(g["labels"], tf.float32), tf.constant(g["A"], tf.float32)
    got = loss.terms(y, a)
    want = losses.sdl_loss_terms(y, a, g["wordvecs"].astype(np.float32), **settings)
    assert sorted(got) == ["loss", "rank", "reg", "sdw"]
    for name in got:
        np.testing.assert_array_equal(got[name].numpy(), want[name].numpy())
    np.testing.assert_array_equal(loss(y, a).numpy(), got["loss"].numpy())
    with pytest.raises(ValueError, match="labels but the loss has"):
        loss.terms(tf.ones((1, 2)), a[:1])
