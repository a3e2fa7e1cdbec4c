"""Tests for data_prep.open_images_files: the labels CSVs grouped by ImageID, sorted or not."""

import pytest

from data_prep import open_images_files as files
from data_prep.common import DataPrepError

KNOWN = {"/m/a": "Apple", "/m/b": "Banana", "/m/c": "Cherry"}
WANTED = {"/m/a": 0, "/m/b": 1}  # /m/c is known but not a label of the split


def _csv(tmp_path, rows):
    path = tmp_path / "labels.csv"
    path.write_text("ImageID,Source,LabelName,Confidence\n" + "".join(
        f"{image},verification,{mid},{conf}\n" for image, mid, conf in rows))
    return str(path)


def _collect(path):
    def step(state, image_id, pos, neg):
        state.append((image_id, pos, neg))

    return files.scan_image_labels(path, WANTED, KNOWN, list, step, progress=False)


ROWS = [("a", "/m/a", "1"), ("a", "/m/b", "0"), ("b", "/m/c", "1"), ("c", "/m/b", "1"),
        ("c", "/m/b", "0")]
# "b" has only a class outside the split (empty sets); "c"'s disagreeing rows count as positive.
GROUPS = [("a", {0}, {1}), ("b", set(), set()), ("c", {1}, set())]


def test_sorted_and_unsorted_files_give_the_same_images(tmp_path):
    assert _collect(_csv(tmp_path, ROWS)) == (GROUPS, True)
    unsorted = _csv(tmp_path, ROWS[2:] + ROWS[:2])
    assert _collect(unsorted) == (GROUPS, False)
    assert list(files.iter_images(unsorted, WANTED, KNOWN, is_sorted=False)) == GROUPS


def test_iter_images_refuses_a_file_that_is_no_longer_sorted(tmp_path):
    unsorted = _csv(tmp_path, ROWS[2:] + ROWS[:2])
    with pytest.raises(DataPrepError, match="no longer sorted by ImageID"):
        list(files.iter_images(unsorted, WANTED, KNOWN, is_sorted=True))


def test_rows_are_validated_with_file_and_line(tmp_path):
    with pytest.raises(DataPrepError, match=r"labels\.csv:3: LabelName '/m/zzz' is not in"):
        _collect(_csv(tmp_path, [("a", "/m/a", "1"), ("a", "/m/zzz", "1")]))
    with pytest.raises(DataPrepError, match=r"labels\.csv:2: Confidence '0.5'"):
        _collect(_csv(tmp_path, [("a", "/m/a", "0.5")]))
