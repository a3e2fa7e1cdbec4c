"""NUS-WIDE 925/81 converter: path mapping, labels, missing images, row-count errors."""

import json
import os
import subprocess
import sys

import pytest

from data_prep import nus_wide
from data_prep.common import CommonOptions, DataPrepError
from sdl_tf.data import tfrecord_schema
from sdl_tf.labels.label_space import LabelSpace
from tests.helpers import data_prep_files as fixtures
from tests.helpers.paths import REPO_ROOT


@pytest.mark.parametrize("entry", [
    "C:\\ImageData\\Flickr\\actor\\0001_2124494179.jpg",
    "actor\\0001_2124494179.jpg",
    "Flickr/actor/0001_2124494179.jpg",
    "  actor/0001_2124494179.jpg\r\n",
])
def test_image_key_maps_windows_and_posix_entries(entry):
    assert nus_wide.image_key(entry) == "actor/0001_2124494179.jpg"


def test_image_key_rejects_bare_file_name():
    with pytest.raises(ValueError):
        nus_wide.image_key("0001_2124494179.jpg")


def _setup(tmp_path, flickr_layout=True):
    root, images = str(tmp_path / "nus"), str(tmp_path / "images")
    fixtures.write_nus_wide(root, images, flickr_layout=flickr_layout)
    words = fixtures.write_word2vec(str(tmp_path / "w2v.txt"),
                                    fixtures.NUS_TAGS + fixtures.NUS_CONCEPTS)
    options = CommonOptions(output_dir=str(tmp_path / "out"), word_vectors=words,
                            num_shards=2, num_workers=2, progress=False)
    return nus_wide.NusWideConfig(nus_wide_dir=root, image_root=images, options=options)


@pytest.mark.parametrize("flickr_layout", [True, False])
def test_read_labels_and_missing_images(tmp_path, flickr_layout):
    config = _setup(tmp_path, flickr_layout)
    converted = nus_wide.read_nus_wide(config)
    # Seen = tags that are not concepts (TagList order); unseen = all concepts (file order).
    assert converted.names == ("sky", "water", "sunset", "clouds", "animal", "beach", "dog")
    assert converted.unseen == (False,) * 4 + (True,) * 3

    def labels(split):
        return {r.image_id: sorted(converted.names[i] for i in r.positives)
                for r in converted.splits[split]}

    # Train: seen tags only (the "dog" tag is a concept, so it is not a seen label). The image
    # without a file is selected too: the writer skips and lists it (reason "missing").
    assert labels("train") == {"actor/0001_11.jpg": ["sky"],
                               "beach/0003_13.jpg": ["clouds", "sunset"]}
    # Test: seen tags + concept labels from AllLabels (not from the tag matrix).
    assert labels("test") == {"actor/0002_12.jpg": ["beach", "water"],
                              "zoo/0005_15.jpg": ["animal"], "zoo/0006_16.jpg": ["sky"]}
    assert converted.counts["train"] == {"in_list": 3, "selected": 2, "duplicate_in_list": 0,
                                         "excluded_no_seen_label": 1}
    assert converted.counts["test"]["selected"] == 3
    found, missing = converted.splits["train"]
    expected_dir = os.path.join(config.image_root, "Flickr") if flickr_layout else (
        config.image_root)
    assert found.path == os.path.join(expected_dir, "actor", "0001_11.jpg")
    # A missing file's path is where the image root's layout puts it (named in the summary).
    assert missing.path == os.path.join(expected_dir, "beach", "0003_13.jpg")
    assert not os.path.exists(missing.path)


def test_prepare_round_trip(tmp_path):
    config = _setup(tmp_path)
    result = nus_wide.prepare(config)
    out = config.options.output_dir
    space = LabelSpace.load(out)
    assert space.seen_names == ("sky", "water", "sunset", "clouds")
    assert space.unseen_names == ("animal", "beach", "dog")
    test = fixtures.read_split(out, "test")
    assert {k: sorted(space.names[i] for i in v["positives"]) for k, v in test.items()} == {
        "actor/0002_12.jpg": ["beach", "water"], "zoo/0005_15.jpg": ["animal"],
        "zoo/0006_16.jpg": ["sky"]}
    assert list(fixtures.read_split(out, "train")) == ["actor/0001_11.jpg"]
    # The image without a file is skipped and listed like any unusable file.
    train = result["train"]
    missing_path = os.path.join(config.image_root, "Flickr", "beach", "0003_13.jpg")
    assert train["num_skipped"] == 1 and train["skipped_by_reason"] == {"missing": 1}
    assert train["skipped"] == [{"image_id": "beach/0003_13.jpg", "path": missing_path,
                                 "reason": "missing",
                                 "detail": f"file not found: {missing_path}"}]
    with open(tfrecord_schema.summary_path(out, "train"), encoding="utf-8") as f:
        on_disk = json.load(f)
    assert on_disk["num_skipped"] == 1 and on_disk["skipped"] == train["skipped"]
    # Every list entry is accounted for: written, skipped by the writer, or excluded.
    for split, no_label in (("train", "excluded_no_seen_label"), ("test", "excluded_no_label")):
        summary, details = result[split], result[split]["details"]
        assert details["in_list"] == (summary["num_examples"] + summary["num_skipped"]
                                      + details["duplicate_in_list"] + details[no_label])
        assert details["selected"] == summary["num_records"]
    assert (result["train"]["num_examples"], result["test"]["num_examples"]) == (1, 3)


def _rewrite(path, transform):
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().splitlines()
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(transform(lines)) + "\n")


def test_row_count_mismatch_names_file_and_line(tmp_path):
    config = _setup(tmp_path)
    tags = os.path.join(config.nus_wide_dir, "NUS_WID_Tags", "AllTags1k.txt")
    _rewrite(tags, lambda lines: lines[:-1])
    with pytest.raises(DataPrepError, match=r"AllTags1k\.txt:7: has 6 rows but .*Imagelist\.txt "
                                            r"has 7 images"):
        nus_wide.read_nus_wide(config)


def test_concept_file_errors(tmp_path):
    config = _setup(tmp_path)
    labels = os.path.join(config.nus_wide_dir, "AllLabels", "Labels_beach.txt")
    _rewrite(labels, lambda lines: lines + ["0"])
    with pytest.raises(DataPrepError, match=r"Labels_beach\.txt:8: has 8 rows"):
        nus_wide.read_nus_wide(config)
    _rewrite(labels, lambda lines: lines[:2] + ["yes"] + lines[3:7])
    with pytest.raises(DataPrepError, match=r"Labels_beach\.txt:3: value 'yes'"):
        nus_wide.read_nus_wide(config)
    os.remove(labels)
    with pytest.raises(DataPrepError, match=r"Labels_beach\.txt: concept label file not found"):
        nus_wide.read_nus_wide(config)


def test_bad_tag_rows_and_unknown_list_entries(tmp_path):
    config = _setup(tmp_path)
    tags = os.path.join(config.nus_wide_dir, "NUS_WID_Tags", "AllTags1k.txt")
    _rewrite(tags, lambda lines: lines[:3] + ["0 1 0"] + lines[4:])
    with pytest.raises(DataPrepError, match=r"AllTags1k\.txt:4: 3 columns, expected 6"):
        nus_wide.read_nus_wide(config)
    _rewrite(tags, lambda lines: lines[:3] + ["0 1 0 2 0 0"] + lines[4:])
    with pytest.raises(DataPrepError, match=r"AllTags1k\.txt:4: column 4 is '2'"):
        nus_wide.read_nus_wide(config)

    config = _setup(tmp_path / "b")
    train_list = os.path.join(config.nus_wide_dir, "ImageList", "TrainImagelist.txt")
    _rewrite(train_list, lambda lines: lines + ["actor\\9999_1.jpg"])
    with pytest.raises(DataPrepError, match=r"TrainImagelist\.txt:4: image 'actor/9999_1\.jpg' "
                                            r"is not in .*Imagelist\.txt"):
        nus_wide.read_nus_wide(config)


def test_command_line_with_flagfile(tmp_path):
    config = _setup(tmp_path)
    flagfile = tmp_path / "nus.flags"
    flagfile.write_text("\n".join([
        f"--nus_wide_dir={config.nus_wide_dir}", f"--image_root={config.image_root}",
        f"--word_vectors={config.options.word_vectors}",
        f"--output_dir={config.options.output_dir}", "--num_shards=1", "--noprogress"]) + "\n")
    repo = REPO_ROOT
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", "data_prep.nus_wide", f"--flagfile={flagfile}"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "labels: 7 (4 seen, 3 unseen, 0 dropped" in proc.stdout
    assert "train: in_list=3, selected=2, duplicate_in_list=0, excluded_no_seen_label=1" in (
        proc.stdout)
    assert "train: 1 examples written, 1 images skipped, shards complete 1/1" in proc.stdout
    assert len(fixtures.read_split(config.options.output_dir, "test")) == 3
