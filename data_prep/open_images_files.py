"""The official Open Images v4 files, read and validated: class descriptions, MID lists and
the human-verified image-labels CSVs (`ImageID,Source,LabelName,Confidence`).

The labels CSVs are streamed with the `csv` module and grouped by ImageID. The official files
are sorted by ImageID, so an image's group is a run of rows; if a file turns out not to be
sorted this is logged and the file is re-read grouping in memory (same result, more memory).
Every error names the file and the line.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator, Sequence

from data_prep import common
from data_prep.common import DataPrepError

_HEADER = ("ImageID", "Source", "LabelName", "Confidence")


def _open(path: str, what: str):
    try:
        return open(path, encoding="utf-8", newline="")
    except OSError as e:
        raise DataPrepError(f"{path}: cannot read {what}: {e}") from e


def read_class_descriptions(path: str) -> dict[str, str]:
    """class-descriptions.csv -> {MID: DisplayName} (no header; DisplayName may be quoted)."""
    out: dict[str, str] = {}
    with _open(path, "class descriptions") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            if not row:
                continue
            if len(row) != 2 or not row[0].strip():
                raise DataPrepError(f"{path}:{lineno}: expected 'LabelName,DisplayName', got "
                                    f"{len(row)} column(s)")
            mid, name = row[0].strip(), row[1].strip()
            if lineno == 1 and mid == "LabelName":
                continue  # tolerate a header line (later releases have one)
            out[mid] = name
    if not out:
        raise DataPrepError(f"{path}: no classes")
    return out


def read_mid_list(path: str, known: dict[str, str], what: str) -> list[str]:
    """One MID per line (first comma column; blank and '#' lines skipped), in file order.

    Raises:
      DataPrepError: naming file and line of a MID that class-descriptions.csv does not know.
    """
    mids: dict[str, None] = {}
    with _open(path, what) as f:
        for lineno, line in enumerate(f, 1):
            token = line.strip()
            if not token or token.startswith("#"):
                continue
            mid = next(csv.reader([token]))[0].strip()
            if lineno == 1 and not mid.startswith("/"):
                continue  # a header line (MIDs look like /m/0abc or /g/11xyz)
            if mid not in known:
                raise DataPrepError(f"{path}:{lineno}: class {mid!r} is not in "
                                    "class-descriptions.csv")
            mids[mid] = None
    return list(mids)


class _Unsorted(Exception):
    """The labels CSV is not grouped by ImageID (internal: triggers the in-memory fallback)."""


_PROGRESS_ROWS = 100_000


def _rows(path: str, wanted: dict[str, int], known: dict[str, str],
          progress: bool = False) -> Iterator[tuple[str, int | None, bool]]:
    """Validated (ImageID, label index, positive?) rows for the labels in `wanted`.

    A row of another class yields (ImageID, None, False) unless the previous yielded row had
    the same ImageID: every ImageID of the file reaches the grouping (and is counted) even if
    none of its classes is wanted, at the cost of one tuple per run of such rows.
    With `progress`, a bar over the file's megabytes (rate, ETA) on stderr.
    """
    with _open(path, "image labels") as f:
        bar = common.Progress(max(1, os.path.getsize(path) >> 20), os.path.basename(path),
                              unit="MB", enabled=progress)
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header[:4]) != _HEADER:
            raise DataPrepError(f"{path}:1: expected header {','.join(_HEADER)}, got "
                                f"{','.join(header or [])!r}")
        last_id = None
        for row in reader:
            if reader.line_num % _PROGRESS_ROWS == 0:
                # The raw file position (bytes handed to the text buffer) tracks the read.
                bar.update((f.buffer.raw.tell() >> 20) - bar.done)
            if len(row) < 4:
                if not row:
                    continue
                raise DataPrepError(f"{path}:{reader.line_num}: {len(row)} column(s), expected "
                                    "ImageID,Source,LabelName,Confidence")
            image_id, mid, conf = row[0], row[2], row[3]
            if not image_id:
                raise DataPrepError(f"{path}:{reader.line_num}: empty ImageID")
            index = wanted.get(mid)
            if index is None:
                if mid not in known:
                    raise DataPrepError(f"{path}:{reader.line_num}: LabelName {mid!r} is not "
                                        "in class-descriptions.csv")
                if image_id != last_id:
                    last_id = image_id
                    yield image_id, None, False
                continue
            if conf == "1" or conf == "0":
                positive = conf == "1"
            else:
                try:
                    value = float(conf)
                except ValueError:
                    value = -1.0
                if value not in (0.0, 1.0):
                    raise DataPrepError(f"{path}:{reader.line_num}: Confidence {conf!r}, "
                                        "expected 1 (positive) or 0 (verified negative)")
                positive = value == 1.0
            last_id = image_id
            yield image_id, index, positive
        bar.update(bar.total - bar.done)
        bar.close()


def _group_sorted(rows) -> Iterator[tuple[str, set[int], set[int]]]:
    """Groups runs of one ImageID; raises _Unsorted if an ImageID is smaller than the last.

    A row with index None (a class not wanted) opens the image's group without a label.
    """
    current, pos, neg = None, set(), set()
    for image_id, index, positive in rows:
        if image_id != current:
            if current is not None:
                if image_id < current:
                    raise _Unsorted
                yield current, pos, neg - pos
            current, pos, neg = image_id, set(), set()
        if index is not None:
            (pos if positive else neg).add(index)
    if current is not None:
        yield current, pos, neg - pos


def _group_in_memory(rows) -> Iterator[tuple[str, set[int], set[int]]]:
    """Groups rows by ImageID in memory (any row order); yields in ImageID order."""
    groups: dict[str, tuple[set[int], set[int]]] = {}
    for image_id, index, positive in rows:
        entry = groups.get(image_id)
        if entry is None:
            entry = groups[image_id] = (set(), set())
        if index is not None:
            entry[0 if positive else 1].add(index)
    for image_id in sorted(groups):
        pos, neg = groups[image_id]
        yield image_id, pos, neg - pos


def scan_image_labels(path: str, wanted: dict[str, int], known: dict[str, str], start, step,
                      progress: bool = True):
    """Folds `step(state, image_id, positives, negatives)` over the images of a labels CSV.

    Every distinct ImageID of the file is visited once, in ImageID order, with the label
    indices of `wanted` (MID -> label index) among its rows; an image whose rows are all of
    other labels comes with two empty sets. Every row is validated, also those of other
    labels. A label both positive and negative for one image (two sources disagree) counts
    as positive: the human-confirmed presence is the stronger statement. The official files
    are sorted by ImageID, so images are grouped as runs of rows; if the file is not sorted,
    this is logged and the scan restarts with a fresh `start()` state, grouping in memory
    (same result, more memory).

    Returns:
      (the final state, whether the file was sorted by ImageID).

    Raises:
      DataPrepError: naming file and line of a malformed row or an unknown LabelName.
    """
    for grouping in (_group_sorted, _group_in_memory):
        state = start()
        try:
            for image_id, pos, neg in grouping(_rows(path, wanted, known, progress)):
                step(state, image_id, pos, neg)
        except _Unsorted:
            logging.warning("%s is not sorted by ImageID; re-reading it, grouping in memory",
                            path)
            continue
        return state, grouping is _group_sorted
    raise AssertionError("unreachable: in-memory grouping never raises _Unsorted")


def count_positive_images(path: str, mids: Sequence[str], known: dict[str, str],
                          progress: bool = True) -> tuple[dict[str, int], bool]:
    """Number of distinct images with a Confidence-1 row per MID in `mids`, and whether the
    file is sorted by ImageID."""
    index = {m: i for i, m in enumerate(mids)}

    def step(counts, _, pos, __):
        for i in pos:
            counts[i] += 1

    counts, is_sorted = scan_image_labels(path, index, known, lambda: [0] * len(mids), step,
                                          progress)
    return dict(zip(mids, counts, strict=True)), is_sorted


def iter_images(path: str, wanted: dict[str, int], known: dict[str, str], is_sorted: bool,
                progress: bool = False) -> Iterator[tuple[str, set[int], set[int]]]:
    """(ImageID, positive label indices, verified-negative label indices) of every image of a
    labels CSV, one at a time: as runs of rows if `is_sorted` (known from an earlier scan),
    else grouped in memory (see `scan_image_labels` for the labels and the validation).

    Raises:
      DataPrepError: a malformed row, or a file that was sorted and no longer is.
    """
    rows = _rows(path, wanted, known, progress)
    try:
        yield from _group_sorted(rows) if is_sorted else _group_in_memory(rows)
    except _Unsorted:
        raise DataPrepError(f"{path}: no longer sorted by ImageID (changed while reading?)") \
            from None
