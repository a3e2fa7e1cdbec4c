"""SavedModel export of an SDL model for TF Serving (REST), and the in-graph image decoding.

The exported artifact follows TF Serving's layout `<export_dir>/<name>/<version>/` and has three
signatures, all taking `image_bytes` (string [N], JPEG or PNG; the `_bytes` suffix makes TF
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
The label space (names, unseen flags, vectors) is also written to `<version>/assets.extra/`
(TF Serving ignores that directory) so clients can score extra labels offline.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from sdl_tf.config import ExportConfig  # with the other configs (light to import)
from sdl_tf.modeling import scoring
from sdl_tf.utils import gfile_utils

SERVING_DEFAULT = "serving_default"
SCORE_LABELS = "score_labels"
MATRICES = "matrices"
ASSETS_EXTRA = "assets.extra"
EXPORT_INFO = "export_info.json"

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_END = b"\xff\xd9"
BAD_IMAGE_ERROR = "not a complete JPEG or PNG image (bad header or truncated data)"


class ExportError(Exception):
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
    # Constants are baked into the graph: the serving model needs no side files.
    names = tf.constant(list(label_space.names), tf.string)
    unseen = tf.constant(np.asarray(label_space.unseen, bool))
    vectors = tf.constant(np.asarray(label_space.vectors, np.float32))

    def _matrices(image_bytes):
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

    def serve(image_bytes):
        matrices, ok = _matrices(image_bytes)
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

    def score_labels(image_bytes, label_vectors):
        matrices, ok = _matrices(image_bytes)
        # Word vectors are l2-normalised everywhere in SDL (section 4); idempotent if already.
        query = tf.math.l2_normalize(tf.cast(label_vectors, tf.float32), axis=-1)
        scores, rows = scoring.scores_and_rows(matrices, query)
        return {"scores": scores, "top_rows": rows, "ok": ok, "error": _error_strings(ok)}

    def matrices_fn(image_bytes):
        matrices, ok = _matrices(image_bytes)
        return {"matrices": matrices, "ok": ok, "error": _error_strings(ok)}

    bytes_spec = tf.TensorSpec((None,), tf.string, name="image_bytes")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SERVING_DEFAULT, serve, input_signature=[bytes_spec])
    archive.add_endpoint(
        SCORE_LABELS,
        score_labels,
        input_signature=[bytes_spec, tf.TensorSpec((None, dim), tf.float32, name="label_vectors")],
    )
    archive.add_endpoint(MATRICES, matrices_fn, input_signature=[bytes_spec])
    return archive


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _chmod_tree(path: str) -> None:
    os.chmod(path, 0o777 & ~_umask())


def _move_tree(src: str, dst: str) -> None:
    """Renames directory `src` to `dst` (absent): locally one atomic rename(2); elsewhere file
    by file, as object stores (and ram://) have no directory rename, with saved_model.pb last so
    `dst` is not a loadable SavedModel before all its files are there."""
    if gfile_utils.is_local(src):
        os.rename(src, dst)
        return
    files = []
    for directory, _, names in tf.io.gfile.walk(src):
        tf.io.gfile.makedirs(dst + directory[len(src):])
        # exists(): ram:// lists a sibling "assets.extra" under "assets" as ".extra".
        files += [p for p in (os.path.join(directory, n) for n in names) if tf.io.gfile.exists(p)]
    for path in sorted(files, key=lambda p: os.path.basename(p) == "saved_model.pb"):
        tf.io.gfile.rename(path, dst + path[len(src):], overwrite=True)
    _rmtree(src)


def _rmtree(path: str) -> None:
    """Removes a directory tree if present (any tf.io.gfile filesystem), ignoring errors."""
    try:
        if tf.io.gfile.isdir(path):
            tf.io.gfile.rmtree(path)
    except tf.errors.OpError:
        pass


def next_version(model_base: str) -> int:
    """1 + the largest numeric version directory in `model_base` (1 when there is none)."""
    if not tf.io.gfile.isdir(model_base):
        return 1
    # rstrip: GCS lists subdirectories as "1/".
    names = (n.rstrip("/") for n in tf.io.gfile.listdir(model_base))
    versions = [int(n) for n in names if n.isdigit()]
    return max(versions, default=0) + 1


def export_saved_model(
    model: keras.Model,
    label_space,
    export_dir: str,
    name: str = "sdl",
    version: int | None = None,
    *,
    top_k: int = 10,
    overwrite: bool = False,
    source: str = "",
) -> str:
    """Writes `<export_dir>/<name>/<version>/` atomically (temp dir, then rename).

    Args:
      model: Keras model meeting the contract (see `model_contract`).
      label_space: LabelSpace embedded in the graph and copied to `assets.extra/`.
      export_dir: base directory (TF Serving's `base_path` is `<export_dir>/<name>`).
      name: model name.
      version: positive integer; None picks the next free version.
      top_k: K of the default signature.
      overwrite: replace an existing version directory instead of failing.
      source: free text recorded in `assets.extra/export_info.json` (e.g. the model path).

    Returns:
      The version directory written.

    Raises:
      ExportError: if the version exists and not `overwrite`, or the model breaks the contract.
    """
    model_base = os.path.join(export_dir, name)
    if version is None:
        version = next_version(model_base)
    if int(version) < 1:
        raise ExportError(f"version must be a positive integer, got {version}")
    final = os.path.join(model_base, str(int(version)))
    if tf.io.gfile.exists(final) and not overwrite:
        raise ExportError(f"{final} already exists; pass --overwrite or a new --version")
    archive = build_export_archive(model, label_space, top_k=top_k)
    tf.io.gfile.makedirs(model_base)
    # A dot-prefixed temp dir in the same parent: TF Serving only loads all-digit names, so a
    # half-written export is never picked up, and the final rename is atomic on one filesystem
    # (on GCS a directory rename copies objects; TF Serving still ignores the temp name).
    local = gfile_utils.is_local(model_base)
    if local:
        tmp = tempfile.mkdtemp(prefix=f".tmp-{int(version)}-", dir=model_base)
    else:
        tmp = os.path.join(model_base, f".tmp-{int(version)}-{os.getpid()}")
        tf.io.gfile.makedirs(tmp)
    try:
        archive.write_out(tmp, verbose=False)
        extra = os.path.join(tmp, ASSETS_EXTRA)
        if local:
            # mkdtemp creates 0700; give the export the usual umask permissions so a model
            # server running as another user can read it.
            _chmod_tree(tmp)
        label_space.save(extra)
        info = {
            "signatures": [SERVING_DEFAULT, SCORE_LABELS, MATRICES],
            "image_size": list(model_contract(model)[0]),
            "num_matrix_rows": model_contract(model)[1],
            "dim": label_space.dim,
            "num_labels": label_space.num_labels,
            "top_k": min(int(top_k), label_space.num_labels),
            "source": source,
        }
        with tf.io.gfile.GFile(os.path.join(extra, EXPORT_INFO), "w") as f:
            json.dump(info, f, indent=2)
        if tf.io.gfile.exists(final):  # overwrite: move the old one aside, then swap.
            old = final + ".old"
            _rmtree(old)
            _move_tree(final, old)
            _move_tree(tmp, final)
            _rmtree(old)
        else:
            _move_tree(tmp, final)
        if local:
            _fsync_dir(model_base)
    except BaseException:
        _rmtree(tmp)
        raise
    return final


def resolve_export_path(path: str) -> str:
    """Returns the version dir for `path`: itself if it holds saved_model.pb, else its latest
    numeric version subdirectory (so `saved_models/sdl` works like TF Serving's base_path)."""
    if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        return path
    if tf.io.gfile.isdir(path):
        names = (n.rstrip("/") for n in tf.io.gfile.listdir(path))  # GCS: "1/"
        versions = sorted(int(n) for n in names if n.isdigit())
        for v in reversed(versions):
            cand = os.path.join(path, str(v))
            if tf.io.gfile.exists(os.path.join(cand, "saved_model.pb")):
                return cand
    from sdl_tf import cli

    raise FileNotFoundError(
        f"{path!r} is not a SavedModel (no saved_model.pb) nor a directory of numeric versions: "
        f"{cli.missing_export_hint(path)}"
    )


def is_export(path: str) -> bool:
    """True if `path` is an exported SavedModel or a base dir with numeric versions."""
    try:
        resolve_export_path(path)
        return True
    except FileNotFoundError:
        return False


@dataclasses.dataclass
class LoadedExport:
    """A loaded SavedModel export plus its label space (from `assets.extra/`)."""

    path: str
    module: object
    label_space: object

    def signature(self, name: str):
        return self.module.signatures[name]

    def matrices(self, image_bytes: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """Runs the `matrices` signature: returns (matrices [N, M, d], ok [N])."""
        out = self.signature(MATRICES)(image_bytes=tf.constant(image_bytes, tf.string))
        return out["matrices"].numpy(), out["ok"].numpy()


def load_export(path: str) -> LoadedExport:
    """Loads an export (version dir or base dir) with `tf.saved_model.load`."""
    from sdl_tf.labels.label_space import LabelSpace

    path = resolve_export_path(path)
    module = tf.saved_model.load(path)
    label_space = LabelSpace.load(os.path.join(path, ASSETS_EXTRA))
    return LoadedExport(path=path, module=module, label_space=label_space)


def load_from_checkpoint(model_dir: str):
    """Rebuilds the model from `<model_dir>/config.json` and restores the latest checkpoint in
    `<model_dir>/checkpoints/` (training's tf.train.Checkpoint, whose `model` entry holds the
    weights; the optimizer and step entries are not needed for export).

    Returns:
      (keras.Model, LabelSpace).
    """
    from sdl_tf.config import load_config
    from sdl_tf.labels.label_space import LabelSpace
    from sdl_tf.modeling.model import build_model

    config_path = os.path.join(model_dir, "config.json")
    if not tf.io.gfile.exists(config_path):
        raise ExportError(f"{config_path} not found: --checkpoint needs a training run directory")
    ckpt_dir = os.path.join(model_dir, "checkpoints")
    latest = tf.train.latest_checkpoint(ckpt_dir)
    if latest is None:
        raise ExportError(f"no checkpoint found in {ckpt_dir}")
    model = build_model(load_config(config_path).model)
    status = tf.train.Checkpoint(model=model).restore(latest)
    status.expect_partial()
    # Every model weight must come from the checkpoint, not from the random initialisation.
    status.assert_existing_objects_matched()
    return model, LabelSpace.load(model_dir)


def load_model_for_export(config: ExportConfig):
    """Loads (keras.Model, LabelSpace) from the model dir per the config."""
    from sdl_tf.labels.label_space import LabelSpace

    if config.checkpoint:
        return load_from_checkpoint(config.model_dir)
    if config.keras_model:
        if not tf.io.gfile.exists(config.keras_model):
            raise ExportError(f"--keras_model {config.keras_model} does not exist")
        with gfile_utils.local_copy(config.keras_model) as local:  # Keras reads local files
            model = keras.saving.load_model(local, compile=False)
        return model, LabelSpace.load(config.model_dir)
    from sdl_tf.modeling.model import load_model_dir

    return load_model_dir(config.model_dir)


def export_from_config(config: ExportConfig) -> str:
    """Library entry of `python -m sdl_tf.export`: load the model, export, return the path."""
    if config.version is not None and not config.overwrite:
        final = os.path.join(config.export_dir, config.name, str(config.version))
        if tf.io.gfile.exists(final):  # fail before the (slow) model load
            raise ExportError(f"{final} already exists; pass --overwrite or a new --version")
    model, label_space = load_model_for_export(config)
    return export_saved_model(
        model,
        label_space,
        config.export_dir,
        config.name,
        config.version,
        top_k=config.top_k,
        overwrite=config.overwrite,
        source=_absolute(config.keras_model or config.model_dir),
    )


def _absolute(path: str) -> str:
    return os.path.abspath(path) if gfile_utils.is_local(path) else path


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
