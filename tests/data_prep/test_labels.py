"""Tests for data_prep.labels: the label space from word vectors or ready label vectors."""

import numpy as np
import pytest

from data_prep.common import DataPrepError
from data_prep.labels import build_label_space
from sdl_tf.labels.label_space import LabelSpace


def _w2v(tmp_path, table):
    dim = len(next(iter(table.values())))
    p = tmp_path / "w2v.txt"
    p.write_text(f"{len(table)} {dim}\n" + "".join(
        k + " " + " ".join(map(str, v)) + "\n" for k, v in table.items()))
    return str(p)


def test_build_label_space_from_word_vectors(tmp_path):
    path = _w2v(tmp_path, {"red": [1, 0, 0], "circle": [0, 1, 0], "cat": [0, 0, 3]})
    space, dropped = build_label_space(["red circle", "cat"], [True, False],
                                      word_vectors=path)
    assert dropped == [] and isinstance(space, LabelSpace)
    np.testing.assert_allclose(space.vectors, [[2**-0.5, 2**-0.5, 0], [0, 0, 1]], atol=1e-6)
    np.testing.assert_array_equal(space.unseen_indices, [0])
    with pytest.raises(DataPrepError, match="2 of 3 labels.*'dog'.*'blue circle'"):
        build_label_space(["dog", "cat", "blue circle"], [False] * 3, word_vectors=path)
    space, dropped = build_label_space(["dog", "cat", "red"], [False, True, False],
                                      word_vectors=path, drop_missing=True)
    assert dropped == ["dog"] and space.names == ("cat", "red")
    np.testing.assert_array_equal(space.unseen, [True, False])


def test_build_label_space_from_label_vectors_and_errors(tmp_path):
    p = tmp_path / "lv.txt"
    p.write_text("hot dog\t0 2\ncat\t3 4\n")
    space, _ = build_label_space(["hot_dog", "cat"], [False, True], label_vectors=str(p))
    np.testing.assert_allclose(space.vectors, [[0, 1], [0.6, 0.8]], atol=1e-6)
    with pytest.raises(DataPrepError, match="exactly one"):
        build_label_space(["cat"], [False])
    with pytest.raises(DataPrepError, match="duplicate"):
        build_label_space(["cat", "cat"], [False, False], label_vectors=str(p))
    with pytest.raises(DataPrepError, match="nope.txt"):
        build_label_space(["cat"], [False], word_vectors=str(tmp_path / "nope.txt"))

