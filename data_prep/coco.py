r"""MS COCO 2014 -> the 48 seen / 17 unseen zero-shot split as sharded TFRecords.

The split is the one of Bansal et al. (ECCV 2018) that the SDL paper follows (section 4.1):
65 of the 80 COCO classes, 48 seen and 17 unseen; the other 15 classes are dropped.

* train = images of the *train* annotation file with at least one seen object and no unseen
  object (the paper's 73,774 -> 44,154 images); labels are seen classes only.
* test = images of the *val* annotation file with at least one unseen object (the paper's
  6,608 images); labels over all 65 classes (ZSL on the 17, GZSL on all 65).

Any COCO-format annotation file is accepted (e.g. a published split file holding a subset of
the images), and an optional image-id list per split restricts the split to exactly those
images, so a published split can be reproduced exactly.

Accounting (per split, in `<split>-summary.json`): `details.images_in_annotations` (the images
of the annotation file) = `num_examples` + `num_skipped` (files the writer could not use,
e.g. missing) + `details.not_in_id_list` + every `details.excluded_*` count, once every part
has finished. (`details.listed_with_unseen_object` is not an exclusion: those listed train
images are written, with their seen labels.)

Usage:
  python -m data_prep.coco \
    --train_annotations=annotations/instances_train2014.json \
    --val_annotations=annotations/instances_val2014.json \
    --train_images=train2014 --val_images=val2014 \
    --word_vectors=GoogleNews-vectors-negative300.bin --output_dir=data/coco

Inputs (annotations, images, word vectors) are read locally; --output_dir may be gs:// etc.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence

from data_prep import common, converters
from data_prep.common import DataPrepError, ImageRecord
from data_prep.converters import Converted, write_converted
from sdl_tf import cli
from sdl_tf.config_flags import field

# The standard split (Bansal et al., ECCV 2018; the SDL paper, section 4.1).
COCO_SEEN = (
    "person", "bicycle", "car", "motorcycle", "train", "truck", "boat", "bench", "bird",
    "horse", "sheep", "bear", "zebra", "giraffe", "backpack", "handbag", "suitcase", "frisbee",
    "skis", "kite", "surfboard", "bottle", "fork", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "pizza", "donut", "chair", "bed", "toilet",
    "tv", "laptop", "mouse", "remote", "microwave", "oven", "toaster", "refrigerator", "book",
    "clock", "vase", "toothbrush",
)  # fmt: skip
COCO_UNSEEN = (
    "airplane", "bus", "cat", "dog", "cow", "elephant", "umbrella", "tie", "snowboard",
    "skateboard", "cup", "knife", "cake", "couch", "keyboard", "sink", "scissors",
)  # fmt: skip

# Older COCO releases and some split files use the PASCAL-style names for four classes.
_NAME_ALIASES = {"tvmonitor": "tv", "motorbike": "motorcycle", "aeroplane": "airplane",
                 "sofa": "couch"}  # fmt: skip

TRAIN, TEST = "train", "test"


@dataclasses.dataclass(frozen=True)
class CocoConfig:
    """Everything `prepare` needs; built from flags by `main`.

    Attributes:
      train_annotations: COCO-format JSON whose images form the training pool
        (official: `instances_train2014.json`).
      val_annotations: COCO-format JSON whose images form the test pool
        (official: `instances_val2014.json`).
      train_images: folder holding the train images (`file_name` of the JSON is relative to it).
      val_images: folder holding the val images.
      options: output dir, label vectors, sharding, parts... (`common.CommonOptions`); the
        train split gets `options.num_shards` shards (default 64), the 7x smaller test split
        `max(1, num_shards // 8)`.
      train_image_ids: optional list file (one image id or file name per line) fixing the
        training images exactly.
      test_image_ids: the same for the test images.
      test_requires_seen: test images must also hold a seen object (the paper's wording for
        its 6,608 test images: "containing both seen and unseen objects").
    """

    train_annotations: str = field(
        help="COCO-format JSON of the training pool (instances_train2014.json).")
    val_annotations: str = field(
        help="COCO-format JSON of the test pool (instances_val2014.json).")
    train_images: str = field(help="Folder of the train images (train2014/).")
    val_images: str = field(help="Folder of the val images (val2014/).")
    options: common.CommonOptions
    train_image_ids: str | None = field(
        None, "Optional list (one image id or file name per line) fixing the train images "
        "exactly.")
    test_image_ids: str | None = field(
        None, "Optional list (one image id or file name per line) fixing the test images "
        "exactly.")
    test_requires_seen: bool = field(
        False, "Test images must hold a seen object besides an unseen one.")


def label_names() -> tuple[tuple[str, ...], tuple[bool, ...]]:
    """The 65 label names in COCO category-id order (seen and unseen interleaved) + flags."""
    # COCO category-id order of the 65 classes, so the label order does not depend on how a
    # particular annotation file orders its `categories` list.
    order = (
        "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
        "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
        "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis",
        "snowboard", "kite", "skateboard", "surfboard", "bottle", "cup", "fork", "knife",
        "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "pizza",
        "donut", "cake", "chair", "couch", "bed", "toilet", "tv", "laptop", "mouse", "remote",
        "keyboard", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock",
        "vase", "scissors", "toothbrush",
    )  # fmt: skip
    unseen = set(COCO_UNSEEN)
    return order, tuple(n in unseen for n in order)


def _load_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError as e:
        raise DataPrepError(f"{path}: annotation file not found") from e
    except json.JSONDecodeError as e:
        raise DataPrepError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DataPrepError(f"{path}: cannot read annotation file: {e}") from e
    if not isinstance(data, dict):
        raise DataPrepError(f"{path}: top level must be a JSON object with 'images', "
                            f"'annotations' and 'categories', got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DataPrepError(f"{path}: missing top-level field '{key}'")
        if not isinstance(data[key], list):
            raise DataPrepError(f"{path}: field '{key}' must be a list")
    return data


def _field(path: str, where: str, entry, key: str):
    if not isinstance(entry, dict) or key not in entry:
        raise DataPrepError(f"{path}: {where} has no field '{key}'")
    return entry[key]


def read_annotations(path: str) -> tuple[dict[int, str], dict[int, set[str]]]:
    """Reads one COCO-format instances file.

    Args:
      path: the JSON file.

    Returns:
      (image id -> file name, image id -> set of class names present). Every image of the
      file is present in the second dict (possibly with an empty set); class names are the
      COCO names with PASCAL-style aliases mapped to the COCO ones.

    Raises:
      DataPrepError: naming the file and field for bad JSON, missing fields, an image id
        listed twice, or annotations pointing at unknown image / category ids.
    """
    data = _load_json(path)
    cat_names: dict[int, str] = {}
    for i, cat in enumerate(data["categories"]):
        cid = _field(path, f"categories[{i}]", cat, "id")
        name = str(_field(path, f"categories[{i}]", cat, "name")).strip().lower()
        cat_names[cid] = _NAME_ALIASES.get(name, name)
    files: dict[int, str] = {}
    first: dict[int, int] = {}
    for i, img in enumerate(data["images"]):
        iid = _field(path, f"images[{i}]", img, "id")
        if iid in first:
            # Its annotations could belong to either entry, and one of the two would vanish
            # from the counts: refuse rather than guess.
            raise DataPrepError(f"{path}: images[{i}].id={iid!r} repeats images[{first[iid]}]")
        first[iid] = i
        files[iid] = str(_field(path, f"images[{i}]", img, "file_name"))
    present: dict[int, set[str]] = {iid: set() for iid in files}
    for i, ann in enumerate(data["annotations"]):
        iid = _field(path, f"annotations[{i}]", ann, "image_id")
        cid = _field(path, f"annotations[{i}]", ann, "category_id")
        if cid not in cat_names:
            raise DataPrepError(f"{path}: annotations[{i}].category_id={cid!r} is not an id in "
                                "'categories'")
        if iid not in present:
            raise DataPrepError(f"{path}: annotations[{i}].image_id={iid!r} is not an id in "
                                "'images'")
        present[iid].add(cat_names[cid])
    missing = [n for n in label_names()[0] if n not in cat_names.values()]
    if missing:
        raise DataPrepError(f"{path}: 'categories' lacks {len(missing)} class(es) of the 48/17 "
                            f"split: {', '.join(missing)}")
    return files, present


def read_id_list(path: str, files: dict[int, str]) -> list[int]:
    """Reads an image-id list: one COCO image id or image file name per line.

    Blank lines and lines starting with '#' are ignored; order and duplicates are dropped.

    Raises:
      DataPrepError: naming file and line for an id that is not in the annotation file.
    """
    by_name = {os.path.basename(f): iid for iid, f in files.items()}
    ids: dict[int, None] = {}
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise DataPrepError(f"{path}: cannot read image-id list: {e}") from e
    with f:
        for lineno, line in enumerate(f, 1):
            token = line.strip()
            if not token or token.startswith("#"):
                continue
            token = token.split(",")[0].split()[0]
            iid = by_name.get(os.path.basename(token))
            if iid is None:
                try:
                    iid = int(token)
                except ValueError:
                    iid = None
            if iid is None or iid not in files:
                raise DataPrepError(f"{path}:{lineno}: image {token!r} is not in the "
                                    "annotation file")
            ids[iid] = None
    return list(ids)


def select_split(
    files: dict[int, str],
    present: dict[int, set[str]],
    image_dir: str,
    split: str,
    image_ids: Sequence[int] | None = None,
    test_requires_seen: bool = False,
) -> tuple[list[ImageRecord], dict[str, int]]:
    """Applies the 48/17 split rule to one annotation file's images.

    Args:
      files: image id -> file name (from `read_annotations`).
      present: image id -> class names (from `read_annotations`).
      image_dir: folder the file names are relative to.
      split: "train" (>= 1 seen object and no unseen object; seen labels only) or "test"
        (>= 1 unseen object; labels over all 65).
      image_ids: if given, exactly these images (the rule is not applied, but images with no
        label of the split's label set are still left out since they carry no target).
      test_requires_seen: for "test", also require a seen object.

    Returns:
      (records sorted by image id, counts by reason). Every image of `files` is counted once:
      `images_in_annotations` = `selected` + `not_in_id_list` + the `excluded_*` counts
      (`listed_with_unseen_object` is a part of `selected`).
    """
    names, unseen_flags = label_names()
    index = {n: i for i, n in enumerate(names)}
    unseen = {n for n, u in zip(names, unseen_flags, strict=True) if u}
    seen = set(names) - unseen
    counts = {"images_in_annotations": len(files), "selected": 0}
    candidates = sorted(files) if image_ids is None else sorted(image_ids)
    if image_ids is not None:
        counts["not_in_id_list"] = len(files) - len(candidates)
    records = []
    for iid in candidates:
        labels, count = _image_labels(present[iid], split, seen, unseen,
                                      listed=image_ids is not None,
                                      test_requires_seen=test_requires_seen)
        if count is not None:
            counts[count] = counts.get(count, 0) + 1
        if labels is None:
            continue
        counts["selected"] += 1
        # Missing/corrupt image files are skipped (and listed) by `shards.write_split`.
        records.append(ImageRecord(image_id=str(iid), path=os.path.join(image_dir, files[iid]),
                                   positives=tuple(sorted(index[n] for n in labels))))
    return records, counts


def _image_labels(classes: set[str], split: str, seen: set[str], unseen: set[str], *,
                  listed: bool, test_requires_seen: bool) -> tuple[set[str] | None, str | None]:
    """The 48/17 rule for one image of `split` holding `classes` (see `select_split`).

    Returns:
      (its labels, or None when it is left out; the count it adds to, or None).
    """
    has_seen, has_unseen = bool(classes & seen), bool(classes & unseen)
    if split == TRAIN:
        if not listed and has_unseen:
            return None, "excluded_has_unseen_object"
        if not has_seen:
            return None, "excluded_no_seen_object"
        # Training labels are seen classes only (unseen must stay unseen).
        return classes & seen, "listed_with_unseen_object" if has_unseen else None
    if split == TEST:
        if not listed and not has_unseen:
            return None, "excluded_no_unseen_object"
        if not listed and test_requires_seen and not has_seen:
            return None, "excluded_no_seen_object"
        labels = classes & (seen | unseen)
        return (labels, None) if labels else (None, "excluded_no_label")
    raise ValueError(f"split must be {TRAIN!r} or {TEST!r}, got {split!r}")


def read_coco(config: CocoConfig) -> Converted:
    """Reads both annotation files and applies the split (no images are opened)."""
    names, unseen = label_names()
    splits, counts = {}, {}
    for split, ann, image_dir, ids_path in (
        (TRAIN, config.train_annotations, config.train_images, config.train_image_ids),
        (TEST, config.val_annotations, config.val_images, config.test_image_ids),
    ):
        logging.info("Reading %s", ann)
        files, present = read_annotations(ann)
        ids = read_id_list(ids_path, files) if ids_path else None
        splits[split], counts[split] = select_split(files, present, image_dir, split, ids,
                                                    config.test_requires_seen)
        logging.info("%s: %s", split, counts[split])
    return Converted(names, unseen, splits, counts)


def prepare(config: CocoConfig) -> dict:
    """Builds the label space and writes the train/test shards.

    Returns:
      {"labels": {...}, "train": summary, "test": summary, "selection": counts} where the
      summaries are those of `write_split`.
    """
    converted = read_coco(config)
    num_shards = config.options.num_shards or 64
    return write_converted(converted, config.options, source="coco-2014-48-17",
                           shards={TRAIN: num_shards, TEST: max(1, num_shards // 8)})


# --- Entry point -----------------------------------------------------------------------------


def define_flags() -> None:
    """Defines this entry point's flags (plus the common ones) on the global absl FLAGS."""
    converters.define_flags(CocoConfig, common_flags=True)


def main(argv: Sequence[str]) -> int:
    return converters.main(argv, CocoConfig, prepare, report=converters.print_result, required=(
        "train_annotations", "val_annotations", "train_images", "val_images"))


def run() -> None:
    """Console-script entry point (`sdl-prep-coco`)."""
    cli.run(main, define_flags)


if __name__ == "__main__":
    run()
