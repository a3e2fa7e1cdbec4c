"""Writing and reading the SavedModel export of an SDL model for TF Serving (REST).

The exported artifact follows TF Serving's layout `<export_dir>/<name>/<version>/`, with the
three signatures of `sdl_tf.serving.signatures` (`serving_default`, `score_labels`,
`matrices`). The label space (names, unseen flags, vectors) is also written to
`<version>/assets.extra/` (TF Serving ignores that directory) with `export_info.json`, so
clients can score extra labels offline. A version is written to a temporary directory and
renamed, so TF Serving never sees half an export. `export_from_config` is the library of
`python -m sdl_tf.export`: it loads the run with `sdl_tf.modeling.run_dir`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from sdl_tf import errors
from sdl_tf.config import ExportConfig  # with the other configs (light to import)
from sdl_tf.labels.label_space import LabelSpace
from sdl_tf.modeling import run_dir
from sdl_tf.serving import signatures
from sdl_tf.serving.signatures import ExportError
from sdl_tf.utils import gfile_utils

ASSETS_EXTRA = "assets.extra"
EXPORT_INFO = "export_info.json"


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


def _temp_dir(model_base: str, version: int, local: bool) -> str:
    """A dot-prefixed temp dir in the same parent: TF Serving only loads all-digit names, so a
    half-written export is never picked up, and the final rename is atomic on one filesystem
    (on GCS a directory rename copies objects; TF Serving still ignores the temp name)."""
    if local:
        return tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_base)
    tmp = os.path.join(model_base, f".tmp-{version}-{os.getpid()}")
    tf.io.gfile.makedirs(tmp)
    return tmp


def _write_assets(directory: str, model: keras.Model, label_space, top_k: int,
                  source: str) -> None:
    """`assets.extra/`: the label space and `export_info.json`."""
    extra = os.path.join(directory, ASSETS_EXTRA)
    label_space.save(extra)
    image_size, num_rows, _ = signatures.model_contract(model)
    info = {
        "signatures": list(signatures.SIGNATURES),
        "image_size": list(image_size),
        "num_matrix_rows": num_rows,
        "dim": label_space.dim,
        "num_labels": label_space.num_labels,
        "top_k": min(int(top_k), label_space.num_labels),
        "source": source,
    }
    with tf.io.gfile.GFile(os.path.join(extra, EXPORT_INFO), "w") as f:
        json.dump(info, f, indent=2)


def _swap_in(tmp: str, final: str) -> None:
    """Moves the written `tmp` to `final`; an existing `final` is moved aside, then removed."""
    if tf.io.gfile.exists(final):
        old = final + ".old"
        _rmtree(old)
        _move_tree(final, old)
        _move_tree(tmp, final)
        _rmtree(old)
    else:
        _move_tree(tmp, final)


def _check_version(export_dir: str, name: str, version: int | None, overwrite: bool) -> str:
    """The version dir to write, `<export_dir>/<name>/<version>` (None: the next free one)."""
    model_base = os.path.join(export_dir, name)
    if version is None:
        version = next_version(model_base)
    if int(version) < 1:
        raise ExportError(f"version must be a positive integer, got {version}")
    final = os.path.join(model_base, str(int(version)))
    if tf.io.gfile.exists(final) and not overwrite:
        raise ExportError(f"{final} already exists; pass --overwrite or a new --version")
    return final


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
      model: Keras model meeting the contract (see `signatures.model_contract`).
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
    final = _check_version(export_dir, name, version, overwrite)
    model_base = os.path.dirname(final)
    archive = signatures.build_export_archive(model, label_space, top_k=top_k)
    tf.io.gfile.makedirs(model_base)
    local = gfile_utils.is_local(model_base)
    tmp = _temp_dir(model_base, int(os.path.basename(final)), local)
    try:
        archive.write_out(tmp, verbose=False)
        if local:
            # mkdtemp creates 0700; give the export the usual umask permissions so a model
            # server running as another user can read it.
            _chmod_tree(tmp)
        _write_assets(tmp, model, label_space, top_k, source)
        _swap_in(tmp, final)
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
    raise errors.MissingPathError(
        f"{path!r} is not a SavedModel (no saved_model.pb) nor a directory of numeric versions",
        errors.missing_export_hint(path))


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
        out = self.signature(signatures.MATRICES)(
            image_bytes=tf.constant(image_bytes, tf.string))
        return out["matrices"].numpy(), out["ok"].numpy()


def load_export(path: str) -> LoadedExport:
    """Loads an export (version dir or base dir) with `tf.saved_model.load`."""
    path = resolve_export_path(path)
    module = tf.saved_model.load(path)
    label_space = LabelSpace.load(os.path.join(path, ASSETS_EXTRA))
    return LoadedExport(path=path, module=module, label_space=label_space)


def export_from_config(config: ExportConfig) -> str:
    """Library entry of `python -m sdl_tf.export`: load the run, export, return the path.

    The model is the run's `final.keras`, `config.keras_model` instead, or with
    `config.checkpoint` the latest checkpoint (`sdl_tf.modeling.run_dir.load`).
    """
    if config.version is not None and not config.overwrite:
        final = os.path.join(config.export_dir, config.name, str(config.version))
        if tf.io.gfile.exists(final):  # fail before the (slow) model load
            raise ExportError(f"{final} already exists; pass --overwrite or a new --version")
    model, label_space = run_dir.load(config.model_dir, checkpoint=config.checkpoint,
                                      keras_file=config.keras_model or None)
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
