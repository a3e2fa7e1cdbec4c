"""The three serving signatures of an SDL export, and the in-graph image decoding they share.

Every signature takes `image_bytes` (string [N], JPEG or PNG; the `_bytes` suffix makes TF
Serving's REST API accept `{"b64": ...}`), decoded and resized in the graph:

* `serving_default` -> `scores` [N, C] over the whole label space (eq. 1: s_c = max_m (A t_c)),
  `top_k_labels` string [N, K], `top_k_scores` [N, K], `top_k_unseen` bool [N, K],
  `top_k_rows` int32 [N, K] (the row of A that gave each score, as in the paper's Figure 3),
  `ok` bool [N] and `error` string [N].
* `score_labels` (`image_bytes` + `label_vectors` [L, d]) -> `scores` [N, L], `top_rows` [N, L],
  `ok`, `error`: tags that did not exist at training time, scored at request time.
* `matrices` -> `matrices` [N, M, d], `ok`, `error`: for building a retrieval index.

A request image that is not a complete JPEG/PNG does not fail the request: its `ok` is False,
its `error` says why, and its scores/matrices are computed on a black image and then zeroed.
`build_export_archive` assembles them; `sdl_tf.serving.export_lib` writes the archive out.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from sdl_tf import errors
from sdl_tf.modeling import scoring

SERVING_DEFAULT = "serving_default"
SCORE_LABELS = "score_labels"
MATRICES = "matrices"
SIGNATURES = (SERVING_DEFAULT, SCORE_LABELS, MATRICES)

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_END = b"\xff\xd9"
BAD_IMAGE_ERROR = "not a complete JPEG or PNG image (bad header or truncated data)"


class ExportError(errors.SDLError):
    """Raised when an export cannot be written (existing version, bad model contract...)."""


def image_bytes_valid(image_bytes: tf.Tensor) -> tf.Tensor:
    """Cheap structural check of encoded images, so corrupt bytes never reach the decoder.

    A JPEG must start with the SOI marker (`tf.io.is_jpeg`) and end with EOI (FF D9); a PNG
    must start with the 8-byte signature and end with the IEND chunk. This catches empty,
    non-image and truncated uploads (the usual failures) without raising, which a decode op
    inside the serving graph would do (failing the whole request).

    Args:
      image_bytes: tf.string scalar.

    Returns:
      tf.bool scalar.
    """
    def _check():
        is_jpeg = tf.logical_and(
            tf.io.is_jpeg(image_bytes),
            tf.equal(tf.strings.substr(image_bytes, -2, 2), _JPEG_END),
        )
        is_png = tf.logical_and(
            tf.equal(tf.strings.substr(image_bytes, 0, len(_PNG_MAGIC)), _PNG_MAGIC),
            tf.equal(tf.strings.substr(image_bytes, -len(_PNG_END), len(_PNG_END)), _PNG_END),
        )
        return tf.logical_or(is_jpeg, is_png)

    # substr with a position outside the string raises, so only look at long enough strings
    # (no real JPEG/PNG is shorter than its signature plus its end marker).
    long_enough = tf.strings.length(image_bytes) >= len(_PNG_MAGIC) + len(_PNG_END)
    return tf.cond(long_enough, _check, lambda: tf.constant(False))


def decode_and_resize(image_bytes: tf.Tensor, image_size: tuple[int, int]) -> tuple:
    """Decodes a batch of JPEG/PNG bytes to the model's uint8 input, flagging bad images.

    Same as evaluation (`sdl_tf.data.pipeline.decode_eval_image`): the whole image, bilinear with
    antialiasing to exactly `image_size` (no crop), rounded back to uint8 because the model's
    input contract is uint8 0-255 RGB with the preprocessing inside the model.

    Args:
      image_bytes: tf.string [N].
      image_size: (height, width) of the model input.

    Returns:
      images uint8 [N, H, W, 3] (black for bad images), ok bool [N].
    """
    height, width = image_size

    def _one(data):
        ok = image_bytes_valid(data)

        def _decode():
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
            image = tf.image.resize(image, (height, width), antialias=True)
            return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)

        image = tf.cond(ok, _decode, lambda: tf.zeros((height, width, 3), tf.uint8))
        return tf.ensure_shape(image, (height, width, 3)), ok

    images, ok = tf.map_fn(
        _one,
        image_bytes,
        fn_output_signature=(
            tf.TensorSpec((height, width, 3), tf.uint8),
            tf.TensorSpec((), tf.bool),
        ),
    )
    return images, ok


def _error_strings(ok: tf.Tensor) -> tf.Tensor:
    return tf.where(ok, tf.constant(""), tf.constant(BAD_IMAGE_ERROR))


def model_contract(model: keras.Model) -> tuple[tuple[int, int], int, int]:
    """Checks the model's input/output contract (docs/design.md) and returns its sizes.

    Returns:
      ((H, W), M, d).

    Raises:
      ExportError: naming the mismatch.
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError(
            f"model must have one input 'images' and one output 'matrices', got "
            f"{len(model.inputs)} inputs and {len(model.outputs)} outputs"
        )
    in_shape = tuple(model.inputs[0].shape)
    out_shape = tuple(model.outputs[0].shape)
    if len(in_shape) != 4 or in_shape[3] != 3 or None in in_shape[1:]:
        raise ExportError(f"model input must be (None, H, W, 3) with fixed H, W; got {in_shape}")
    if len(out_shape) != 3 or None in out_shape[1:]:
        raise ExportError(f"model output must be (None, M, d); got {out_shape}")
    return (int(in_shape[1]), int(in_shape[2])), int(out_shape[1]), int(out_shape[2])


def _matrices_fn(model: keras.Model, image_size: tuple[int, int], num_rows: int, dim: int):
    """image_bytes [N] -> (matrices float32 [N, M, d], zero for bad images; ok bool [N])."""

    def matrices_of(image_bytes):
        images, ok = decode_and_resize(image_bytes, image_size)
        # An empty request never reaches the backbone: oneDNN's convolutions reject a batch of
        # 0 images on some CPUs ("input depth must be evenly divisible by filter depth").
        matrices = tf.cond(
            tf.shape(images)[0] > 0,
            lambda: tf.cast(model(images, training=False), tf.float32),
            lambda: tf.zeros((0, num_rows, dim), tf.float32),
        )
        # Bad images were run as black images; zero their outputs so nobody mistakes them.
        matrices = tf.where(ok[:, None, None], matrices, tf.zeros_like(matrices))
        return matrices, ok

    return matrices_of


def _serve_fn(matrices_of, label_space, k: int):
    """The `serving_default` function: top-K labels of the label space baked into the graph."""
    # Constants are baked into the graph: the serving model needs no side files.
    names = tf.constant(list(label_space.names), tf.string)
    unseen = tf.constant(np.asarray(label_space.unseen, bool))
    vectors = tf.constant(np.asarray(label_space.vectors, np.float32))

    def serve(image_bytes):
        matrices, ok = matrices_of(image_bytes)
        # Eq. (1) scores (float32, as the matrices) and the winning row of each label (int32,
        # the numbers in Figure 3); tf.math.top_k is the in-graph twin of metrics.top_k_indices.
        scores, rows = scoring.scores_and_rows(matrices, vectors)
        top_scores, top_idx = tf.math.top_k(scores, k=k)
        return {
            "scores": scores,
            # Names of a bad image's "top" labels would be noise: blank them.
            "top_k_labels": tf.where(ok[:, None], tf.gather(names, top_idx), ""),
            "top_k_scores": top_scores,
            "top_k_unseen": tf.gather(unseen, top_idx),
            "top_k_rows": tf.gather(rows, top_idx, batch_dims=1),
            "ok": ok,
            "error": _error_strings(ok),
        }

    return serve


def _score_labels_fn(matrices_of):
    """The `score_labels` function: eq. (1) scores of request-time label vectors."""

    def score_labels(image_bytes, label_vectors):
        matrices, ok = matrices_of(image_bytes)
        # Word vectors are l2-normalised everywhere in SDL (section 4); idempotent if already.
        query = tf.math.l2_normalize(tf.cast(label_vectors, tf.float32), axis=-1)
        scores, rows = scoring.scores_and_rows(matrices, query)
        return {"scores": scores, "top_rows": rows, "ok": ok, "error": _error_strings(ok)}

    return score_labels


def build_export_archive(model: keras.Model, label_space, top_k: int = 10):
    """Builds the Keras `ExportArchive` with the three serving signatures.

    Args:
      model: Keras model, input uint8 (None, H, W, 3), output float32 (None, M, d).
      label_space: `sdl_tf.labels.label_space.LabelSpace` whose names/vectors are embedded.
      top_k: K of the `serving_default` top-K outputs (capped at the number of labels).

    Returns:
      keras.export.ExportArchive, ready for `write_out`.
    """
    image_size, num_rows, dim = model_contract(model)
    if label_space.dim != dim:
        raise ExportError(f"label vectors have d={label_space.dim} but the model outputs d={dim}")
    k = min(int(top_k), label_space.num_labels)
    if k < 1:
        raise ExportError(f"top_k must be >= 1, got {top_k}")
    matrices_of = _matrices_fn(model, image_size, num_rows, dim)

    def matrices_fn(image_bytes):
        matrices, ok = matrices_of(image_bytes)
        return {"matrices": matrices, "ok": ok, "error": _error_strings(ok)}

    bytes_spec = tf.TensorSpec((None,), tf.string, name="image_bytes")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SERVING_DEFAULT, _serve_fn(matrices_of, label_space, k),
                         input_signature=[bytes_spec])
    archive.add_endpoint(
        SCORE_LABELS,
        _score_labels_fn(matrices_of),
        input_signature=[bytes_spec, tf.TensorSpec((None, dim), tf.float32, name="label_vectors")],
    )
    archive.add_endpoint(MATRICES, matrices_fn, input_signature=[bytes_spec])
    return archive


def op_error_message(error) -> str:
    """The meaningful line of a TF op error (e.g. "Invalid PNG data, size 6108"), without the
    "Graph execution error" / "Detected at node" / "[[{{node ...}}]]" decoration."""
    text = getattr(error, "message", str(error))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # The message sits right before the first "[[{{node ...}}]]" line, after any stack trace.
    end = next((i for i, ln in enumerate(lines) if ln.startswith("[[")), len(lines))
    noise = ("Graph execution error", "Detected at node", "File ", "<stack traces")
    useful = [ln for ln in lines[:end] if not ln.startswith(noise)]
    return useful[-1] if useful else (lines[0] if lines else type(error).__name__)
