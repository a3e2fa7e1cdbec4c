"""Tests for data_prep.manifest: CSV/JSONL manifests -> shards + label space."""

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf
from PIL import Image

from data_prep import manifest
from data_prep.common import DataPrepError
from sdl_tf.data import tfrecord_schema as schema
from sdl_tf.labels.label_space import LabelSpace
from tests.helpers.paths import REPO_ROOT

VECTORS = {"dog": [1, 0, 0, 0], "cat": [0, 1, 0, 0], "traffic": [0, 0, 1, 0],
           "light": [0, 0, 0, 1], "car": [1, 1, 0, 0], "frisbee": [0, 1, 1, 0]}


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "root"
    (root / "photos").mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (16, 12), (i * 50, 0, 0)).save(root / "photos" / f"{i}.jpg", "JPEG")
    Image.new("L", (10, 10), 99).save(root / "photos" / "gray.png")
    (root / "photos" / "broken.jpg").write_bytes(b"")
    (tmp_path / "train.csv").write_text(
        "image,labels,negatives\n"
        "photos/0.jpg,dog|frisbee,cat\n"
        'photos/1.jpg,"traffic light;car",\n'
        "photos/broken.jpg,dog,\n")
    (tmp_path / "test.jsonl").write_text(
        '{"image": "photos/2.jpg", "labels": ["cat", "dog"]}\n\n'
        '{"image": "photos/gray.png", "labels": "traffic light|car"}\n'
        '{"image": "photos/3.jpg", "labels": []}\n')
    (tmp_path / "unseen.txt").write_text("# zero-shot labels\ncat\ntraffic light\n")
    vec = tmp_path / "vec.txt"
    vec.write_text(f"{len(VECTORS)} 4\n" + "".join(
        f"{k} {' '.join(map(str, v))}\n" for k, v in VECTORS.items()))
    return tmp_path


def _config(d, **kw):
    args = dict(output_dir=str(d / "out"), splits=(("train", str(d / "train.csv")),
                                                   ("test", str(d / "test.jsonl"))),
                image_root=str(d / "root"), unseen_labels=str(d / "unseen.txt"),
                word_vectors=str(d / "vec.txt"), progress=False)
    args.update(kw)
    return manifest.ManifestConfig(**args)


def _read(out, split):
    ds = tf.data.TFRecordDataset(schema.list_shards(out, split)).map(schema.parse_example)
    return {ex["image_id"].numpy().decode(): (sorted(ex["positives"].numpy().tolist()),
                                              sorted(ex["negatives"].numpy().tolist()))
            for ex in ds}


def test_round_trip_labels_and_label_space(data):
    summaries = manifest.prepare(_config(data))
    out = str(data / "out")
    space = LabelSpace.load(out)
    assert space.names == ("car", "cat", "dog", "frisbee", "traffic light")
    assert space.unseen_names == ("cat", "traffic light")
    idx = space.name_to_index()
    train = _read(out, "train")
    assert train == {
        "photos/0.jpg": ([idx["dog"], idx["frisbee"]], [idx["cat"]]),
        "photos/1.jpg": (sorted([idx["traffic light"], idx["car"]]), []),
    }
    test = _read(out, "test")
    assert test["photos/2.jpg"] == (sorted([idx["cat"], idx["dog"]]), [])
    assert test["photos/gray.png"] == (sorted([idx["traffic light"], idx["car"]]), [])
    assert test["photos/3.jpg"] == ([], [])
    assert summaries["train"]["skipped_by_reason"] == {"empty": 1}
    assert summaries["test"]["image_actions"] == {"converted_png": 1, "passthrough": 2}
    details = json.load(open(schema.summary_path(out, "train")))["details"]
    assert details["images_with_unseen_positives"] == 1  # photos/1.jpg has "traffic light"
    assert details["dropped_labels"] == []


def test_every_manifest_image_is_accounted_for(data):
    # A listed image without a file is skipped and listed with the others, never dropped.
    with open(data / "test.jsonl", "a", encoding="utf-8") as f:
        f.write('{"image": "photos/gone.jpg", "labels": ["dog"]}\n')
    summaries = manifest.prepare(_config(data))
    for split, listed in (("train", 3), ("test", 4)):
        summary = summaries[split]
        assert summary["details"]["images_in_manifest"] == listed
        assert summary["num_examples"] + summary["num_skipped"] == listed
    assert summaries["test"]["skipped_by_reason"] == {"missing": 1}
    assert summaries["test"]["skipped"][0]["image_id"] == "photos/gone.jpg"


def test_drop_missing_labels(data):
    (data / "test.jsonl").write_text('{"image": "photos/2.jpg", "labels": ["cat", "zebra"]}\n')
    with pytest.raises(DataPrepError, match="'zebra'"):
        manifest.prepare(_config(data))
    manifest.prepare(_config(data, drop_missing_labels=True))
    out = str(data / "out")
    space = LabelSpace.load(out)
    assert "zebra" not in space.names
    assert _read(out, "test")["photos/2.jpg"] == ([space.index("cat")], [])
    details = json.load(open(schema.summary_path(out, "test")))["details"]
    assert details["dropped_labels"] == ["zebra"]


@pytest.mark.parametrize("name,text,message", [
    ("m.csv", "img,labels\na.jpg,dog\n", "m.csv:1: missing column 'image'"),
    ("m.csv", "image,labels\na.jpg,dog\n,cat\n", "m.csv:3: field 'image' is empty"),
    ("m.csv", "image,labels\na.jpg,dog\nb.jpg,cat,extra\n", "m.csv:3: more fields"),
    ("m.csv", "image,labels\na.jpg,dog\na.jpg,cat\n", "m.csv:3: image 'a.jpg' already listed "
                                                      "at .*m.csv:2"),
    ("m.csv", "image,labels,negatives\na.jpg,dog,dog\n", "m.csv:2: labels \\['dog'\\] are both"),
    ("m.jsonl", '{"image": "a.jpg", "labels": ["dog"]}\n{"image": "b.jpg", "labels": [\n',
     "m.jsonl:2: invalid JSON"),
    ("m.jsonl", '{"image": "a.jpg"}\n', "m.jsonl:1: missing field 'labels'"),
    ("m.jsonl", '{"image": "a.jpg", "labels": [1]}\n', "m.jsonl:1: field 'labels' must be"),
    ("m.txt", "a.jpg dog\n", "unknown manifest type"),
])
def test_malformed_manifests_name_file_and_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(DataPrepError, match=message):
        manifest.read_manifest(str(tmp_path / name))


def test_unseen_list_errors(tmp_path):
    (tmp_path / "u.txt").write_text("cat\ndog\ncat\n")
    with pytest.raises(DataPrepError, match="u.txt:3: label 'cat' repeated"):
        manifest.read_label_list(str(tmp_path / "u.txt"))


def test_split_flag_parsing():
    assert manifest._parse_split_flags(["train=a.csv", "val=b=c.jsonl"]) == (
        ("train", "a.csv"), ("val", "b=c.jsonl"))
    with pytest.raises(DataPrepError, match="NAME=MANIFEST"):
        manifest._parse_split_flags(["train.csv"])


def test_command_line_with_flagfile(data):
    flagfile = data / "flags.cfg"
    flagfile.write_text("\n".join([
        f"--output_dir={data / 'cli'}", f"--image_root={data / 'root'}",
        f"--split=train={data / 'train.csv'}", f"--split=test={data / 'test.jsonl'}",
        f"--unseen_labels={data / 'unseen.txt'}", f"--word_vectors={data / 'vec.txt'}",
        "--num_shards=2", "--noprogress"]) + "\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    cwd = REPO_ROOT
    res = subprocess.run([sys.executable, "-m", "data_prep.manifest", f"--flagfile={flagfile}"],
                         cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(schema.list_shards(str(data / "cli"), "train")) == 2
    summary = json.load(open(schema.summary_path(str(data / "cli"), "test")))
    assert summary["num_examples"] == 3 and summary["complete"]


def test_missing_manifest_is_named(data):
    cfg = _config(data, splits=(("train", str(data / "missing.csv")),))
    with pytest.raises(DataPrepError, match="missing.csv' not found"):
        manifest.prepare(cfg)
