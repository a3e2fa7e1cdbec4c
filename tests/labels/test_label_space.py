"""Tests for sdl_tf.labels.label_space.LabelSpace."""

import json
import os

import numpy as np
import pytest

from sdl_tf.labels.label_space import LabelSpace, l2_normalize


def _space():
    return LabelSpace.create(["cat", "dog", "traffic light", "cup"], [False, True, False, True],
                             [[3.0, 4.0], [0.0, 2.0], [1.0, 0.0], [-1.0, -1.0]], source="test")


def test_create_normalises_and_properties():
    s = _space()
    assert s.num_labels == 4 and s.dim == 2
    # [3, 4] / 5 by hand.
    np.testing.assert_allclose(s.vectors[0], [0.6, 0.8], rtol=1e-6)
    assert s.vectors.dtype == np.float32
    np.testing.assert_array_equal(s.seen_indices, [0, 2])
    np.testing.assert_array_equal(s.unseen_indices, [1, 3])
    assert s.seen_indices.dtype == np.int64
    assert s.seen_names == ("cat", "traffic light")
    assert s.unseen_names == ("dog", "cup")
    np.testing.assert_allclose(s.seen_vectors, s.vectors[[0, 2]])
    np.testing.assert_allclose(s.unseen_vectors[1], [-(0.5**0.5), -(0.5**0.5)], rtol=1e-6)
    assert s.index("cup") == 3
    with pytest.raises(KeyError, match="'bird'"):
        s.index("bird")


def test_save_load_round_trip(tmp_path):
    s = _space()
    s.save(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["label_vectors.npy", "labels.json"]
    meta = json.loads((tmp_path / "labels.json").read_text())
    assert meta["schema_version"] == 1 and meta["dim"] == 2
    assert meta["labels"][1] == {"name": "dog", "unseen": True}
    loaded = LabelSpace.load(str(tmp_path))
    assert loaded.names == s.names and loaded.source == "test"
    np.testing.assert_array_equal(loaded.unseen, s.unseen)
    np.testing.assert_array_equal(loaded.vectors, s.vectors)
    assert np.load(tmp_path / "label_vectors.npy", allow_pickle=False).dtype == np.float32


def test_validation_errors():
    with pytest.raises(ValueError, match="duplicate label names: \\['a'\\]"):
        LabelSpace.create(["a", "a"], [False, False], np.eye(2))
    with pytest.raises(ValueError, match="counts must match"):
        LabelSpace.create(["a", "b"], [False], np.eye(2))
    with pytest.raises(ValueError, match="l2-normalised"):
        LabelSpace(("a",), np.array([False]), np.array([[2.0, 0.0]]))
    with pytest.raises(ValueError, match="zero"):
        l2_normalize(np.zeros((1, 3)))


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="labels.json"):
        LabelSpace.load(str(tmp_path))
    _space().save(str(tmp_path))
    np.save(tmp_path / "label_vectors.npy", np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="label_vectors.npy.*does not match the 4 labels"):
        LabelSpace.load(str(tmp_path))
    (tmp_path / "labels.json").write_text('{"labels": [\n oops')
    with pytest.raises(ValueError, match="labels.json: invalid JSON at line 2"):
        LabelSpace.load(str(tmp_path))


def test_arrays_are_read_only():
    s = _space()
    with pytest.raises(ValueError):
        s.vectors[0, 0] = 1.0
