"""Paths on any TensorFlow filesystem (local, `gs://`, `ram://`, ...) for the project's files.

Modules that already import TensorFlow call `tf.io.gfile` directly. These few helpers are for
the TF-free modules (label space, config, atomic writes, report, prediction inputs): a local
path uses plain Python, so the serving client still runs without TensorFlow; any other path
imports TensorFlow and goes through `tf.io.gfile`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile


def is_local(path) -> bool:
    """True for a plain local path (no `scheme://` prefix)."""
    return "://" not in os.fspath(path)


def gfile():
    """`tf.io.gfile`, imported on first use."""
    import tensorflow as tf

    return tf.io.gfile


def open_file(path, mode: str = "r"):
    """`open(path, mode)` (utf-8 for text) locally, else `tf.io.gfile.GFile(path, mode)`."""
    if is_local(path):
        return open(path, mode, encoding=None if "b" in mode else "utf-8")
    return gfile().GFile(path, mode)


def isfile(path) -> bool:
    if is_local(path):
        return os.path.isfile(path)
    return gfile().exists(path) and not gfile().isdir(path)


def isdir(path) -> bool:
    return os.path.isdir(path) if is_local(path) else gfile().isdir(path)


def makedirs(path) -> None:
    """Creates `path` and its parents; no error if it exists ("" is the current directory)."""
    if not path:
        return
    if is_local(path):
        os.makedirs(path, exist_ok=True)
    else:
        gfile().makedirs(path)


def read_bytes(path) -> bytes:
    """A file's content; OSError (FileNotFoundError if missing) on every filesystem."""
    if is_local(path):
        with open(path, "rb") as f:
            return f.read()
    import tensorflow as tf

    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    except tf.errors.NotFoundError:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", path) from None
    except tf.errors.OpError as e:
        raise OSError(f"{path}: {e.message}") from None


@contextlib.contextmanager
def local_copy(path):
    """Yields a local path holding `path`'s content, for libraries that read only local files.

    A local `path` is yielded as is; otherwise the file is copied into a temporary directory
    (same base name, so suffix checks such as Keras' `.keras` pass) that is removed afterwards.
    """
    if is_local(path):
        yield path
        return
    directory = tempfile.mkdtemp(prefix="sdl_tf-")
    try:
        local = os.path.join(directory, os.path.basename(path))
        gfile().copy(path, local, overwrite=True)
        yield local
    finally:
        shutil.rmtree(directory, ignore_errors=True)
