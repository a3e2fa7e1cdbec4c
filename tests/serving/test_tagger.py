"""predict: open-vocabulary tagging from an export or a model dir, extra labels, report files."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sdl_tf.serving import export_lib
from sdl_tf.serving import tagger as tagger_lib
from tests.helpers.paths import REPO_ROOT
from tests.helpers.serving_models import (
    ATOL,
    NAMES,
    UNSEEN,
    D,
    keras_reference,
    make_images,
    numpy_scores_eq1,
    write_model_dir,
    write_word2vec,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    model_dir = str(root / "run")
    model, ls = write_model_dir(model_dir)
    export = export_lib.export_saved_model(model, ls, str(root / "saved"), "sdl", 1, top_k=3)
    images = root / "images"
    images.mkdir()
    data = make_images(3, seed=21) + make_images(1, seed=22, fmt="PNG")
    for i, d in enumerate(data):
        (images / f"im{i}.{'png' if i == 3 else 'jpg'}").write_bytes(d)
    (images / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    (images / "notes.txt").write_text("not an image, ignored by extension")
    return {"root": root, "model_dir": model_dir, "export": export, "model": model, "ls": ls,
            "images": str(images), "data": data}


def _reference(setup, vectors):
    ref, _ = keras_reference(setup["model"], setup["data"])
    rows = np.einsum("nmd,cd->nmc", ref, vectors).argmax(axis=1)
    return numpy_scores_eq1(ref, vectors), rows


def test_predict_from_export_with_extra_label_file(setup, tmp_path):
    rng = np.random.default_rng(7)
    extra = {"zebra": rng.normal(size=D), "hot air balloon": rng.normal(size=D),
             "red": rng.normal(size=D)}  # "red" is already a label: ignored
    vec_file = tmp_path / "extra.txt"
    vec_file.write_text("".join(f"{k}\t{' '.join(map(str, v))}\n" for k, v in extra.items()))
    out_dir = tmp_path / "out"
    config = tagger_lib.PredictConfig(model=os.path.dirname(setup["export"]),
                                   images=setup["images"], extra_labels=str(vec_file),
                                   top_k=7, output_dir=str(out_dir))
    import io
    printed = io.StringIO()
    results = tagger_lib.run_predict(config, out=printed)

    assert [r.image_id for r in results] == ["broken", "im0", "im1", "im2", "im3"]
    assert results[0].error and not results[0].tags
    assert "not a complete JPEG or PNG" in results[0].error
    names = list(NAMES) + ["zebra", "hot air balloon"]
    unit = np.stack([extra["zebra"], extra["hot air balloon"]])
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    vectors = np.concatenate([setup["ls"].vectors, unit]).astype(np.float32)
    scores, rows = _reference(setup, vectors)
    for i, r in enumerate(results[1:]):
        assert len(r.tags) == 7  # C = 5 + 2 extra
        order = np.argsort(-scores[i])
        assert [t.name for t in r.tags] == [names[c] for c in order]
        np.testing.assert_allclose([t.score for t in r.tags], scores[i][order], atol=ATOL)
        assert [t.row for t in r.tags] == rows[i][order].tolist()
        for t in r.tags:
            assert t.extra == (t.name in ("zebra", "hot air balloon"))
            assert t.unseen == (t.extra or UNSEEN[NAMES.index(t.name)])
    text = printed.getvalue()
    assert "broken: ERROR" in text and "zebra+" in text
    assert any(f"{n}*" in text for n in ("blue", "square"))
    grid = Image.open(out_dir / "grid.png")
    assert grid.format == "PNG" and grid.width >= 4 * 192
    html = (out_dir / "tags.html").read_text()
    assert html.count("<img src='data:image/png;base64,") == 5 and "zebra" in html
    assert (out_dir / "tags.json").stat().st_size > 0
    assert not [f for f in os.listdir(out_dir) if f.startswith(".")]  # no temp files left


def test_predict_model_dir_equals_export_and_word_vectors(setup, tmp_path):
    table = write_word2vec(tmp_path / "w2v.txt", ["red", "car", "kite"])
    common = {"images": setup["images"], "extra_labels": "red car,kite",
              "word_vectors": str(tmp_path / "w2v.txt"), "top_k": 3}
    devnull = open(os.devnull, "w")
    from_dir = tagger_lib.run_predict(tagger_lib.PredictConfig(model=setup["model_dir"], **common),
                                   out=devnull)
    from_export = tagger_lib.run_predict(tagger_lib.PredictConfig(model=setup["export"], **common),
                                      out=devnull)
    for a, b in zip(from_dir, from_export, strict=True):
        assert (a.image_id, a.error) == (b.image_id, b.error)
        assert [t.name for t in a.tags] == [t.name for t in b.tags]
        np.testing.assert_allclose([t.score for t in a.tags], [t.score for t in b.tags],
                                   atol=ATOL)
    # A multi-word extra label is the normalised mean of its words' unit vectors.
    unit = {k: v / np.linalg.norm(v) for k, v in table.items()}
    red_car = unit["red"] + unit["car"]
    vocab = tagger_lib.build_vocabulary(setup["ls"], "red car,kite", str(tmp_path / "w2v.txt"))
    assert vocab.names[-2:] == ("red car", "kite") and vocab.extra[-2:].all()
    np.testing.assert_allclose(vocab.vectors[-2], red_car / np.linalg.norm(red_car), atol=1e-5)


def test_predict_errors(setup, tmp_path):
    with pytest.raises(tagger_lib.PredictError, match="--word_vectors"):
        tagger_lib.build_vocabulary(setup["ls"], "zebra")
    write_word2vec(tmp_path / "w2v.txt", ["red"])
    with pytest.raises(tagger_lib.PredictError, match="'zebra'"):
        tagger_lib.build_vocabulary(setup["ls"], "zebra", str(tmp_path / "w2v.txt"))
    with pytest.raises(tagger_lib.PredictError, match="does not exist"):
        tagger_lib.list_images(str(tmp_path / "nope"))
    with pytest.raises(tagger_lib.PredictError, match="no .jpg"):
        tagger_lib.list_images(str(tmp_path))
    with pytest.raises(tagger_lib.PredictError, match="neither"):
        tagger_lib.Tagger(str(tmp_path / "w2v.txt"))


def test_corrupt_but_well_framed_png_is_isolated(setup):
    """A PNG whose frame passes the structural check but whose data the decoder rejects fails
    alone: the batch is retried image by image."""
    png = make_images(1, seed=23, fmt="PNG")[0]
    broken = png[:40] + b"\0" * 60 + png[100:]
    tagger = tagger_lib.Tagger(setup["export"])
    good = setup["data"][:2]
    matrices, errors = tagger.matrices([good[0], broken, good[1]])
    assert errors[0] == errors[2] == "" and errors[1].startswith("corrupt image data: ")
    ref, _ = keras_reference(setup["model"], good)
    np.testing.assert_allclose(matrices[[0, 2]], ref, atol=ATOL)
    assert np.all(matrices[1] == 0)


def test_predict_cli(setup, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    res = subprocess.run(
        [sys.executable, "-m", "sdl_tf.predict", f"--model={setup['export']}",
         f"--images={setup['images']}/im0.jpg,{setup['images']}/im3.png", "--top_k=2",
         f"--output_dir={tmp_path}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    assert lines[0].startswith("im0: ") and lines[1].startswith("im3: ")
    assert lines[0].count("(row ") == 2
    assert (tmp_path / "grid.png").is_file() and (tmp_path / "tags.html").is_file()
