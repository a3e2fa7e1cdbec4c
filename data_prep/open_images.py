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
all local cores, and a rerun skips finished shards (see `data_prep.shards.write_split`).

Usage:
  python -m data_prep.open_images --oi_dir=open_images_v4 \
    --unseen_classes=unseen-400.txt --train_images=train --test_images=test \
    --word_vectors=cc.en.300.bin --output_dir=data/open_images \
    --num_shards=1024 --num_parts=8 --part_index=0

Inputs (CSV files, images, word vectors) are read locally; --output_dir may be gs:// etc.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
from collections.abc import Sequence

from data_prep import common, converters
from data_prep import open_images_files as files  # the official files' readers
from data_prep.common import ImageRecord
from data_prep.converters import Converted, write_converted
from sdl_tf import cli
from sdl_tf.config_flags import field
from sdl_tf.labels.label_space import LabelSpace
from sdl_tf.utils import atomic_io

TRAIN, TEST = "train", "test"
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


def select_labels(config: OpenImagesConfig, known: dict[str, str]):
    """Seen/unseen MIDs: (seen MIDs, unseen MIDs, counts dict, train CSV sorted?)."""
    trainable = files.read_mid_list(config.file("trainable_classes"), known, "trainable classes")
    unseen = files.read_mid_list(config.unseen_classes, known, "unseen classes")
    unseen_set = set(unseen)
    candidates = [m for m in trainable if m not in unseen_set]
    positives, is_sorted = files.count_positive_images(config.file("train_labels"), candidates,
                                                       known, config.options.progress)
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
    step = _record_step(image_dir)
    state = ([], counts)
    for image_id, pos, neg in files.iter_images(path, wanted, known, is_sorted, progress):
        step(state, image_id, pos, neg)
        if state[0]:
            yield state[0].pop()


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
    known = files.read_class_descriptions(config.file("class_descriptions"))
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
        (train, counts[TRAIN]), _ = files.scan_image_labels(
            train_path, seen_index, known, lambda: ([], _new_counts()),
            _record_step(config.train_images), config.options.progress)
    (test, counts[TEST]), _ = files.scan_image_labels(
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
    converters.define_flags(OpenImagesConfig, common_flags=True)


def main(argv: Sequence[str]) -> int:
    return converters.main(argv, OpenImagesConfig, prepare, report=converters.print_result,
                           required=("oi_dir", "unseen_classes", "train_images"))


def run() -> None:
    """Console-script entry point (`sdl-prep-open-images`)."""
    cli.run(main, define_flags)


if __name__ == "__main__":
    run()
