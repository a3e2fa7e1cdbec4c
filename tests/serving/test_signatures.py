"""Tests for sdl_tf.serving.signatures: the three signatures (saved_model_cli), their outputs in
a separate process, bad and empty inputs, the model contract, TF error messages.

The archive is written with `build_export_archive(...).write_out` (the export's versioning
and assets are tests/serving/test_export_lib.py). The tiny models, label spaces and images are
`tests.helpers.serving_models`.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from sdl_tf.serving import signatures
from tests.helpers.paths import REPO_ROOT
from tests.helpers.serving_models import (
    ATOL,
    NAMES,
    SIZE,
    UNSEEN,
    D,
    M,
    keras_reference,
    make_images,
    numpy_scores_eq1,
    tiny_label_space,
    tiny_model,
)

PY = sys.executable


def _write(model, label_space, path, top_k=3):
    signatures.build_export_archive(model, label_space, top_k=top_k).write_out(path,
                                                                               verbose=False)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model, ls = tiny_model(), tiny_label_space()
    return model, ls, _write(model, ls, str(tmp_path_factory.mktemp("signatures") / "1"))


def _cli_signature(text: str, name: str) -> str:
    start = text.index(f"signature_def['{name}']")
    nxt = text.find("signature_def['", start + 1)
    return text[start: nxt if nxt > 0 else len(text)]


def test_saved_model_cli_signatures(exported):
    _, _, path = exported
    cli = os.path.join(os.path.dirname(PY), "saved_model_cli")
    text = subprocess.run([cli, "show", "--dir", path, "--all"], check=True,
                          capture_output=True, text=True).stdout
    c, k = len(NAMES), 3

    def has(sig, io_kind, name, dtype, shape):
        block = _cli_signature(text, sig)
        entry = block[block.index(f"{io_kind}['{name}'] tensor_info:"):][:120]
        assert f"dtype: {dtype}" in entry, (sig, name, entry)
        assert f"shape: {shape}" in entry, (sig, name, entry)

    has("serving_default", "inputs", "image_bytes", "DT_STRING", "(-1)")
    has("serving_default", "outputs", "scores", "DT_FLOAT", f"(-1, {c})")
    has("serving_default", "outputs", "top_k_labels", "DT_STRING", f"(-1, {k})")
    has("serving_default", "outputs", "top_k_scores", "DT_FLOAT", f"(-1, {k})")
    has("serving_default", "outputs", "top_k_unseen", "DT_BOOL", f"(-1, {k})")
    has("serving_default", "outputs", "top_k_rows", "DT_INT32", f"(-1, {k})")
    has("serving_default", "outputs", "ok", "DT_BOOL", "(-1)")
    has("serving_default", "outputs", "error", "DT_STRING", "(-1)")
    has("score_labels", "inputs", "image_bytes", "DT_STRING", "(-1)")
    has("score_labels", "inputs", "label_vectors", "DT_FLOAT", f"(-1, {D})")
    has("score_labels", "outputs", "scores", "DT_FLOAT", "(-1, -1)")
    has("matrices", "inputs", "image_bytes", "DT_STRING", "(-1)")
    has("matrices", "outputs", "matrices", "DT_FLOAT", f"(-1, {M}, {D})")


_LOADER = r"""
import sys, numpy as np, tensorflow as tf
path, images_npz, out = sys.argv[1:4]
data = [bytes(b) for b in np.load(images_npz, allow_pickle=False)["images"]]
vecs = np.load(images_npz, allow_pickle=False)["vectors"]
loaded = tf.saved_model.load(path)
res = {}
for k, v in loaded.signatures["serving_default"](image_bytes=tf.constant(data)).items():
    res["default_" + k] = v.numpy().astype(str) if v.dtype == tf.string else v.numpy()
sl = loaded.signatures["score_labels"](image_bytes=tf.constant(data),
                                       label_vectors=tf.constant(vecs))
res["labels_scores"] = sl["scores"].numpy()
res["matrices"] = loaded.signatures["matrices"](image_bytes=tf.constant(data))["matrices"].numpy()
np.savez(out, **res)
"""


def test_separate_process_load_matches_keras(exported, tmp_path):
    model, ls, path = exported
    data = make_images(3, seed=1) + make_images(2, seed=2, fmt="PNG")
    extra = np.random.default_rng(5).normal(size=(4, D)).astype(np.float32)
    inputs = str(tmp_path / "in.npz")
    # Variable-length bytes as a fixed-width numpy bytes array: no pickle needed.
    np.savez(inputs, images=np.array(data, dtype=bytes), vectors=extra)
    out = str(tmp_path / "out.npz")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    subprocess.run([PY, "-c", _LOADER, path, inputs, out], check=True, env=env, timeout=300,
                   cwd=REPO_ROOT)
    got = np.load(out, allow_pickle=False)

    ref, ok = keras_reference(model, data)
    assert ok.all()
    np.testing.assert_allclose(got["matrices"], ref, atol=ATOL)
    ref_scores = numpy_scores_eq1(ref, ls.vectors)
    np.testing.assert_allclose(got["default_scores"], ref_scores, atol=ATOL)
    unit = extra / np.linalg.norm(extra, axis=1, keepdims=True)
    np.testing.assert_allclose(got["labels_scores"], numpy_scores_eq1(ref, unit), atol=ATOL)
    top = np.argsort(-ref_scores, axis=1)[:, :3]
    np.testing.assert_array_equal(got["default_top_k_labels"], np.array(NAMES)[top])
    np.testing.assert_array_equal(got["default_top_k_unseen"], np.array(UNSEEN)[top])
    np.testing.assert_allclose(got["default_top_k_scores"],
                               np.take_along_axis(ref_scores, top, 1), atol=ATOL)
    rows = np.einsum("nmd,cd->nmc", ref, ls.vectors).argmax(axis=1)
    np.testing.assert_array_equal(got["default_top_k_rows"], np.take_along_axis(rows, top, 1))
    assert got["default_ok"].all() and (got["default_error"] == "").all()


def test_bad_images_fail_per_image_and_empty_batch(exported):
    model, ls, path = exported
    loaded = tf.saved_model.load(path)
    serve = loaded.signatures["serving_default"]
    good = make_images(2, seed=3)
    png = make_images(1, seed=4, fmt="PNG")[0]
    bad = [b"", b"not an image at all", good[0][: len(good[0]) // 2], png[:-20], b"\xff\xd8"]
    out = serve(image_bytes=tf.constant([good[0], *bad, good[1]]))
    ok = out["ok"].numpy()
    np.testing.assert_array_equal(ok, [True] + [False] * len(bad) + [True])
    errors = out["error"].numpy()
    assert errors[0] == b"" and all(b"not a complete JPEG or PNG" in e for e in errors[1:-1])
    scores = out["scores"].numpy()
    assert np.all(scores[1:-1] == 0.0)
    assert np.all(out["top_k_labels"].numpy()[1:-1] == b"")
    # The good images in a mixed batch score exactly as on their own.
    alone = serve(image_bytes=tf.constant([good[0], good[1]]))["scores"].numpy()
    np.testing.assert_allclose(scores[[0, -1]], alone, atol=ATOL)

    empty = serve(image_bytes=tf.constant([], tf.string))
    assert empty["scores"].shape == (0, len(NAMES))
    assert empty["top_k_labels"].shape == (0, 3)
    assert empty["ok"].shape == (0,)
    m = loaded.signatures["matrices"](image_bytes=tf.constant([], tf.string))["matrices"]
    assert m.shape == (0, M, D)


class _RejectsEmptyBatch(keras.layers.Layer):
    """Fails on a batch of 0 images, as oneDNN's convolutions do on some CPUs."""

    def call(self, x):
        check = tf.debugging.assert_greater(tf.shape(x)[0], 0, message="backbone ran on 0 images")
        with tf.control_dependencies([check]):
            return tf.identity(x)


@pytest.mark.parametrize("batch", [0, 1, 5])
def test_backbone_never_runs_on_an_empty_batch(tmp_path, batch):
    """Batches of 0, 1 and many work on every signature, whatever the backbone does with 0."""
    keras.utils.set_random_seed(0)
    images = keras.Input((SIZE, SIZE, 3), dtype="uint8", name="images")
    x = _RejectsEmptyBatch()(keras.ops.cast(images, "float32") / 255.0)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    matrices = keras.layers.Reshape((M, D), name="matrices")(keras.layers.Dense(M * D)(x))
    model, ls = keras.Model(images, matrices), tiny_label_space()
    path = _write(model, ls, str(tmp_path / "export"))
    loaded = tf.saved_model.load(path)
    data = tf.constant(make_images(batch, seed=7), tf.string, shape=(batch,))
    out = loaded.signatures["serving_default"](image_bytes=data)
    assert out["scores"].shape == (batch, len(NAMES)) and out["top_k_labels"].shape == (batch, 3)
    assert out["ok"].numpy().all()
    query = tf.constant(ls.vectors[:2], tf.float32)
    scored = loaded.signatures["score_labels"](image_bytes=data, label_vectors=query)
    assert scored["scores"].shape == (batch, 2)
    got = loaded.signatures["matrices"](image_bytes=data)["matrices"].numpy()
    assert got.shape == (batch, M, D)
    if batch:
        want = model(signatures.decode_and_resize(data, (SIZE, SIZE))[0]).numpy()
        np.testing.assert_allclose(got, want, atol=ATOL)


@pytest.mark.parametrize("batch", [0, 3])
def test_attention_pooling_model_exports(tmp_path, batch):
    """The demo model (small_cnn with its Gaussian blur, per-row attention pooling, unit rows)
    serves like the paper's head."""
    from sdl_tf.config import ModelConfig
    from sdl_tf.modeling.model import build_model

    keras.utils.set_random_seed(4)
    model = build_model(ModelConfig(backbone="small_cnn", weights="none", image_size=SIZE,
                                    num_rows=M, dim=D, pooling="attention", row_scale=8.0))
    ls = tiny_label_space()
    path = _write(model, ls, str(tmp_path / "export"))
    loaded = tf.saved_model.load(path)
    data = tf.constant(make_images(batch, seed=9), tf.string, shape=(batch,))
    got = loaded.signatures["matrices"](image_bytes=data)["matrices"].numpy()
    assert got.shape == (batch, M, D)
    scores = loaded.signatures["serving_default"](image_bytes=data)["scores"].numpy()
    assert scores.shape == (batch, len(NAMES))
    if batch:
        want, ok = keras_reference(model, make_images(batch, seed=9))
        assert ok.all()
        np.testing.assert_allclose(got, want, atol=ATOL)
        np.testing.assert_allclose(scores, numpy_scores_eq1(want, ls.vectors), atol=1e-4)




def test_contract_errors():
    images = keras.Input((None, None, 3), dtype="uint8", name="images")
    flat = keras.layers.GlobalAveragePooling2D()(keras.ops.cast(images, "float32"))
    model = keras.Model(images, keras.layers.Reshape((1, 3))(flat))
    with pytest.raises(signatures.ExportError, match="fixed H, W"):
        signatures.model_contract(model)


def test_top_k_and_dim_are_checked():
    model = tiny_model()
    with pytest.raises(signatures.ExportError, match="top_k must be >= 1"):
        signatures.build_export_archive(model, tiny_label_space(), top_k=0)
    assert signatures.SIGNATURES == ("serving_default", "score_labels", "matrices")


def test_image_bytes_valid():
    good = make_images(1)[0]
    png = make_images(1, fmt="PNG")[0]
    for data, ok in ((good, True), (png, True), (good[:-2], False), (png[:-20], False),
                     (b"", False), (b"\xff\xd8", False)):
        assert bool(signatures.image_bytes_valid(tf.constant(data))) is ok, data[:8]


def test_op_error_message_keeps_the_meaningful_line():
    error = tf.errors.InvalidArgumentError(
        None, None, "Graph execution error:\n\nDetected at node DecodePng defined at:\n"
        "  File \"x.py\", line 1\nInvalid PNG data, size 6108\n\t [[{{node DecodePng}}]]")
    assert signatures.op_error_message(error) == "Invalid PNG data, size 6108"
