r"""NUS-WIDE -> the 925 seen / 81 unseen zero-shot split as sharded TFRecords.

The split of the SDL paper (section 4.1, Table 1), following Fast0Tag/LESA: seen = the 925
Flickr tags of `TagList1k.txt` that are not among the 81 human-annotated concepts; unseen =
the 81 concepts of `Concepts81.txt`, whose positives come from `AllLabels/Labels_<c>.txt`.
Train images carry seen labels only; test images carry all 1006.

Official files read (paths relative to `--nus_wide_dir`, each overridable by a flag):
  Concepts81.txt                         81 concept names
  NUS_WID_Tags/TagList1k.txt             1000 tag names
  NUS_WID_Tags/AllTags1k.txt             one row per image (Imagelist order), 1000 0/1 columns
  AllLabels/Labels_<concept>.txt         one 0/1 per image (Imagelist order)
  ImageList/Imagelist.txt                all images, e.g. C:\ImageData\Flickr\actor\0001_21.jpg
  ImageList/TrainImagelist.txt           the train images, e.g. actor\0001_2124494179.jpg
  ImageList/TestImagelist.txt            the test images

Image path mapping: every list entry (Windows or POSIX separators, any prefix) is reduced to
its last two components `<folder>/<file>`; the image is looked up at
`<image_root>/<folder>/<file>`, then `<image_root>/Flickr/<folder>/<file>` (the layout of the
official image archive). An image found at neither place (many Flickr images are gone in real
copies) is still handed to the writer, which skips it like any unusable file: it is counted in
`num_skipped` and listed with reason `missing` in `<split>-summary.json` and the printed table.

Accounting (per split, in the summary): `details.in_list` = `num_examples` + `num_skipped` +
`details.duplicate_in_list` + `details.excluded_no_seen_label` (train) /
`details.excluded_no_label` (test) [+ `details.excluded_only_dropped_labels` with
`--drop_missing_labels`], once every part has finished.

Usage:
  python -m data_prep.nus_wide --nus_wide_dir=NUS-WIDE --image_root=NUS-WIDE/Flickr \
    --word_vectors=GoogleNews-vectors-negative300.bin --output_dir=data/nus_wide

Inputs (tag/label files, images, word vectors) are read locally; --output_dir may be gs:// etc.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Sequence

from data_prep import common, converters
from data_prep.common import DataPrepError, ImageRecord
from data_prep.converters import Converted, write_converted
from sdl_tf import cli
from sdl_tf.config_flags import field

TRAIN, TEST = "train", "test"

_DEFAULT_FILES = {
    "concepts": "Concepts81.txt",
    "tag_list": os.path.join("NUS_WID_Tags", "TagList1k.txt"),
    "all_tags": os.path.join("NUS_WID_Tags", "AllTags1k.txt"),
    "labels_dir": "AllLabels",
    "image_list": os.path.join("ImageList", "Imagelist.txt"),
    "train_list": os.path.join("ImageList", "TrainImagelist.txt"),
    "test_list": os.path.join("ImageList", "TestImagelist.txt"),
}


def _override(key: str):
    """A config field overriding the location of one official file."""
    return field(None, f"Override of <nus_wide_dir>/{_DEFAULT_FILES[key]}.")


@dataclasses.dataclass(frozen=True)
class NusWideConfig:
    """Everything `prepare` needs; built from flags by `main`.

    Attributes:
      nus_wide_dir: folder holding the official text files (see the module docstring).
      image_root: folder holding the images as `<folder>/<file>` or `Flickr/<folder>/<file>`.
      options: output dir, label vectors, sharding, parts... (`common.CommonOptions`); the
        train split gets `options.num_shards` shards (default 64), test
        `max(1, num_shards * 2 // 3)` (the official test list is 2/3 the size of train).
      concepts, tag_list, all_tags, labels_dir, image_list, train_list, test_list: override
        the location of one official file (default: its official path under `nus_wide_dir`).
    """

    nus_wide_dir: str = field(help="Folder with the official NUS-WIDE text files.")
    image_root: str = field(
        help="Folder holding the images as <folder>/<file> or Flickr/<folder>/<file>.")
    options: common.CommonOptions
    concepts: str | None = _override("concepts")
    tag_list: str | None = _override("tag_list")
    all_tags: str | None = _override("all_tags")
    labels_dir: str | None = _override("labels_dir")
    image_list: str | None = _override("image_list")
    train_list: str | None = _override("train_list")
    test_list: str | None = _override("test_list")

    def file(self, key: str) -> str:
        """Path of one official file: the override if given, else the official location."""
        override = getattr(self, key)
        return override if override else os.path.join(self.nus_wide_dir, _DEFAULT_FILES[key])


def image_key(entry: str) -> str:
    r"""Maps a list entry to `<folder>/<file>`.

    `C:\ImageData\Flickr\actor\0001_2124494179.jpg`, `actor\0001_2124494179.jpg` and
    `Flickr/actor/0001_2124494179.jpg` all give `actor/0001_2124494179.jpg`.

    Raises:
      ValueError: if the entry has fewer than two path components.
    """
    parts = [p for p in re.split(r"[\\/]+", entry.strip()) if p]
    if len(parts) < 2:
        raise ValueError(f"expected <folder>\\<file>, got {entry!r}")
    return f"{parts[-2]}/{parts[-1]}"


def resolve_image(image_root: str, key: str) -> str | None:
    """The existing file for `key` under `image_root` (see the module docstring) or None."""
    folder, name = key.split("/")
    for candidate in (os.path.join(image_root, folder, name),
                      os.path.join(image_root, "Flickr", folder, name)):
        if os.path.isfile(candidate):
            return candidate
    return None


def expected_image_path(image_root: str, key: str, flickr_layout: bool) -> str:
    """Where `key` should be under `image_root`'s layout (`Flickr/<folder>/<file>` if the root
    has a `Flickr` folder, else `<folder>/<file>`): the path a missing image is reported at."""
    folder, name = key.split("/")
    if flickr_layout:
        return os.path.join(image_root, "Flickr", folder, name)
    return os.path.join(image_root, folder, name)


def _open(path: str, what: str):
    try:
        return open(path, encoding="utf-8", errors="strict")
    except OSError as e:
        raise DataPrepError(f"{path}: cannot read {what}: {e}") from e


def read_names(path: str, what: str) -> list[str]:
    """One name per line (blank lines ignored), stripped and lower-cased."""
    names, where = [], {}
    with _open(path, what) as f:
        for lineno, line in enumerate(f, 1):
            name = line.strip().lower()
            if not name:
                continue
            if name in where:
                raise DataPrepError(f"{path}:{lineno}: duplicate {what} entry {name!r} "
                                    f"(first at line {where[name]})")
            where[name] = lineno
            names.append(name)
    if not names:
        raise DataPrepError(f"{path}: no {what} entries")
    return names


def read_image_list(path: str) -> list[str]:
    """Image keys (`<folder>/<file>`) in file order (row i = row i of the label files)."""
    keys, blank = [], None
    with _open(path, "image list") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                blank = blank or lineno
                continue
            if blank is not None:
                # Blank lines at the end are fine; one in the middle would shift every later
                # row against AllTags1k/Labels_* (all matched by row number), so stop.
                raise DataPrepError(f"{path}:{blank}: empty row before the last image")
            try:
                keys.append(image_key(line))
            except ValueError as e:
                raise DataPrepError(f"{path}:{lineno}: {e}") from e
    return keys


def _check_rows(path: str, rows: int, expected: int, reference: str) -> None:
    if rows != expected:
        line = min(rows, expected) + 1
        raise DataPrepError(
            f"{path}:{line}: has {rows} rows but {reference} has {expected} images "
            f"(first row without a counterpart is line {line})")


def read_tag_rows(path: str, num_tags: int, num_images: int, reference: str,
                  progress: bool = True) -> list[tuple[int, ...]]:
    """Reads AllTags1k.txt: for each image row, the column indices holding 1."""
    rows: list[tuple[int, ...]] = []
    bar = common.Progress(num_images, "AllTags1k.txt", unit="rows", enabled=progress)
    with _open(path, "tag matrix") as f:
        for lineno, line in enumerate(f, 1):
            values = line.split()
            if not values:
                if line.strip() == "" and lineno > num_images:
                    continue
                raise DataPrepError(f"{path}:{lineno}: empty row")
            if len(values) != num_tags:
                raise DataPrepError(f"{path}:{lineno}: {len(values)} columns, expected "
                                    f"{num_tags} (one per tag of TagList1k)")
            hot = tuple(j for j, v in enumerate(values) if v != "0")
            for j in hot:
                if values[j] != "1":
                    raise DataPrepError(f"{path}:{lineno}: column {j + 1} is {values[j]!r}, "
                                        "expected 0 or 1")
            rows.append(hot)
            bar.update(1)
    bar.close()
    _check_rows(path, len(rows), num_images, reference)
    return rows


def read_concept_column(path: str, num_images: int, reference: str) -> list[int]:
    """Reads one Labels_<concept>.txt: the row indices (images) labelled 1."""
    hot, rows, blank = [], 0, None
    with _open(path, "concept labels") as f:
        for lineno, line in enumerate(f, 1):
            value = line.strip()
            if not value:
                blank = blank or lineno
                continue
            if blank is not None:
                raise DataPrepError(f"{path}:{blank}: empty row before the last image")
            if value not in ("0", "1"):
                raise DataPrepError(f"{path}:{lineno}: value {value!r}, expected 0 or 1")
            if value == "1":
                hot.append(rows)
            rows += 1
    _check_rows(path, rows, num_images, reference)
    return hot


def _labels_file(labels_dir: str, concept: str) -> str:
    """`Labels_<concept>.txt`, matched case-insensitively if the exact name is absent."""
    path = os.path.join(labels_dir, f"Labels_{concept}.txt")
    if os.path.isfile(path):
        return path
    wanted = f"labels_{concept}.txt".lower()
    try:
        for name in os.listdir(labels_dir):
            if name.lower() == wanted:
                return os.path.join(labels_dir, name)
    except OSError as e:
        raise DataPrepError(f"{labels_dir}: cannot list concept label folder: {e}") from e
    raise DataPrepError(f"{path}: concept label file not found (concept {concept!r} of "
                        "Concepts81.txt)")


def read_nus_wide(config: NusWideConfig) -> Converted:
    """Reads the official files and builds the 925/81 train/test records.

    Returns:
      A `Converted` with 1006 labels: the 925 seen tags (TagList1k order) then the 81
      concepts (Concepts81 order). Counts per split: `in_list` (list entries) = `selected`
      + `duplicate_in_list` + `excluded_no_seen_label` (train) / `excluded_no_label` (test).
      Selected images whose file is missing are records too (path: `expected_image_path`):
      `data_prep.shards.write_split` skips them and lists them with reason "missing".

    Raises:
      DataPrepError: naming the file and line of any malformed row or row-count mismatch.
    """
    concepts_path, tags_path = config.file("concepts"), config.file("tag_list")
    concepts = read_names(concepts_path, "concept")
    tags = read_names(tags_path, "tag")
    concept_set = {c.lower() for c in concepts}
    # Seen = tags of TagList1k that are not concepts (1000 - 75 = 925 on the real files).
    seen_cols = [j for j, t in enumerate(tags) if t.lower() not in concept_set]
    names = tuple(tags[j] for j in seen_cols) + tuple(concepts)
    lowered = [n.lower() for n in names]
    if len(set(lowered)) != len(lowered):
        raise DataPrepError(f"{tags_path} / {concepts_path}: label names differ only in case")
    unseen = (False,) * len(seen_cols) + (True,) * len(concepts)
    rows = _image_rows(config, len(tags), concepts, first_concept=len(seen_cols))
    tag_to_label = {j: i for i, j in enumerate(seen_cols)}
    splits, counts = {}, {}
    for split, path in ((TRAIN, config.file("train_list")), (TEST, config.file("test_list"))):
        splits[split], counts[split] = _select_split(config, rows, tag_to_label, split, path)
        logging.info("%s: %s", split, counts[split])
    return Converted(names, unseen, splits, counts)


@dataclasses.dataclass(frozen=True)
class _ImageRows:
    """The labels of every image of Imagelist.txt, by row."""

    list_path: str                   # Imagelist.txt
    row_of: dict[str, int]           # image key -> its (first) row
    tag_rows: list[tuple[int, ...]]  # row -> TagList1k columns holding 1
    concept_rows: list[list[int]]    # row -> label indices of its concepts


def _image_rows(config: NusWideConfig, num_tags: int, concepts: list[str],
                first_concept: int) -> _ImageRows:
    """Reads Imagelist.txt, AllTags1k.txt and every Labels_<concept>.txt (rows checked)."""
    list_path = config.file("image_list")
    keys = read_image_list(list_path)
    num_images = len(keys)
    logging.info("%s: %d images", list_path, num_images)
    tag_rows = read_tag_rows(config.file("all_tags"), num_tags, num_images, list_path,
                             progress=config.options.progress)
    concept_rows: list[list[int]] = [[] for _ in range(num_images)]
    labels_dir = config.file("labels_dir")
    for c, concept in enumerate(concepts):
        for row in read_concept_column(_labels_file(labels_dir, concept), num_images,
                                       list_path):
            concept_rows[row].append(first_concept + c)
    row_of: dict[str, int] = {}
    for row, key in enumerate(keys):
        row_of.setdefault(key, row)
    return _ImageRows(list_path, row_of, tag_rows, concept_rows)


def _select_split(config: NusWideConfig, rows: _ImageRows, tag_to_label: dict[int, int],
                  split: str, path: str) -> tuple[list[ImageRecord], dict[str, int]]:
    """The records of one split list (TrainImagelist.txt / TestImagelist.txt) and its counts;
    `tag_to_label` maps a seen tag's TagList1k column to its label index."""
    flickr_layout = os.path.isdir(os.path.join(config.image_root, "Flickr"))
    records, done = [], set()
    n = {"in_list": 0, "selected": 0, "duplicate_in_list": 0}
    no_label = "excluded_no_seen_label" if split == TRAIN else "excluded_no_label"
    n[no_label] = 0
    with _open(path, "image list") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                key = image_key(line)
            except ValueError as e:
                raise DataPrepError(f"{path}:{lineno}: {e}") from e
            row = rows.row_of.get(key)
            if row is None:
                raise DataPrepError(f"{path}:{lineno}: image {key!r} is not in {rows.list_path}")
            n["in_list"] += 1
            if key in done:
                n["duplicate_in_list"] += 1
                continue
            done.add(key)
            positives = [tag_to_label[j] for j in rows.tag_rows[row] if j in tag_to_label]
            if split == TEST:
                # Unseen (concept) labels only at test time: the zero-shot protocol.
                positives += rows.concept_rows[row]
            if not positives:
                n[no_label] += 1
                continue
            # A missing file still becomes a record: the writer skips it and lists it
            # (reason "missing") with every other unusable file, so num_skipped and the
            # summary's skipped list account for it.
            image = resolve_image(config.image_root, key) or expected_image_path(
                config.image_root, key, flickr_layout)
            n["selected"] += 1
            records.append(ImageRecord(image_id=key, path=image,
                                       positives=tuple(sorted(positives))))
    return records, n


def prepare(config: NusWideConfig) -> dict:
    """Builds the label space and writes the train/test shards.

    Returns:
      {"labels": {...}, "train": summary, "test": summary, "selection": counts}.
    """
    converted = read_nus_wide(config)
    num_shards = config.options.num_shards or 64
    return write_converted(converted, config.options, source="nus-wide-925-81",
                           shards={TRAIN: num_shards, TEST: max(1, num_shards * 2 // 3)})


def define_flags() -> None:
    """Defines this entry point's flags (plus the common ones) on the global absl FLAGS."""
    converters.define_flags(NusWideConfig, common_flags=True)


def main(argv: Sequence[str]) -> int:
    return converters.main(argv, NusWideConfig, prepare, report=converters.print_result,
                           required=("nus_wide_dir", "image_root"))


def run() -> None:
    """Console-script entry point (`sdl-prep-nus-wide`)."""
    cli.run(main, define_flags)


if __name__ == "__main__":
    run()
