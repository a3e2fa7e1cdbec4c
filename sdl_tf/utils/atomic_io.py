"""Atomic file writes: a reader never sees a half-written file.

Every file the project writes (label space, configs, summaries, metrics, reports, indexes, the
final model, converted weights) goes through `atomic_write` (writers of a file object) or
`atomic_save` (savers that take a path, such as Keras'): the content is written to a hidden
temporary file in the target's directory (same filesystem, so the rename is atomic), given
the permissions a plain `open()`
would give (`tempfile.mkstemp` creates 0600 files, which a serving or web-server user could
not read), then renamed over the target. On any failure the temporary file is removed.

A non-local target (`gs://`, `ram://`, any `tf.io.gfile` filesystem) is written to a local
temporary file first (savers may seek or need a real path), copied to `<path>.tmp-<pid>` and
renamed over the target with `tf.io.gfile.rename(overwrite=True)` (atomic where the filesystem's
rename is; on GCS it is a copy, but readers still never see a partial object).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

from sdl_tf.utils import gfile_utils


def default_file_mode() -> int:
    """0o666 minus the process umask: the mode `open()` would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str, write_fn: Callable, mode: str = "wb", encoding: str | None = None):
    """Calls `write_fn(f)` on a temporary file, then renames it to `path`.

    Args:
      path: the target file; its directory must exist.
      write_fn: writes the content to the open file object it is given.
      mode: "wb" (binary) or "w" (text).
      encoding: text encoding when mode is "w" (default utf-8).
    """
    if "b" not in mode and encoding is None:
        encoding = "utf-8"

    def save(tmp: str) -> None:
        with open(tmp, mode, encoding=encoding) as f:
            write_fn(f)

    atomic_save(path, save, suffix=".tmp")


def atomic_save(path: str, save_fn: Callable[[str], None], suffix: str = "") -> None:
    """Calls `save_fn(tmp_path)` for a writer that takes a path, then renames it to `path`.

    For savers that open the file themselves (`keras.Model.save`, `save_weights`), which also
    insist on a file-name suffix (`.keras`, `.weights.h5`): the temporary name ends in `suffix`.

    Args:
      path: the target file; its directory must exist.
      save_fn: writes the whole file at the path it is given.
      suffix: file-name ending the saver requires.
    """
    if not gfile_utils.is_local(path):
        _remote_save(path, save_fn, suffix)
        return
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix,
                               dir=directory)
    os.close(fd)
    try:
        save_fn(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _remote_save(path: str, save_fn: Callable[[str], None], suffix: str) -> None:
    gfile = gfile_utils.gfile()
    with tempfile.TemporaryDirectory(prefix="sdl_tf-") as directory:
        local = os.path.join(directory, "file" + suffix)
        save_fn(local)
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            gfile.copy(local, tmp, overwrite=True)
            gfile.rename(tmp, path, overwrite=True)
        except BaseException:
            if gfile.exists(tmp):
                gfile.remove(tmp)
            raise


def atomic_write_text(path: str, text: str) -> None:
    """Writes `text` (utf-8) to `path` atomically."""
    atomic_write(path, lambda f: f.write(text), mode="w")
