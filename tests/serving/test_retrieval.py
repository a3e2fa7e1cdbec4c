"""Tag-based retrieval: eq. (1) scoring over an index, top-k, index files, CLI."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from sdl_tf.serving import export_lib, retrieval
from sdl_tf.serving import tagger as tagger_lib
from tests.helpers.paths import REPO_ROOT
from tests.helpers.serving_models import NAMES, D, export_tiny, make_images, write_word2vec


def _index(matrices):
    n = matrices.shape[0]
    return retrieval.RetrievalIndex(
        image_ids=np.asarray([f"i{i}" for i in range(n)]), matrices=matrices,
        label_names=np.asarray(["a"]), label_unseen=np.zeros(1, bool),
        label_vectors=np.zeros((1, matrices.shape[2]), np.float32))


def test_index_scores_match_brute_force_across_chunks(monkeypatch):
    rng = np.random.default_rng(0)
    mats = rng.normal(size=(50, 7, 12)).astype(np.float32)
    vecs = rng.normal(size=(4, 12)).astype(np.float32)
    brute = np.einsum("nmd,qd->nmq", mats, vecs).max(axis=1)  # r = max_m (A t), eq. (1)
    # 7 * 3 = 21 rows per chunk: chunk boundaries fall inside the 50-image array.
    monkeypatch.setattr(retrieval, "_CHUNK_ROWS", 21)
    index = _index(mats)
    np.testing.assert_allclose(index.scores(vecs), brute, rtol=1e-5, atol=1e-5)
    # A float16 index (as saved) scores like its float32 copy.
    np.testing.assert_array_equal(_index(mats.astype(np.float16)).scores(vecs),
                                  _index(mats.astype(np.float16).astype(np.float32)).scores(vecs))
    with pytest.raises(retrieval.RetrievalError, match=r"\(Q, 12\)"):
        index.scores(vecs[:, :5])


def test_query_top_indices():
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [3.0, 1.0, 2.0, 0.0]], np.float32)
    # M = 1, d = 2 and unit query vectors: r(image i, query q) = A_i[q] = scores[q, i].
    index = _index(np.ascontiguousarray(scores.T[:, None, :]))
    queries = np.eye(2, dtype=np.float32)
    idx, val = index.query(queries, 2)
    np.testing.assert_array_equal(idx, [[1, 3], [0, 2]])
    np.testing.assert_allclose(val, [[0.9, 0.7], [3.0, 2.0]])
    idx, _ = index.query(queries, 10)  # more than N: all, sorted
    np.testing.assert_array_equal(idx, [[1, 3, 2, 0], [0, 2, 1, 3]])
    idx, val = index.query(queries, 0)
    assert idx.shape == val.shape == (2, 0)
    # Ties: the image indexed first comes first.
    idx, _ = _index(np.ones((5, 1, 2), np.float32)).query(queries, 3)
    np.testing.assert_array_equal(idx, [[0, 1, 2], [0, 1, 2]])


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    root = tmp_path_factory.mktemp("retrieval")
    _, ls, export = export_tiny(str(root / "saved"))
    images = root / "images"
    images.mkdir()
    data = make_images(6, seed=31)
    for i, d in enumerate(data):
        (images / f"p{i}.jpg").write_bytes(d)
    (images / "zz_bad.png").write_bytes(b"junk")
    tagger = tagger_lib.Tagger(export)
    index, stats = retrieval.build_index(tagger, tagger_lib.list_images(str(images)), batch_size=4,
                                         show_progress=False)
    return {"root": root, "export": export, "ls": ls, "images": str(images), "data": data,
            "index": index, "stats": stats, "tagger": tagger}


def test_build_index_and_query_rank_like_the_model(indexed):
    index, stats = indexed["index"], indexed["stats"]
    assert stats["indexed"] == 6 and stats["skipped"][0]["path"].endswith("zz_bad.png")
    assert index.image_ids.tolist() == [f"p{i}" for i in range(6)]
    assert index.matrices.shape == (6, 3, D)
    # Ranking images by a label = sorting the export's own scores for that label.
    scores = indexed["tagger"]._export.signature("serving_default")(
        image_bytes=tf.constant(indexed["data"]))["scores"].numpy()
    tags = ["blue", "red"]  # one unseen, one seen label
    vecs = index.tag_vectors(tags)
    idx, val = index.query(vecs, top=4)
    for q, tag in enumerate(tags):
        col = scores[:, NAMES.index(tag)]
        np.testing.assert_array_equal(idx[q], np.argsort(-col)[:4])
        np.testing.assert_allclose(val[q], np.sort(col)[::-1][:4], atol=1e-5)
    with pytest.raises(retrieval.RetrievalError, match="--word_vectors"):
        index.tag_vectors(["zebra"])


def test_index_file_round_trip(indexed, tmp_path):
    index = indexed["index"]
    path = str(tmp_path / "idx.npz")
    index.save(path)  # float16 by default
    with np.load(path, allow_pickle=False) as f:  # readable without pickle
        assert f["matrices"].dtype == np.float16
        assert f["image_ids"].dtype.kind == "U"
    back = retrieval.RetrievalIndex.load(path)
    assert back.image_ids.tolist() == index.image_ids.tolist()
    assert back.matrices.dtype == np.float32
    # float16 keeps ~3 significant digits: |error| <= 2^-11 relative.
    np.testing.assert_allclose(back.matrices, index.matrices, rtol=1e-3, atol=1e-4)
    assert list(back.label_names) == list(NAMES)
    (tmp_path / "bad.npz").write_bytes(b"PK not a zip")
    with pytest.raises(retrieval.RetrievalError, match="not a retrieval index"):
        retrieval.RetrievalIndex.load(str(tmp_path / "bad.npz"))


def test_cli_index_and_query(indexed, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    idx = str(tmp_path / "idx.npz")
    res = subprocess.run(
        [sys.executable, "-m", "sdl_tf.retrieve", "index", f"--model={indexed['export']}",
         f"--images={indexed['images']}", f"--index={idx}", "--batch_size=4"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "indexed 6 images (1 skipped)" in res.stdout and "images/s" in res.stdout
    w2v = str(tmp_path / "w2v.txt")
    write_word2vec(w2v, ["kite", "dog"])
    res = subprocess.run(
        [sys.executable, "-m", "sdl_tf.retrieve", "query", f"--index={idx}",
         "--tags=red,kite", f"--word_vectors={w2v}", "--top=3"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    assert lines[0].startswith("red: p") and lines[0].count(" p") == 3
    assert lines[1].startswith("kite: p")
    assert "2 queries over 6 images" in lines[2]
    # Library call agrees with the CLI's first line.
    out = io.StringIO()
    hits = retrieval.run_query(retrieval.QueryConfig(idx, ("red",), None, 3), out=out)
    assert out.getvalue().splitlines()[0] == lines[0]
    assert [h[0] for h in hits[0]] == [s.split()[0] for s in lines[0][5:].split(", ")]


def test_export_contract_of_the_index_inputs(indexed):
    """The index stores the label space of the export it was built from."""
    index, ls = indexed["index"], indexed["ls"]
    np.testing.assert_array_equal(index.label_unseen, ls.unseen)
    np.testing.assert_allclose(index.label_vectors, ls.vectors)
    assert export_lib.resolve_export_path(indexed["export"]) == indexed["export"]
