"""COCO 48/17 converter: split rule, end-to-end shards, id lists, malformed files, CLI."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from data_prep import coco
from data_prep.common import CommonOptions, DataPrepError
from sdl_tf.data import tfrecord_schema
from sdl_tf.labels.label_space import LabelSpace
from tests.helpers import data_prep_files as fixtures
from tests.helpers.paths import REPO_ROOT


def _labels(names, indices):
    return sorted(names[i] for i in indices)


def test_label_set_is_the_standard_48_17_split():
    names, unseen = coco.label_names()
    assert len(names) == 65 == len(set(names))
    assert sum(unseen) == 17
    assert set(coco.COCO_SEEN) | set(coco.COCO_UNSEEN) == set(names)
    assert {n for n, u in zip(names, unseen, strict=True) if u} == set(coco.COCO_UNSEEN)
    # The 15 excluded COCO classes are exactly the rest of the 80.
    assert len(set(fixtures.COCO_80) - set(names)) == 15


@pytest.fixture
def coco_files(tmp_path):
    paths = fixtures.write_coco(str(tmp_path / "coco"))
    words = list(coco.label_names()[0])
    paths["word_vectors"] = fixtures.write_word2vec(str(tmp_path / "w2v.txt"), words)
    return paths


def _config(paths, out, **kwargs):
    options = CommonOptions(output_dir=str(out), word_vectors=paths["word_vectors"],
                            num_shards=2, num_workers=2, progress=False)
    return coco.CocoConfig(
        train_annotations=paths["train_annotations"], val_annotations=paths["val_annotations"],
        train_images=paths["train_images"], val_images=paths["val_images"], options=options,
        **kwargs)


def test_split_rule(coco_files):
    converted = coco.read_coco(_config(coco_files, "unused"))
    names = converted.names
    train = {r.image_id: _labels(names, r.positives) for r in converted.splits["train"]}
    test = {r.image_id: _labels(names, r.positives) for r in converted.splits["test"]}
    # Image 2 (person + cat) goes nowhere in train; 5 keeps only its seen class.
    assert train == {"1": ["bicycle", "person"], "5": ["tv"], "6": ["zebra"], "7": ["bench"]}
    # Val image 12 with only seen objects is not in test; test labels span all 65 classes.
    assert test == {"11": ["dog", "person"], "13": ["cake"], "14": ["scissors"], "15": ["cat"]}
    counts = converted.counts
    assert counts["train"]["excluded_has_unseen_object"] == 2  # images 2 and 4
    assert counts["train"]["excluded_no_seen_object"] == 2  # images 3 and 8
    assert counts["test"]["excluded_no_unseen_object"] == 1  # image 12

    strict = coco.read_coco(_config(coco_files, "unused", test_requires_seen=True))
    # Only image 11 holds a seen object (person) besides its unseen one (dog).
    assert [r.image_id for r in strict.splits["test"]] == ["11"]
    assert strict.counts["test"]["excluded_no_seen_object"] == 3


def test_prepare_writes_shards_read_back_with_right_labels(coco_files, tmp_path):
    out = tmp_path / "out"
    result = coco.prepare(_config(coco_files, out))
    space = LabelSpace.load(str(out))
    assert space.num_labels == 65 and int(space.unseen.sum()) == 17
    assert sorted(space.unseen_names) == sorted(coco.COCO_UNSEEN)
    train = fixtures.read_split(str(out), "train")
    test = fixtures.read_split(str(out), "test")
    assert {k: _labels(space.names, v["positives"]) for k, v in train.items()} == {
        "1": ["bicycle", "person"], "5": ["tv"], "6": ["zebra"]}
    assert {k: _labels(space.names, v["positives"]) for k, v in test.items()} == {
        "11": ["dog", "person"], "13": ["cake"], "14": ["scissors"]}
    # PNG (5) and grayscale (6) became 3-channel JPEGs.
    assert train["5"]["image"].shape == (8, 8, 3) and train["6"]["image"].shape == (8, 8, 3)
    assert all(not v["negatives"] for v in {**train, **test}.values())
    # The truncated image (7) and the missing one (15) are skipped and listed with a reason.
    assert result["train"]["skipped_by_reason"] == {"truncated": 1}
    assert result["test"]["skipped_by_reason"] == {"missing": 1}
    with open(tfrecord_schema.summary_path(str(out), "train"), encoding="utf-8") as f:
        summary = json.load(f)
    assert summary["num_examples"] == 3 and summary["skipped"][0]["image_id"] == "7"
    assert summary["details"]["excluded_has_unseen_object"] == 2
    # A rerun finds every shard complete and rewrites none.
    again = coco.prepare(_config(coco_files, out))
    assert again["train"]["shards_written_this_run"] == 0
    assert again["train"]["shards_resumed_this_run"] == 2


def _accounted(summary):
    """Written + skipped by the writer + every named exclusion of the selection."""
    details = summary["details"]
    excluded = sum(v for k, v in details.items() if k.startswith("excluded_"))
    return (summary["num_examples"] + summary["num_skipped"] + excluded
            + details.get("not_in_id_list", 0))


@pytest.mark.parametrize("with_id_lists", [False, True])
def test_every_annotated_image_is_accounted_for(coco_files, tmp_path, with_id_lists):
    kwargs = {}
    if with_id_lists:
        (tmp_path / "train_ids.txt").write_text("1\n2\n3\n7\n")
        (tmp_path / "test_ids.txt").write_text("12\n15\n")
        kwargs = dict(train_image_ids=str(tmp_path / "train_ids.txt"),
                      test_image_ids=str(tmp_path / "test_ids.txt"))
    result = coco.prepare(_config(coco_files, tmp_path / "out", **kwargs))
    for split, pool in (("train", fixtures.COCO_TRAIN), ("test", fixtures.COCO_VAL)):
        summary = result[split]
        assert summary["details"]["images_in_annotations"] == len(pool)
        assert _accounted(summary) == len(pool), (split, summary["details"])
        assert summary["details"]["selected"] == summary["num_records"]
    if with_id_lists:
        # Image 3 (a dropped class only) is listed but has no train label: excluded, counted.
        assert result["train"]["details"]["excluded_no_seen_object"] == 1
        assert result["train"]["num_examples"] == 2 and result["train"]["num_skipped"] == 1


def test_dropped_labels_are_remapped(coco_files, tmp_path):
    words = [n for n in coco.label_names()[0] if n != "scissors"]
    coco_files["word_vectors"] = fixtures.write_word2vec(str(tmp_path / "few.txt"), words)
    with pytest.raises(DataPrepError, match="scissors"):
        coco.prepare(_config(coco_files, tmp_path / "strict"))
    out = tmp_path / "dropped"
    config = _config(coco_files, out)
    config = dataclasses.replace(
        config, options=dataclasses.replace(config.options, drop_missing_labels=True))
    result = coco.prepare(config)
    space = LabelSpace.load(str(out))
    assert space.num_labels == 64 and "scissors" not in space.names
    assert result["labels"]["dropped"] == ["scissors"]
    test = fixtures.read_split(str(out), "test")
    # Image 14 (scissors only) has nothing left; the others keep their labels by name.
    assert {k: _labels(space.names, v["positives"]) for k, v in test.items()} == {
        "11": ["dog", "person"], "13": ["cake"]}
    assert result["test"]["details"]["excluded_only_dropped_labels"] == 1


def test_image_id_lists_fix_the_split_exactly(coco_files, tmp_path):
    ids = tmp_path / "train_ids.txt"
    # An id, a file name, a comment; image 2 (person + cat) is forced in by the list.
    ids.write_text("# published split\n1\nCOCO_train2014_000000000002.jpg\n\n")
    converted = coco.read_coco(_config(coco_files, "unused", train_image_ids=str(ids)))
    names = converted.names
    train = {r.image_id: _labels(names, r.positives) for r in converted.splits["train"]}
    # Training labels stay seen-only even for a listed image with an unseen object.
    assert train == {"1": ["bicycle", "person"], "2": ["person"]}
    assert converted.counts["train"]["listed_with_unseen_object"] == 1
    assert converted.counts["train"]["not_in_id_list"] == 6

    ids.write_text("1\n999\n")
    with pytest.raises(DataPrepError, match=r"train_ids\.txt:2: image '999'"):
        coco.read_coco(_config(coco_files, "unused", train_image_ids=str(ids)))


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_malformed_annotation_files_name_file_and_field(tmp_path):
    bad_json = _write(tmp_path / "bad.json", '{"images": [],\n "annotations": [,]}')
    with pytest.raises(DataPrepError, match=r"bad\.json:2:\d+: invalid JSON"):
        coco.read_annotations(bad_json)

    no_cats = _write(tmp_path / "nocats.json", '{"images": [], "annotations": []}')
    with pytest.raises(DataPrepError, match=r"nocats\.json: missing top-level field 'categories'"):
        coco.read_annotations(no_cats)

    data = fixtures.coco_json({1: ("a.jpg", ["person"])})
    data["annotations"].append({"id": 9, "image_id": 1, "category_id": 12345})
    unknown_cat = _write(tmp_path / "cat.json", json.dumps(data))
    with pytest.raises(DataPrepError, match=r"cat\.json: annotations\[1\]\.category_id=12345"):
        coco.read_annotations(unknown_cat)

    data = fixtures.coco_json({1: ("a.jpg", ["person"])})
    data["annotations"][0]["image_id"] = 77
    unknown_img = _write(tmp_path / "img.json", json.dumps(data))
    with pytest.raises(DataPrepError, match=r"img\.json: annotations\[0\]\.image_id=77"):
        coco.read_annotations(unknown_img)

    data = fixtures.coco_json({1: ("a.jpg", ["person"])})
    del data["images"][0]["file_name"]
    no_name = _write(tmp_path / "noname.json", json.dumps(data))
    with pytest.raises(DataPrepError, match=r"noname\.json: images\[0\] has no field 'file_name'"):
        coco.read_annotations(no_name)

    data = fixtures.coco_json({1: ("a.jpg", ["person"]), 2: ("b.jpg", ["dog"])})
    data["images"][1]["id"] = 1
    twice = _write(tmp_path / "twice.json", json.dumps(data))
    with pytest.raises(DataPrepError, match=r"twice\.json: images\[1\]\.id=1 repeats "
                                            r"images\[0\]"):
        coco.read_annotations(twice)

    data = fixtures.coco_json({1: ("a.jpg", ["person"])})
    data["categories"] = [c for c in data["categories"] if c["name"] != "scissors"]
    few = _write(tmp_path / "few.json", json.dumps(data))
    with pytest.raises(DataPrepError, match=r"few\.json: 'categories' lacks 1 .*scissors"):
        coco.read_annotations(few)


def test_pascal_style_names_are_accepted(tmp_path):
    data = fixtures.coco_json({1: ("a.jpg", ["tv", "couch"])})
    for c in data["categories"]:
        c["name"] = {"tv": "tvmonitor", "couch": "sofa"}.get(c["name"], c["name"])
    path = _write(tmp_path / "pascal.json", json.dumps(data))
    _, present = coco.read_annotations(path)
    assert present[1] == {"tv", "couch"}


def test_command_line_with_flagfile(coco_files, tmp_path):
    out = tmp_path / "cli"
    flagfile = tmp_path / "coco.flags"
    flagfile.write_text("\n".join([
        f"--train_annotations={coco_files['train_annotations']}",
        f"--val_annotations={coco_files['val_annotations']}",
        f"--train_images={coco_files['train_images']}",
        f"--val_images={coco_files['val_images']}",
        f"--word_vectors={coco_files['word_vectors']}",
        f"--output_dir={out}", "--num_shards=1", "--noprogress",
    ]) + "\n")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", "data_prep.coco", f"--flagfile={flagfile}"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "labels: 65 (48 seen, 17 unseen" in proc.stdout
    assert len(fixtures.read_split(str(out), "train")) == 3
    assert len(fixtures.read_split(str(out), "test")) == 3

    # A malformed file stops with a one-line error naming it, and exit status 1.
    bad = _write(tmp_path / "broken.json", "{")
    proc = subprocess.run(
        [sys.executable, "-m", "data_prep.coco", f"--flagfile={flagfile}",
         f"--val_annotations={bad}", f"--output_dir={tmp_path / 'cli2'}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "broken.json:1:2: invalid JSON" in proc.stderr
    error_lines = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(error_lines) == 1 and error_lines[0].startswith("data_prep.coco: error: "), (
        proc.stderr[-2000:])
