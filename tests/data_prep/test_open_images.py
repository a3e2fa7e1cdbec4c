"""Open Images v4 converter: seen threshold, tri-state labels, parts/resume, bad CSVs."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data_prep import open_images
from data_prep.common import CommonOptions, DataPrepError
from sdl_tf.data import tfrecord_schema
from sdl_tf.labels.label_space import LabelSpace
from tests.helpers import data_prep_files as fixtures
from tests.helpers.paths import REPO_ROOT


def _config(tmp_path, shuffle_train=False, min_train_images=2, **options):
    paths = fixtures.write_open_images(str(tmp_path / "oi"), shuffle_train=shuffle_train)
    words = fixtures.write_word2vec(str(tmp_path / "w2v.txt"), fixtures.OI_CLASSES.values())
    opts = dict(output_dir=str(tmp_path / "out"), word_vectors=words, num_shards=2,
                num_workers=2, progress=False)
    opts.update(options)
    return open_images.OpenImagesConfig(min_train_images=min_train_images,
                                        options=CommonOptions(**opts), **paths)


def _by_name(converted, split):
    names = converted.names
    return {r.image_id: (sorted(names[i] for i in r.positives),
                         sorted(names[i] for i in r.negatives))
            for r in converted.splits[split]}


# Expected records with min_train_images=2 (see fixtures.OI_TRAIN_ROWS / OI_TEST_ROWS):
# seen = Cat (3 images), Tree (2), Bow /m/01d (2), Bow /m/01e (2); Dog (1 image) is not seen.
BOW_D, BOW_E = "Bow [/m/01d]", "Bow [/m/01e]"
EXPECTED_TRAIN = {
    "000a": (["Cat"], ["Tree"]),            # Dog's verified negative is not a seen label
    "000b": (["Cat", "Tree"], []),          # Lamp is neither seen nor unseen
    "000c": ([BOW_D, BOW_E, "Cat"], []),
    "000d": (["Tree"], ["Cat"]),            # duplicate negative row counted once
    "000f": ([BOW_D, BOW_E], []),           # positive wins over a contradicting negative
}
EXPECTED_TEST = {
    "100a": (["Zebra crossing"], ["Cat", "Violin"]),
    "100b": (["Tree", "Violin"], []),
}


def test_labels_and_tri_state_records(tmp_path):
    converted = open_images.read_open_images(_config(tmp_path))
    assert converted.names == ("Cat", "Tree", BOW_D, BOW_E, "Zebra crossing", "Violin")
    assert converted.lookup_names[2:4] == ("Bow", "Bow")
    assert converted.label_ids == ("/m/01a", "/m/01c", "/m/01d", "/m/01e", "/m/0u1", "/m/0u2")
    assert converted.unseen == (False,) * 4 + (True,) * 2
    assert _by_name(converted, "train") == EXPECTED_TRAIN
    assert _by_name(converted, "test") == EXPECTED_TEST
    assert converted.counts["classes"]["trainable_below_min_train_images"] == 2  # Dog, Owl
    # Excluded train images: 000bb (unseen classes only), 000e (a too-rare positive and a seen
    # negative), 000g (a too-rare class only), 000h (non-trainable + too-rare classes only).
    assert converted.counts["train"] == {"images_in_csv": 9, "selected": 5,
                                         "excluded_no_positive": 4}
    # Excluded test images: 100c (a negative only), 100d (classes outside the label set only).
    assert converted.counts["test"] == {"images_in_csv": 4, "selected": 2,
                                        "excluded_no_positive": 2}


def test_min_train_images_threshold(tmp_path):
    converted = open_images.read_open_images(_config(tmp_path, min_train_images=3))
    assert converted.names == ("Cat", "Zebra crossing", "Violin")
    converted = open_images.read_open_images(_config(tmp_path / "b", min_train_images=1))
    assert "Dog" in converted.names


def test_unsorted_csv_gives_the_same_records(tmp_path):
    sorted_ = open_images.read_open_images(_config(tmp_path / "a"))
    unsorted = open_images.read_open_images(_config(tmp_path / "b", shuffle_train=True))
    assert [r.image_id for r in unsorted.splits["train"]] == sorted(EXPECTED_TRAIN)
    for split in ("train", "test"):
        assert _by_name(unsorted, split) == _by_name(sorted_, split)
    assert unsorted.counts == sorted_.counts


def test_prepare_round_trip_with_negatives(tmp_path):
    config = _config(tmp_path)
    result = open_images.prepare(config)
    out = config.options.output_dir
    space = LabelSpace.load(out)
    # Both "Bow" classes got the vector of the word "Bow".
    np.testing.assert_allclose(space.vectors[2], space.vectors[3])
    for split, expected in (("train", EXPECTED_TRAIN), ("test", EXPECTED_TEST)):
        got = fixtures.read_split(out, split)
        assert {k: (sorted(space.names[i] for i in v["positives"]),
                    sorted(space.names[i] for i in v["negatives"]))
                for k, v in got.items()} == expected
    assert result["train"]["details"] == {"images_in_csv": 9, "selected": 5,
                                          "excluded_no_positive": 4}
    with open(os.path.join(out, open_images.CLASSES_FILE), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0] == "index,LabelName,DisplayName,unseen"
    assert lines[3] == "2,/m/01d,Bow [/m/01d],0" and lines[5] == "4,/m/0u1,Zebra crossing,1"


def _distinct_image_ids(path):
    with open(path, encoding="utf-8", newline="") as f:
        return {row[0] for row in list(csv.reader(f))[1:] if row}


@pytest.mark.parametrize("shuffle_train", [False, True])
def test_every_csv_image_is_accounted_for(tmp_path, shuffle_train):
    """images_in_csv = distinct ImageIDs of the CSV = written + skipped + excluded, exactly."""
    config = _config(tmp_path, shuffle_train=shuffle_train)
    os.remove(os.path.join(config.train_images, "000d.jpg"))  # selected, but no file
    result = open_images.prepare(config)
    for split, csv_name, written, excluded in (
            ("train", "train-annotations-human-imagelabels.csv", 4, 4),
            ("test", "test-annotations-human-imagelabels.csv", 2, 2)):
        summary = result[split]
        with open(tfrecord_schema.summary_path(config.options.output_dir, split),
                  encoding="utf-8") as f:
            assert json.load(f)["details"] == summary["details"]
        details = summary["details"]
        image_ids = _distinct_image_ids(os.path.join(config.oi_dir, csv_name))
        assert details["images_in_csv"] == len(image_ids)
        assert summary["num_examples"] == written
        assert details["excluded_no_positive"] == excluded
        assert details["images_in_csv"] == (summary["num_examples"] + summary["num_skipped"]
                                            + details["excluded_no_positive"])
        assert details["selected"] == summary["num_records"]
    assert [s["image_id"] for s in result["train"]["skipped"]] == ["000d"]
    assert result["train"]["skipped_by_reason"] == {"missing": 1}


def test_images_left_without_a_labelled_vector_are_accounted_for(tmp_path):
    # No vector for "Zebra crossing": test image 100a (its only positive) has no target left.
    config = _config(tmp_path, drop_missing_labels=True)
    words = [n for n in fixtures.OI_CLASSES.values() if n != "Zebra crossing"]
    fixtures.write_word2vec(config.options.word_vectors, words)
    summary = open_images.prepare(config)["test"]
    details = summary["details"]
    assert details["excluded_only_dropped_labels"] == 1
    assert summary["num_examples"] == 1 and summary["num_skipped"] == 0
    assert details["images_in_csv"] == 4 == (
        summary["num_examples"] + summary["num_skipped"] + details["excluded_no_positive"]
        + details["excluded_only_dropped_labels"])


def test_tri_state_training_targets_from_shards(tmp_path):
    config = _config(tmp_path)
    open_images.prepare(config)
    out = config.options.output_dir
    space = LabelSpace.load(out)
    record = fixtures.read_split(out, "train")["000a"]
    targets = tfrecord_schema.train_targets(
        np.array(record["positives"], np.int64), np.array(record["negatives"], np.int64),
        space.seen_indices, space.num_labels).numpy()
    # Seen order Cat, Tree, Bow, Bow: Cat positive, Tree verified negative, Bows unknown.
    np.testing.assert_array_equal(targets, [1.0, -1.0, 0.0, 0.0])


def test_parts_and_resume(tmp_path):
    kwargs = dict(num_shards=4, num_parts=2)
    first = open_images.prepare(_config(tmp_path, part_index=0, **kwargs))
    assert first["train"]["shards_complete"] == 2 and not first["train"]["complete"]
    out = str(tmp_path / "out")
    with pytest.raises(ValueError, match="incomplete 'train' shard set"):
        tfrecord_schema.list_shards(out, "train")
    second = open_images.prepare(_config(tmp_path, part_index=1, **kwargs))
    assert second["train"]["complete"] and second["train"]["shards_written_this_run"] == 2
    assert set(fixtures.read_split(out, "train")) == set(EXPECTED_TRAIN)
    again = open_images.prepare(_config(tmp_path, part_index=1, **kwargs))
    assert again["train"]["shards_written_this_run"] == 0
    assert again["train"]["shards_resumed_this_run"] == 2


def _edit(path, transform):
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(transform(lines)) + "\n")


@pytest.mark.parametrize("file_name, transform, message", [
    ("train-annotations-human-imagelabels.csv",
     lambda lines: lines[:3] + ["000b,verification,/m/01a,0.7"] + lines[3:],
     r"train-annotations-human-imagelabels\.csv:4: Confidence '0\.7'"),
    ("train-annotations-human-imagelabels.csv",
     lambda lines: lines[:2] + ["000a,verification,/m/zzz,1"] + lines[2:],
     r"train-annotations-human-imagelabels\.csv:3: LabelName '/m/zzz' is not in"),
    ("train-annotations-human-imagelabels.csv",
     lambda lines: lines[:2] + [",verification,/m/0x9,1"] + lines[2:],
     r"train-annotations-human-imagelabels\.csv:3: empty ImageID"),
    ("test-annotations-human-imagelabels.csv",
     lambda lines: ["ImageID,LabelName,Confidence"] + lines[1:],
     r"test-annotations-human-imagelabels\.csv:1: expected header"),
    ("test-annotations-human-imagelabels.csv",
     lambda lines: lines + ["100d,verification"],
     r"test-annotations-human-imagelabels\.csv:10: 2 column\(s\)"),
    ("classes-trainable.txt", lambda lines: lines + ["/m/nope"],
     r"classes-trainable\.txt:7: class '/m/nope' is not in class-descriptions\.csv"),
    ("class-descriptions.csv", lambda lines: lines[:2] + ["/m/0q,a,b"] + lines[2:],
     r"class-descriptions\.csv:3: expected 'LabelName,DisplayName'"),
])
def test_malformed_files_name_file_and_line(tmp_path, file_name, transform, message):
    config = _config(tmp_path)
    _edit(os.path.join(config.oi_dir, file_name), transform)
    with pytest.raises(DataPrepError, match=message):
        open_images.read_open_images(config)


def test_command_line_part(tmp_path):
    config = _config(tmp_path)
    out = tmp_path / "cli"
    args = [f"--oi_dir={config.oi_dir}", f"--unseen_classes={config.unseen_classes}",
            f"--train_images={config.train_images}", f"--test_images={config.test_images}",
            f"--word_vectors={config.options.word_vectors}", f"--output_dir={out}",
            "--min_train_images=2", "--num_shards=2", "--num_parts=2", "--part_index=1",
            "--noprogress"]
    repo = REPO_ROOT
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", "data_prep.open_images", *args], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "labels: 6 (4 seen, 2 unseen, 0 dropped" in proc.stdout
    assert "train: 2 examples written, 0 images skipped, shards complete 1/2" in proc.stdout
    # Part 1 of 2 wrote train shard 1 only (records 1 and 3 of the five: 000b, 000d).
    assert sorted(os.listdir(out)) == sorted([
        "labels.json", "label_vectors.npy", open_images.CLASSES_FILE,
        ".train-00001-of-00002.tfrecord.stats.json", "train-00001-of-00002.tfrecord",
        "train-summary.json", "test-summary.json"])


def test_unseen_list_may_be_a_csv_with_header(tmp_path):
    config = _config(tmp_path)
    with open(config.unseen_classes, "w", encoding="utf-8") as f:
        f.write('LabelName,DisplayName\n/m/0u2,Violin\n/m/0u1,"Zebra crossing"\n')
    converted = open_images.read_open_images(config)
    assert converted.names[-2:] == ("Violin", "Zebra crossing")
    assert converted.unseen[-2:] == (True, True)
