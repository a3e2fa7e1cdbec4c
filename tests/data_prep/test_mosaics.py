"""Tests for data_prep.mosaics: ImageNet-layout photos -> zero-shot 2x2 mosaic benchmark.

Each photo is colour-coded: the top half is its class's colour, the bottom half a grey level
that identifies the photo within its class, so every tile of a written mosaic can be traced
back to its class and photo.
"""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data_prep import mosaics
from data_prep.common import DataPrepError
from sdl_tf.labels.label_space import LabelSpace
from tests.helpers.paths import REPO_ROOT

# wnid -> names (classes.tsv order is not wnid order on purpose).
CLASSES = {
    "n00000005": "dog, domestic dog",
    "n00000001": "cat, house cat",
    "n00000007": "cat, tomcat",          # duplicate first name: the later wnid is renamed
    "n00000002": "zzqx, mouse",          # "zzqx" has no vector: falls back to "mouse"
    "n00000003": "Egyptian cat",         # multi-word name
    "n00000004": "fish",
    "n00000006": "bird",
    "n00000008": "horse",
    "n00000009": "frog",
    "n00000010": "duck",
    "n00000011": "goat",
    "n00000012": "cow",
    "n00000013": "qqqx, wwwx",           # no synonym has a vector: dropped
}
WORDS = ["dog", "domestic", "cat", "house", "tomcat", "mouse", "egyptian", "fish", "bird",
         "horse", "frog", "duck", "goat", "cow"]
LEVELS = (0, 128, 255)
COLOURS = [(r, g, b) for r in LEVELS for g in LEVELS for b in LEVELS
           if len({r, g, b}) > 1][:len(CLASSES)]
COLOURS[1] = (128, 128, 128)  # n00000002's colour: grey, so its greyscale photo stays exact
PHOTOS = 10
SIZE = 32  # mosaic side; tiles 16 px


def _photo_level(j):
    return 10 + 24 * j


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    (root / "classes.tsv").write_text("".join(f"{w}\t{n}\n" for w, n in CLASSES.items()))
    for ci, wnid in enumerate(sorted(CLASSES)):
        folder = root / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for j in range(PHOTOS):
            arr = np.zeros((8, 8, 3), np.uint8)
            arr[:4] = COLOURS[ci]
            arr[4:] = _photo_level(j)
            img = Image.fromarray(arr)
            if ci == 1 and j == 0:
                img = img.convert("L")  # a greyscale JPEG
            img.save(folder / f"{wnid}_{j}.JPEG", quality=95)
    (root / "train" / "n00000004" / "images" / "n00000004_broken.JPEG").write_bytes(b"\xff\xd8no")
    (root / "train" / "n00000004" / "n00000004_boxes.txt").write_text("ignored\n")
    rng = np.random.default_rng(0)
    vectors = root / "vectors.txt"
    vectors.write_text(f"{len(WORDS)} 6\n" + "".join(
        w + " " + " ".join(f"{v:.4f}" for v in rng.normal(size=6)) + "\n" for w in WORDS))
    return root


def _config(source, out, **kw):
    args = dict(imagenet_dir=str(source), output_dir=str(out), folds=2, num_unseen=3,
                num_train=40, num_test=30, mosaic_size=SIZE, seed=3,
                word_vectors=str(source / "vectors.txt"), progress=False)
    args.update(kw)
    return mosaics.MosaicsConfig(**args)


@pytest.fixture(scope="module")
def built(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    summary = mosaics.prepare(_config(source, out))
    return out, summary


def _decode_tiles(path):
    """[(class index, photo j)] of the 4 tiles of a mosaic, row-major."""
    arr = np.asarray(Image.open(path).convert("RGB"), np.float64)
    t = SIZE // 2
    out = []
    for pos in range(4):
        r, c = divmod(pos, 2)
        tile = arr[r * t:(r + 1) * t, c * t:(c + 1) * t]
        top = tile[2:t // 2 - 2, 2:-2].reshape(-1, 3).mean(0)
        bottom = tile[t // 2 + 2:-2, 2:-2].mean()
        ci = int(np.argmin([np.linalg.norm(top - np.array(col)) for col in COLOURS]))
        assert np.linalg.norm(top - np.array(COLOURS[ci])) < 20, (path, pos, top)
        j = int(round((bottom - 10) / 24))
        assert abs(bottom - _photo_level(j)) < 6, (path, pos, bottom)
        out.append((ci, j))
    return out


def _rows(path):
    with open(path, newline="") as f:
        return [(r["image"], r["labels"].split("|")) for r in csv.DictReader(f)]


def test_names_fallbacks_and_drops(built):
    _, summary = built
    names = {c["wnid"]: c["name"] for c in summary["classes"]}
    assert names["n00000001"] == "cat" and names["n00000007"] == "tomcat"
    assert names["n00000002"] == "mouse" and names["n00000003"] == "Egyptian cat"
    assert "n00000013" not in names
    assert [d["wnid"] for d in summary["dropped_classes"]] == ["n00000013"]
    reasons = {n["wnid"]: n["reason"] for n in summary["name_changes"]}
    assert "no word vector" in reasons["n00000002"] and "renamed" in reasons["n00000007"]
    assert summary["num_classes"] == 12 and summary["num_unseen_per_fold"] == 3
    assert [s["reason"] for s in summary["skipped_photos"]] == ["not_an_image"]
    assert summary["skipped_photos"][0]["path"].endswith("n00000004_broken.JPEG")
    assert summary["photo_modes"] == {"L": 1, "RGB": 12 * PHOTOS - 1}


def test_labels_match_tiles_and_zero_shot_protocol(built):
    out, summary = built
    wnids = sorted(CLASSES)
    name_of = {c["wnid"]: c["name"] for c in summary["classes"]}
    photos = {"train": set(), "test": set()}
    test_rows = None
    for k in range(2):
        fold = out / f"fold{k}"
        unseen = set((fold / "unseen.txt").read_text().split("\n")) - {""}
        assert len(unseen) == 3
        for split in ("train", "test"):
            rows = _rows(fold / f"{split}.csv")
            assert len(rows) == (40 if split == "train" else 30)
            for image, labels in rows:
                tiles = _decode_tiles(out / image)
                classes = {name_of[wnids[ci]] for ci, _ in tiles}
                assert classes == set(labels), image
                assert 1 <= len(labels) <= 4
                photos[split].update((ci, j) for ci, j in tiles)
                if split == "train":
                    assert image.startswith(f"images/fold{k}/train/")
                    assert not set(labels) & unseen, image
        if test_rows is None:
            test_rows = _rows(fold / "test.csv")
        else:  # the test mosaics are shared by the folds
            assert _rows(fold / "test.csv") == test_rows
        space = LabelSpace.load(str(fold / "data"))
        assert set(space.names) == set(name_of.values())
        assert set(space.unseen_names) == unseen
    # No photo is used in both a train and a test mosaic.
    assert photos["train"] and photos["test"]
    assert not photos["train"] & photos["test"]
    # The fold's unseen sets are disjoint (3 x 2 <= 12 classes).
    assert not set(summary["folds"][0]["unseen"]) & set(summary["folds"][1]["unseen"])


def test_deterministic_under_seed(built, source, tmp_path):
    out, _ = built
    again = tmp_path / "again"
    mosaics.prepare(_config(source, again, manifests_only=True))
    for rel in ("fold0/train.csv", "fold1/test.csv", "fold1/unseen.txt"):
        assert (again / rel).read_bytes() == (out / rel).read_bytes(), rel
    for image, _ in _rows(again / "fold1" / "train.csv")[:10] + _rows(again / "fold0/test.csv"):
        assert (again / image).read_bytes() == (out / image).read_bytes(), image
    other = tmp_path / "other"
    mosaics.prepare(_config(source, other, manifests_only=True, seed=4))
    assert (other / "fold0/train.csv").read_bytes() != (out / "fold0/train.csv").read_bytes()
    summary = json.loads((again / mosaics.SUMMARY_FILE).read_text())
    assert summary["folds"][0]["data_dir"] is None and summary["config"]["seed"] == 3


def test_errors_name_the_path(source, tmp_path):
    with pytest.raises(DataPrepError, match=r"nowhere/train: not a directory"):
        mosaics.prepare(_config(tmp_path / "nowhere", tmp_path / "o"))
    (tmp_path / "src" / "train" / "n1" / "images").mkdir(parents=True)
    with pytest.raises(DataPrepError, match=r"no class-name file; expected .*classes.tsv"):
        mosaics.prepare(_config(tmp_path / "src", tmp_path / "o"))
    (tmp_path / "src" / "classes.tsv").write_text("n1\tdog\nn2\tcat\n")
    with pytest.raises(DataPrepError, match=r"train/n2: class n2 .*has no folder"):
        mosaics.prepare(_config(tmp_path / "src", tmp_path / "o"))
    (tmp_path / "src" / "train" / "n2").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "src" / "train" / "n1" / "images" / "a.JPEG")
    Image.new("RGB", (4, 4)).save(tmp_path / "src" / "train" / "n2" / "a.JPEG")
    with pytest.raises(DataPrepError, match=r"train/n1: class n1 has 1 photos; need at least 2"):
        mosaics.prepare(_config(tmp_path / "src", tmp_path / "o", num_unseen=1,
                                word_vectors=str(source / "vectors.txt")))
    (tmp_path / "src" / "classes.tsv").write_text("n1\tdog\nn2 cat\n")
    with pytest.raises(DataPrepError, match=r"classes.tsv:2: expected 'wnid<TAB>name1"):
        mosaics.prepare(_config(tmp_path / "src", tmp_path / "o"))
    with pytest.raises(DataPrepError, match="need at least 1 unseen and 1 seen"):
        mosaics.prepare(_config(source, tmp_path / "o", num_unseen=12, manifests_only=True))
    with pytest.raises(DataPrepError, match="vectors.txt' not found"):
        mosaics.prepare(_config(source, tmp_path / "o", word_vectors=str(tmp_path / "vectors.txt")))
    with pytest.raises(DataPrepError, match="mosaic_size=33: must be even"):
        mosaics.prepare(_config(source, tmp_path / "o", mosaic_size=33))


def test_cli_one_line_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "data_prep.mosaics", f"--imagenet_dir={tmp_path / 'none'}",
         f"--output_dir={tmp_path / 'o'}", "--manifests_only"],
        capture_output=True, text=True, timeout=120,
        cwd=REPO_ROOT)
    assert proc.returncode == 1
    assert (f"data_prep.mosaics: error: {tmp_path / 'none' / 'train'}: not a directory"
            in proc.stderr)


def test_num_unseen_count_or_fraction_and_photo_cap(source, tmp_path):
    assert mosaics._resolve_num_unseen(0.2, 200) == 40
    assert mosaics._resolve_num_unseen(40, 200) == 40
    with pytest.raises(DataPrepError, match="count or a fraction"):
        mosaics._resolve_num_unseen(2.5, 200)
    summary = mosaics.prepare(_config(source, tmp_path / "o", num_unseen=0.25, folds=1,
                                      max_images_per_class=5, manifests_only=True))
    assert summary["num_unseen_per_fold"] == 3
    assert all(c["train_photos"] + c["test_photos"] <= 5 for c in summary["classes"])


def test_supervised_all_classes_set(source, tmp_path):
    from sdl_tf.labels.label_space import LabelSpace

    summary = mosaics.prepare(_config(source, tmp_path / "o", folds=1, supervised=True))
    names = [f["fold"] for f in summary["folds"]]
    assert names == [0, "all"]
    fold0, every = (LabelSpace.load(str(tmp_path / "o" / d / "data")) for d in ("fold0", "all"))
    assert fold0.names == every.names and not every.unseen.any() and fold0.unseen.sum() == 3
    train = _rows(str(tmp_path / "o" / "all" / "train.csv"))
    assert {n for _, labels in train for n in labels} == set(every.names)  # unseen ones too
    assert _rows(str(tmp_path / "o" / "all" / "test.csv")) == _rows(
        str(tmp_path / "o" / "fold0" / "test.csv"))
