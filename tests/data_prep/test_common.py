"""Tests for data_prep.common: image handling, the atomic sharded writer, parts/resume,
the label space builder and the common flags."""

import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from data_prep import common
from sdl_tf.data import tfrecord_schema as schema
from sdl_tf.labels.label_space import LabelSpace


def _jpeg(path, size=(20, 12), mode="RGB", color=(200, 30, 30)):
    Image.new(mode, size, color).save(path, "JPEG", quality=90)
    return str(path)


@pytest.fixture
def images(tmp_path):
    """One file of each kind the writer must handle."""
    d = tmp_path / "img"
    d.mkdir()
    p = {}
    p["rgb"] = _jpeg(d / "rgb.jpg")
    p["gray"] = _jpeg(d / "gray.jpg", mode="L", color=128)
    p["cmyk"] = _jpeg(d / "cmyk.jpg", mode="CMYK", color=(0, 255, 255, 0))
    Image.new("RGBA", (8, 6), (0, 0, 255, 0)).save(d / "alpha.png")  # transparent -> white
    p["png"] = str(d / "alpha.png")
    (d / "empty.jpg").write_bytes(b"")
    p["empty"] = str(d / "empty.jpg")
    big = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        big, "JPEG")
    (d / "truncated.jpg").write_bytes(big.getvalue()[: len(big.getvalue()) // 2])
    p["truncated"] = str(d / "truncated.jpg")
    (d / "notes.jpg").write_text("this is not an image\n")
    p["text"] = str(d / "notes.jpg")
    # Corrupt entropy-coded data in a JPEG and a PNG (headers intact).
    jpeg = bytearray(big.getvalue())
    jpeg[400:2000] = bytes(range(256)) * 6 + bytes(range(64))
    (d / "corrupt.jpg").write_bytes(bytes(jpeg))
    p["corrupt"] = str(d / "corrupt.jpg")
    png = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)).save(
        png, "PNG")
    png = bytearray(png.getvalue())
    at = png.find(b"IDAT")
    png[at + 20 : at + 60] = b"\x00" * 40
    (d / "corrupt.png").write_bytes(bytes(png))
    p["corrupt_png"] = str(d / "corrupt.png")
    p["missing"] = str(d / "missing.jpg")
    return p


def _read_split(out_dir, split):
    ds = tf.data.TFRecordDataset(schema.list_shards(out_dir, split)).map(schema.parse_example)
    return {ex["image_id"].numpy().decode(): ex for ex in ds}


def test_process_image_kinds(images):
    data, action = common.process_image(images["rgb"])
    assert action == "passthrough"
    assert data == open(images["rgb"], "rb").read()  # byte-identical
    for kind, action_name in [("gray", "converted_grayscale"), ("cmyk", "converted_cmyk"),
                              ("png", "converted_png")]:
        data, action = common.process_image(images[kind])
        assert action == action_name
        img = Image.open(io.BytesIO(data))
        assert (img.format, img.mode) == ("JPEG", "RGB")
    # CMYK (0, 255, 255, 0) is red; transparent PNG pixels become white.
    r, g, b = Image.open(io.BytesIO(common.process_image(images["cmyk"])[0])).getpixel((5, 5))
    assert r > 200 and g < 60 and b < 60
    png = Image.open(io.BytesIO(common.process_image(images["png"])[0]))
    assert min(png.getpixel((2, 2))) > 245
    for kind, reason in [("empty", "empty"), ("truncated", "truncated"), ("text", "not_an_image"),
                         ("corrupt", "corrupt"), ("corrupt_png", "corrupt"),
                         ("missing", "missing")]:
        with pytest.raises(common.SkipImage) as err:
            common.process_image(images[kind])
        assert err.value.reason == reason, kind
        assert os.path.basename(images[kind]) in str(err.value)


def test_max_side_resizes_large_and_keeps_small(tmp_path):
    big = _jpeg(tmp_path / "big.jpg", size=(300, 120))
    small = _jpeg(tmp_path / "small.jpg", size=(50, 40))
    data, action = common.process_image(big, max_side=100)
    assert action == "resized"
    assert Image.open(io.BytesIO(data)).size == (100, 40)
    data, action = common.process_image(small, max_side=100)
    assert action == "passthrough" and data == open(small, "rb").read()


def test_write_split_round_trip_with_bad_files(tmp_path, images):
    out = str(tmp_path / "out")
    kinds = list(images)
    records = [common.ImageRecord(k, images[k], (i,), (i + 20,) if k == "rgb" else ())
               for i, k in enumerate(kinds)]
    summary = common.write_split(records, out, "train", num_shards=3, source="unit test",
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
    assert got["rgb"]["image_bytes"].numpy() == open(images["rgb"], "rb").read()
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
    return [common.ImageRecord(f"im{i:02d}", _jpeg(d / f"{i}.jpg", color=(i * 9, 0, 0)),
                               (i % 4,)) for i in range(n)]


def test_crash_leaves_no_half_written_shard_and_rerun_resumes(tmp_path, monkeypatch):
    records = _records(tmp_path, 8)
    out = str(tmp_path / "out")
    real = common.process_image
    calls = []

    def crashing(path, max_side=None):
        calls.append(path)
        if len(calls) == 6:  # shard 0 (records 0, 2, 4, 6) is done; shard 1 is in progress
            raise RuntimeError("simulated crash")
        return real(path, max_side)

    monkeypatch.setattr(common, "process_image", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        common.write_split(records, out, "train", num_shards=2, source="t", num_workers=1,
                           progress=False)
    files = os.listdir(out)
    assert "train-00000-of-00002.tfrecord" in files
    assert "train-00001-of-00002.tfrecord" not in files
    assert not [f for f in files if ".tmp-" in f]
    with pytest.raises(ValueError, match="missing train-00001-of-00002"):
        schema.list_shards(out, "train")
    # A hard kill can leave a temp file: the rerun removes it.
    open(os.path.join(out, ".train-00001-of-00002.tfrecord.tmp-99999"), "wb").close()
    monkeypatch.setattr(common, "process_image", real)
    summary = common.write_split(records, out, "train", num_shards=2, source="t", progress=False)
    assert summary["shards_resumed_this_run"] == 1 and summary["shards_written_this_run"] == 1
    assert summary["num_examples"] == 8 and summary["complete"]
    assert sorted(_read_split(out, "train")) == [r.image_id for r in records]
    assert not [f for f in os.listdir(out) if ".tmp-" in f]


def test_parts_union_equals_single_run(tmp_path):
    records = _records(tmp_path, 10)
    single, parts = str(tmp_path / "single"), str(tmp_path / "parts")
    common.write_split(records, single, "train", num_shards=4, source="t", progress=False)
    s0 = common.write_split(records, parts, "train", num_shards=4, source="t", num_parts=2,
                            part_index=0, progress=False)
    assert not s0["complete"] and s0["shards_complete"] == 2
    assert sorted(f for f in os.listdir(parts) if f.endswith(".tfrecord")) == [
        "train-00000-of-00004.tfrecord", "train-00002-of-00004.tfrecord"]
    s1 = common.write_split(records, parts, "train", num_shards=4, source="t", num_parts=2,
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
    common.write_split(records, out, "train", num_shards=2, source="t", progress=False)
    changed = [records[0].__class__(records[0].image_id, records[0].path, (3,))] + records[1:]
    with pytest.raises(common.DataPrepError, match="different records"):
        common.write_split(changed, out, "train", num_shards=2, source="t", progress=False)
    with pytest.raises(common.DataPrepError, match="2\\]-shard set"):
        common.write_split(records, out, "train", num_shards=3, source="t", progress=False)


def test_write_split_argument_errors(tmp_path):
    with pytest.raises(common.DataPrepError, match="part_index 2"):
        common.write_split([], str(tmp_path), "train", num_shards=1, source="t", num_parts=2,
                           part_index=2)
    bad = [common.ImageRecord("x", "x.jpg", (1,), (1,))]
    with pytest.raises(common.DataPrepError, match="'x'.*both positive"):
        common.write_split(bad, str(tmp_path), "train", num_shards=1, source="t")


def test_empty_shards_are_written_so_the_set_is_complete(tmp_path):
    out = str(tmp_path / "o")
    summary = common.write_split(_records(tmp_path, 1), out, "test", num_shards=3, source="t",
                                 progress=False)
    assert summary["complete"] and len(schema.list_shards(out, "test")) == 3


def test_progress_line_has_rate_and_eta():
    stream = io.StringIO()
    bar = common.Progress(10, "train", stream=stream)
    bar.update(4)
    bar.close()
    text = stream.getvalue()
    assert "4/10" in text and "img/s" in text and "ETA" in text


def _w2v(tmp_path, table):
    dim = len(next(iter(table.values())))
    p = tmp_path / "w2v.txt"
    p.write_text(f"{len(table)} {dim}\n" + "".join(
        k + " " + " ".join(map(str, v)) + "\n" for k, v in table.items()))
    return str(p)


def test_build_label_space_from_word_vectors(tmp_path):
    path = _w2v(tmp_path, {"red": [1, 0, 0], "circle": [0, 1, 0], "cat": [0, 0, 3]})
    space, dropped = common.build_label_space(["red circle", "cat"], [True, False],
                                              word_vectors=path)
    assert dropped == [] and isinstance(space, LabelSpace)
    np.testing.assert_allclose(space.vectors, [[2**-0.5, 2**-0.5, 0], [0, 0, 1]], atol=1e-6)
    np.testing.assert_array_equal(space.unseen_indices, [0])
    with pytest.raises(common.DataPrepError, match="2 of 3 labels.*'dog'.*'blue circle'"):
        common.build_label_space(["dog", "cat", "blue circle"], [False] * 3, word_vectors=path)
    space, dropped = common.build_label_space(["dog", "cat", "red"], [False, True, False],
                                              word_vectors=path, drop_missing=True)
    assert dropped == ["dog"] and space.names == ("cat", "red")
    np.testing.assert_array_equal(space.unseen, [True, False])


def test_build_label_space_from_label_vectors_and_errors(tmp_path):
    p = tmp_path / "lv.txt"
    p.write_text("hot dog\t0 2\ncat\t3 4\n")
    space, _ = common.build_label_space(["hot_dog", "cat"], [False, True], label_vectors=str(p))
    np.testing.assert_allclose(space.vectors, [[0, 1], [0.6, 0.8]], atol=1e-6)
    with pytest.raises(common.DataPrepError, match="exactly one"):
        common.build_label_space(["cat"], [False])
    with pytest.raises(common.DataPrepError, match="duplicate"):
        common.build_label_space(["cat", "cat"], [False, False], label_vectors=str(p))
    with pytest.raises(common.DataPrepError, match="nope.txt"):
        common.build_label_space(["cat"], [False], word_vectors=str(tmp_path / "nope.txt"))


def test_common_flags_parse_into_options(tmp_path):
    from absl import flags

    fv = flags.FlagValues()  # not the global FLAGS: --output_dir is required here only
    common.define_common_flags(fv)
    common.define_common_flags(fv)  # idempotent: several converters may call it
    flagfile = tmp_path / "f.cfg"
    flagfile.write_text("--output_dir=/tmp/x\n--num_parts=3\n--part_index=2\n--max_side=500\n")
    fv(["prog", f"--flagfile={flagfile}"])
    opts = common.common_options_from_flags(fv)
    assert (opts.output_dir, opts.num_parts, opts.part_index, opts.max_side) == (
        "/tmp/x", 3, 2, 500)
    assert opts.word_vectors_format == "auto" and opts.num_workers is None
