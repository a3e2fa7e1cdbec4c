"""Tests for sdl_tf.utils.atomic_io."""

import os

import pytest

from sdl_tf.utils import atomic_io


def test_text_and_binary_writes_replace_the_target(tmp_path):
    path = tmp_path / "a.json"
    atomic_io.atomic_write_text(str(path), "first\n")
    atomic_io.atomic_write_text(str(path), "second\n")
    assert path.read_text() == "second\n"
    atomic_io.atomic_write(str(tmp_path / "b.bin"), lambda f: f.write(b"\x00\x01"))
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(os.listdir(tmp_path)) == ["a.json", "b.bin"]  # no temporary file left


def test_mode_is_what_open_would_give(tmp_path):
    path = tmp_path / "c.txt"
    atomic_io.atomic_write_text(str(path), "x")
    mask = os.umask(0)
    os.umask(mask)
    # mkstemp alone would leave 0600; the file must be readable like one open() creates.
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("old")

    def write(f):
        f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_io.atomic_write(str(path), write, mode="w")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["d.txt"]


def test_atomic_save_for_path_writers_keeps_suffix_and_cleans_up(tmp_path):
    path = tmp_path / "m.weights.h5"
    seen = []

    def save(tmp):
        seen.append(tmp)
        with open(tmp, "w") as f:
            f.write("new")

    atomic_io.atomic_save(str(path), save, suffix=".weights.h5")
    assert path.read_text() == "new" and seen[0].endswith(".weights.h5")
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask

    def fail(tmp):
        save(tmp)
        raise OSError("no space left")

    with pytest.raises(OSError, match="no space"):
        atomic_io.atomic_save(str(path), fail, suffix=".weights.h5")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["m.weights.h5"]
