"""Tests for data_prep.shards: the atomic sharded writer, parts/resume and the split summary."""

import json
import os

import pytest
import tensorflow as tf

from data_prep import images, shards
from data_prep.common import DataPrepError, ImageRecord
from sdl_tf.data import tfrecord_schema as schema
from tests.helpers.data_prep_files import solid_jpeg, write_image_kinds


@pytest.fixture
def image_files(tmp_path):
    """One file of each kind the writer must handle."""
    return write_image_kinds(tmp_path / "img")


def _read_split(out_dir, split):
    ds = tf.data.TFRecordDataset(schema.list_shards(out_dir, split)).map(schema.parse_example)
    return {ex["image_id"].numpy().decode(): ex for ex in ds}


def test_write_split_round_trip_with_bad_files(tmp_path, image_files):
    out = str(tmp_path / "out")
    kinds = list(image_files)
    records = [ImageRecord(k, image_files[k], (i,), (i + 20,) if k == "rgb" else ())
               for i, k in enumerate(kinds)]
    summary = shards.write_split(records, out, "train", num_shards=3, source="unit test",
                                 num_workers=2, progress=False)
    got = _read_split(out, "train")
    good = {"rgb", "gray", "cmyk", "png"}
    assert set(got) == good
    for i, k in enumerate(kinds):
        if k in good:
            assert got[k]["positives"].numpy().tolist() == [i]
            img = tf.io.decode_jpeg(got[k]["image_bytes"])
            assert img.shape[-1] == 3
    assert got["rgb"]["negatives"].numpy().tolist() == [20]
    assert got["rgb"]["image_bytes"].numpy() == open(image_files["rgb"], "rb").read()
    assert summary["num_records"] == 10 and summary["num_examples"] == 4
    assert summary["num_skipped"] == 6 and summary["complete"]
    assert summary["skipped_by_reason"] == {"corrupt": 2, "empty": 1, "missing": 1,
                                            "not_an_image": 1, "truncated": 1}
    on_disk = json.load(open(schema.summary_path(out, "train")))
    assert on_disk["schema_version"] == schema.SCHEMA_VERSION
    assert on_disk["source"] == "unit test"
    assert {s["image_id"]: s["reason"] for s in on_disk["skipped"]}["text"] == "not_an_image"
    assert on_disk["image_actions"] == {"converted_cmyk": 1, "converted_grayscale": 1,
                                        "converted_png": 1, "passthrough": 1}
    # Only shards and summaries are visible; stats/temp files are hidden.
    assert sorted(f for f in os.listdir(out) if not f.startswith(".")) == [
        "train-00000-of-00003.tfrecord", "train-00001-of-00003.tfrecord",
        "train-00002-of-00003.tfrecord", "train-summary.json"]


def _records(tmp_path, n):
    d = tmp_path / "src"
    d.mkdir(exist_ok=True)
    return [ImageRecord(f"im{i:02d}", solid_jpeg(d / f"{i}.jpg", color=(i * 9, 0, 0)),
                               (i % 4,)) for i in range(n)]


def test_crash_leaves_no_half_written_shard_and_rerun_resumes(tmp_path, monkeypatch):
    records = _records(tmp_path, 8)
    out = str(tmp_path / "out")
    real = images.process_image
    calls = []

    def crashing(path, max_side=None):
        calls.append(path)
        if len(calls) == 6:  # shard 0 (records 0, 2, 4, 6) is done; shard 1 is in progress
            raise RuntimeError("simulated crash")
        return real(path, max_side)

    monkeypatch.setattr(images, "process_image", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        shards.write_split(records, out, "train", num_shards=2, source="t", num_workers=1,
                           progress=False)
    files = os.listdir(out)
    assert "train-00000-of-00002.tfrecord" in files
    assert "train-00001-of-00002.tfrecord" not in files
    assert not [f for f in files if ".tmp-" in f]
    with pytest.raises(ValueError, match="missing train-00001-of-00002"):
        schema.list_shards(out, "train")
    # A hard kill can leave a temp file: the rerun removes it.
    open(os.path.join(out, ".train-00001-of-00002.tfrecord.tmp-99999"), "wb").close()
    monkeypatch.setattr(images, "process_image", real)
    summary = shards.write_split(records, out, "train", num_shards=2, source="t", progress=False)
    assert summary["shards_resumed_this_run"] == 1 and summary["shards_written_this_run"] == 1
    assert summary["num_examples"] == 8 and summary["complete"]
    assert sorted(_read_split(out, "train")) == [r.image_id for r in records]
    assert not [f for f in os.listdir(out) if ".tmp-" in f]


def test_parts_union_equals_single_run(tmp_path):
    records = _records(tmp_path, 10)
    single, parts = str(tmp_path / "single"), str(tmp_path / "parts")
    shards.write_split(records, single, "train", num_shards=4, source="t", progress=False)
    s0 = shards.write_split(records, parts, "train", num_shards=4, source="t", num_parts=2,
                            part_index=0, progress=False)
    assert not s0["complete"] and s0["shards_complete"] == 2
    assert sorted(f for f in os.listdir(parts) if f.endswith(".tfrecord")) == [
        "train-00000-of-00004.tfrecord", "train-00002-of-00004.tfrecord"]
    s1 = shards.write_split(records, parts, "train", num_shards=4, source="t", num_parts=2,
                            part_index=1, progress=False)
    assert s1["complete"] and s1["num_examples"] == 10
    for name in os.listdir(single):
        if name.endswith(".tfrecord"):
            assert open(os.path.join(single, name), "rb").read() == open(
                os.path.join(parts, name), "rb").read()
    # Round robin: record j in shard j % 4.
    ids = [ex["image_id"].numpy() for ex in tf.data.TFRecordDataset(
        os.path.join(parts, "train-00001-of-00004.tfrecord")).map(schema.parse_example)]
    assert ids == [b"im01", b"im05", b"im09"]


def test_rerun_with_other_inputs_or_shard_count_refuses(tmp_path):
    records = _records(tmp_path, 4)
    out = str(tmp_path / "out")
    shards.write_split(records, out, "train", num_shards=2, source="t", progress=False)
    changed = [records[0].__class__(records[0].image_id, records[0].path, (3,))] + records[1:]
    with pytest.raises(DataPrepError, match="different records"):
        shards.write_split(changed, out, "train", num_shards=2, source="t", progress=False)
    with pytest.raises(DataPrepError, match="2\\]-shard set"):
        shards.write_split(records, out, "train", num_shards=3, source="t", progress=False)


def test_write_split_argument_errors(tmp_path):
    with pytest.raises(DataPrepError, match="part_index 2"):
        shards.write_split([], str(tmp_path), "train", num_shards=1, source="t", num_parts=2,
                           part_index=2)
    bad = [ImageRecord("x", "x.jpg", (1,), (1,))]
    with pytest.raises(DataPrepError, match="'x'.*both positive"):
        shards.write_split(bad, str(tmp_path), "train", num_shards=1, source="t")


def test_empty_shards_are_written_so_the_set_is_complete(tmp_path):
    out = str(tmp_path / "o")
    summary = shards.write_split(_records(tmp_path, 1), out, "test", num_shards=3, source="t",
                                 progress=False)
    assert summary["complete"] and len(schema.list_shards(out, "test")) == 3

