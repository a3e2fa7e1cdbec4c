r"""Open Images v4 (2018_04) -> the 7,186 seen / 400 unseen zero-shot split as TFRecords.

The SDL paper (section 4.1) follows LESA: seen = the trainable classes with at least 100
positive training images (`--min_train_images`), unseen = a given list of 400 classes. Labels
are the human-verified image-level labels; Confidence 1 is a positive, Confidence 0 a
*verified negative* (the schema's `labels/negative`), every other class is unknown.

Official files:
  class-descriptions.csv                       LabelName,DisplayName (no header)
  classes-trainable.txt                        one trainable LabelName (MID) per line
  <unseen list>                                one MID per line (extra comma columns ignored)
  train-annotations-human-imagelabels.csv      ImageID,Source,LabelName,Confidence (header)
  test-annotations-human-imagelabels.csv       same, for the test images
Images: `<train_images>/<ImageID>.jpg` and `<test_images>/<ImageID>.jpg`.

Train records hold seen labels only (positives and verified negatives); test records hold
all labels. Images without a positive in their split's label set are left out and counted in
`excluded_no_positive`, also those whose rows are all of classes outside the set (unseen or
too-rare classes in train, non-trainable or too-rare classes in test).

Accounting (per split, in `<split>-summary.json`): `details.images_in_csv` (the number of
distinct ImageIDs in the CSV) = `num_examples` + `num_skipped` (files the writer could not
use) + `details.excluded_no_positive` [+ `details.excluded_only_dropped_labels` with
`--drop_missing_labels`], once every part has finished.

Scale: the CSVs are streamed with the `csv` module and grouped by ImageID. The official files
are sorted by ImageID so a group is a run of rows; if a file turns out not to be sorted this
is logged and the file is re-read grouping in memory (same result, more memory). The label
space (the same in every part) is written by every part; the shards are split
deterministically over `--num_parts` (each machine/job runs one `--part_index`), written with
all local cores, and a rerun skips finished shards (see `data_prep.common.write_split`).

Usage:
  python -m data_prep.open_images --oi_dir=open_images_v4 \
    --unseen_classes=unseen-400.txt --train_images=train --test_images=test \
    --word_vectors=cc.en.300.bin --output_dir=data/open_images \
    --num_shards=1024 --num_parts=8 --part_index=0

Inputs (CSV files, images, word vectors) are read locally; --output_dir may be gs:// etc.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import logging
import os
from collections.abc import Iterator, Sequence

from absl import app, flags

from data_prep import common, converters
from data_prep.common import DataPrepError, ImageRecord
from data_prep.converters import Converted, require_flags, write_converted
from sdl_tf import config_flags
from sdl_tf.config_flags import field
from sdl_tf.labels.label_space import LabelSpace
from sdl_tf.utils import atomic_io

TRAIN, TEST = "train", "test"
_HEADER = ("ImageID", "Source", "LabelName", "Confidence")
_DEFAULT_FILES = {
    "class_descriptions": "class-descriptions.csv",
    "trainable_classes": "classes-trainable.txt",
    "train_labels": "train-annotations-human-imagelabels.csv",
    "test_labels": "test-annotations-human-imagelabels.csv",
}


def _override(key: str):
    """A config field overriding the location of one official file."""
    return field(None, f"Override of <oi_dir>/{_DEFAULT_FILES[key]}.")


@dataclasses.dataclass(frozen=True)
class OpenImagesConfig:
    """Everything `prepare` needs; built from flags by `main`.

    Attributes:
      oi_dir: folder holding the official CSVs (each overridable below).
      unseen_classes: the list of the 400 unseen classes (one MID per line).
      train_images: folder with `<ImageID>.jpg` of the train images.
      test_images: folder with the test images (default: `train_images`).
      options: output dir, label vectors, sharding, parts... (`common.CommonOptions`); the
        train split gets `options.num_shards` shards (default 1024), test
        `max(1, num_shards // 64)` (v4: 5.6M labelled train vs 112k test images).
      class_descriptions, trainable_classes, train_labels, test_labels: overrides of the
        official files under `oi_dir`.
      min_train_images: a trainable class is seen if it has at least this many positive
        training images (the paper: 100).
      word_vectors ... progress: see `data_prep.common`.
      num_shards: shards of the train split; test gets `max(1, num_shards // 64)` (v4: 9M
        train vs 125k test images).
    """

    oi_dir: str = field(help="Folder with the official Open Images v4 CSVs.")
    unseen_classes: str = field(help="List of the 400 unseen classes (MID per line).")
    train_images: str = field(help="Folder with the train <ImageID>.jpg files.")
    options: common.CommonOptions
    test_images: str | None = field(
        None, "Folder with the test <ImageID>.jpg files (default: --train_images).")
    class_descriptions: str | None = _override("class_descriptions")
    trainable_classes: str | None = _override("trainable_classes")
    train_labels: str | None = _override("train_labels")
    test_labels: str | None = _override("test_labels")
    min_train_images: int = field(
        100, "A trainable class is seen if it has at least this many positive training images "
        "(paper: 100).", lower_bound=1)

    def file(self, key: str) -> str:
        override = getattr(self, key)
        return override if override else os.path.join(self.oi_dir, _DEFAULT_FILES[key])


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


def select_labels(config: OpenImagesConfig, known: dict[str, str]):
    """Seen/unseen MIDs: (seen MIDs, unseen MIDs, counts dict, train CSV sorted?)."""
    trainable = read_mid_list(config.file("trainable_classes"), known, "trainable classes")
    unseen = read_mid_list(config.unseen_classes, known, "unseen classes")
    unseen_set = set(unseen)
    candidates = [m for m in trainable if m not in unseen_set]
    positives, is_sorted = count_positive_images(config.file("train_labels"), candidates, known,
                                                 config.options.progress)
    seen = [m for m in candidates if positives[m] >= config.min_train_images]
    counts = {
        "trainable_classes": len(trainable),
        "trainable_also_unseen": len(trainable) - len(candidates),
        "trainable_below_min_train_images": len(candidates) - len(seen),
        "seen": len(seen),
        "unseen": len(unseen),
    }
    logging.info("labels: %s", counts)
    return seen, unseen, counts, is_sorted


def label_display_names(mids: Sequence[str], known: dict[str, str]):
    """(unique label names, word-lookup names) for `mids`.

    The label name is the DisplayName; a few DisplayNames are shared by several MIDs, and
    label names must be unique, so those get the MID appended in brackets. The lookup name
    stays the DisplayName so every such class gets the DisplayName's word vector.
    """
    display = [known[m] for m in mids]
    shared = collections.Counter(d.lower() for d in display)
    names = tuple(f"{d} [{m}]" if shared[d.lower()] > 1 else d
                  for d, m in zip(display, mids, strict=True))
    return names, tuple(display)


def _record_step(image_dir: str):
    """The `scan_image_labels` step building records: every image is counted in
    `images_in_csv` and then in exactly one of `selected` / `excluded_no_positive`."""
    def step(state, image_id, pos, neg):
        records, n = state
        n["images_in_csv"] += 1
        if not pos:
            n["excluded_no_positive"] += 1
            return
        n["selected"] += 1
        records.append(ImageRecord(
            image_id=image_id, path=os.path.join(image_dir, f"{image_id}.jpg"),
            positives=tuple(sorted(pos)), negatives=tuple(sorted(neg))))
    return step


def _new_counts() -> dict[str, int]:
    return {"images_in_csv": 0, "selected": 0, "excluded_no_positive": 0}


def _stream_records(path, wanted, known, image_dir, counts, is_sorted, progress):
    """Train records one at a time (9M images: no list), filling `counts` as it goes."""
    rows = _rows(path, wanted, known, progress)
    grouped = _group_sorted(rows) if is_sorted else _group_in_memory(rows)
    step = _record_step(image_dir)
    state = ([], counts)
    try:
        for image_id, pos, neg in grouped:
            step(state, image_id, pos, neg)
            if state[0]:
                yield state[0].pop()
    except _Unsorted:
        raise DataPrepError(f"{path}: no longer sorted by ImageID (changed while reading?)") \
            from None


def read_open_images(config: OpenImagesConfig, stream_train: bool = False) -> Converted:
    """Reads the official CSVs and builds train/test records (no image is opened).

    Args:
      config: the converter config.
      stream_train: make the train split a one-pass generator reading the CSV again as it is
        consumed (constant memory for the 5.6M images), with its counts complete once it is
        exhausted; otherwise a list.

    Returns:
      A `Converted` with the seen labels (trainable-list order) then the unseen ones (list
      order), label names = DisplayNames (see `label_display_names`), counts: "classes" and
      per split `images_in_csv` (distinct ImageIDs of the CSV) = `selected` +
      `excluded_no_positive` (no positive among the split's labels, including images whose
      rows are all of other classes); `label_ids` holds the MID of every label.
    """
    known = read_class_descriptions(config.file("class_descriptions"))
    seen, unseen, label_counts, train_sorted = select_labels(config, known)
    mids = seen + unseen
    names, lookup = label_display_names(mids, known)
    flags_unseen = (False,) * len(seen) + (True,) * len(unseen)
    counts = {"classes": label_counts}
    train_path, test_path = config.file("train_labels"), config.file("test_labels")
    # Training records carry seen labels only: unseen classes stay unseen (zero-shot).
    seen_index = {m: i for i, m in enumerate(seen)}
    if stream_train:
        counts[TRAIN] = _new_counts()
        train = _stream_records(train_path, seen_index, known, config.train_images,
                                counts[TRAIN], train_sorted, config.options.progress)
    else:
        (train, counts[TRAIN]), _ = scan_image_labels(
            train_path, seen_index, known, lambda: ([], _new_counts()),
            _record_step(config.train_images), config.options.progress)
    (test, counts[TEST]), _ = scan_image_labels(
        test_path, {m: i for i, m in enumerate(mids)}, known, lambda: ([], _new_counts()),
        _record_step(config.test_images or config.train_images), config.options.progress)
    logging.info("test: %s", counts[TEST])
    return Converted(names, flags_unseen, {TRAIN: train, TEST: test}, counts,
                     lookup_names=lookup, label_ids=tuple(mids))


CLASSES_FILE = "open_images_classes.csv"


def prepare(config: OpenImagesConfig) -> dict:
    """Builds the label space and writes this part's train/test shards.

    Besides the label space, `<output_dir>/open_images_classes.csv` maps every label index to
    its MID (`index,LabelName,DisplayName,unseen`), for comparison with official tools.

    Returns:
      {"labels": {...}, "train": summary, "test": summary, "selection": counts}.
    """
    converted = read_open_images(config, stream_train=True)
    num_shards = config.options.num_shards or 1024
    result = write_converted(converted, config.options, source="open-images-v4",
                             shards={TRAIN: num_shards, TEST: max(1, num_shards // 64)})
    space = LabelSpace.load(config.options.output_dir)
    mid_of = dict(zip(converted.names, converted.label_ids, strict=True))
    lines = ["index,LabelName,DisplayName,unseen"]
    for i, (name, unseen) in enumerate(zip(space.names, space.unseen, strict=True)):
        lines.append(",".join([str(i), mid_of[name], _csv_field(name), str(int(unseen))]))
    atomic_io.atomic_write_text(os.path.join(config.options.output_dir, CLASSES_FILE),
                              "\n".join(lines) + "\n")
    return result


def _csv_field(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\n') else value


def define_flags() -> None:
    """Defines this entry point's flags (plus the common ones) on the global absl FLAGS."""
    common.define_common_flags()
    if "oi_dir" in flags.FLAGS:
        return
    config_flags.define_flags(OpenImagesConfig, exclude=("options",))  # options: common flags


def main(argv: Sequence[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    require_flags("oi_dir", "unseen_classes", "train_images")
    config = config_flags.config_from_flags(OpenImagesConfig, flags.FLAGS)
    return converters.run(prepare, config)


def run() -> None:
    """Console-script entry point (`sdl-prep-open-images`)."""
    from sdl_tf import cli

    define_flags()
    cli.run(main)


if __name__ == "__main__":
    run()
