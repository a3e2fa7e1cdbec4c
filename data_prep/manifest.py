r"""Converts a user's own data, described by CSV or JSONL manifests, to shards + a label space.

One manifest per split; image paths are relative to `--image_root` (absolute paths also work):

  CSV (header required; labels separated by '|' or ';'; optional `negatives` column for
  verified-negative labels):
      image,labels,negatives
      photos/0001.jpg,dog|frisbee,cat
      photos/0002.jpg,traffic light;car,

  JSONL (one object per line; labels/negatives as lists or '|'/';'-separated strings):
      {"image": "photos/0001.jpg", "labels": ["dog", "frisbee"], "negatives": ["cat"]}

  Unseen labels file: one label per line ('#' comments), the zero-shot labels.

The label space is every label named in any manifest or in the unseen file, sorted by name.
Image ids are the image paths as written in the manifest.

Every listed image becomes a record (also one without positives); accounting per split, in
`<split>-summary.json`: `details.images_in_manifest` = `num_examples` + `num_skipped` (files
the writer could not use, listed with their reason), once every part has finished.

Usage:
  python -m data_prep.manifest --output_dir=DIR --image_root=ROOT \
      --split=train=train.csv --split=test=test.jsonl --unseen_labels=unseen.txt \
      --word_vectors=cc.en.300.bin

Inputs (manifests, images, word vectors) are read locally; --output_dir may be gs:// etc.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import sys
from collections.abc import Sequence

from absl import flags

from data_prep import common, converters, labels, shards
from sdl_tf import cli, config_flags

_SEPARATORS = re.compile(r"[|;]")
DEFAULT_IMAGES_PER_SHARD = 2000


@dataclasses.dataclass(frozen=True)
class ManifestEntry:
    """One manifest row: where it came from and its label names."""

    image: str
    labels: tuple[str, ...]
    negatives: tuple[str, ...]
    source: str  # "<file>:<line>" for error messages


@dataclasses.dataclass(frozen=True)
class ManifestConfig:
    """Options of `prepare` (see the module docstring and `data_prep.common.CommonOptions`)."""

    output_dir: str
    splits: tuple[tuple[str, str], ...] = config_flags.field(
        help="(split name, manifest path) pairs, from --split=NAME=MANIFEST.", flag=False)
    image_root: str = config_flags.field("", "Directory the manifest image paths are relative to.")
    unseen_labels: str | None = config_flags.field(
        None, "File naming the unseen labels, one per line.")
    word_vectors: str | None = None
    word_vectors_format: str = "auto"
    label_vectors: str | None = None
    drop_missing_labels: bool = False
    num_shards: int | None = None  # per split; default: one per DEFAULT_IMAGES_PER_SHARD images
    max_side: int | None = None
    num_workers: int | None = None
    num_parts: int = 1
    part_index: int = 0
    progress: bool = True


def _split_labels(value, where: str, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items = _SEPARATORS.split(value)
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = value
    else:
        raise common.DataPrepError(f"{where}: field '{field}' must be a string or a list of "
                                   f"strings, got {value!r}")
    return tuple(dict.fromkeys(s.strip() for s in items if s.strip()))


def _entry(image, labels, negatives, where: str) -> ManifestEntry:
    if not isinstance(image, str) or not image.strip():
        raise common.DataPrepError(f"{where}: field 'image' is empty or not a string")
    pos = _split_labels(labels, where, "labels")
    neg = _split_labels(negatives, where, "negatives")
    both = sorted(set(pos) & set(neg))
    if both:
        raise common.DataPrepError(f"{where}: labels {both} are both positive and negative")
    return ManifestEntry(image.strip(), pos, neg, where)


def read_manifest(path: str) -> list[ManifestEntry]:
    """Reads a CSV (`.csv`, `.tsv`) or JSONL (`.jsonl`, `.json`, `.ndjson`) manifest.

    Raises:
      DataPrepError: naming the file and line of a malformed row, a missing column/field or an
        image listed twice.
    """
    if not os.path.isfile(path):
        raise common.DataPrepError(f"manifest {path!r} not found")
    ext = os.path.splitext(path)[1].lower()
    entries = []
    if ext in (".csv", ".tsv"):
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if ext == ".tsv" else ",")
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            for column in ("image", "labels"):
                if column not in header:
                    raise common.DataPrepError(
                        f"{path}:1: missing column '{column}' (header is {header}; expected "
                        "image,labels[,negatives])")
            for row in reader:
                where = f"{path}:{reader.line_num}"
                if None in row:
                    raise common.DataPrepError(f"{where}: more fields than header columns "
                                               "(quote labels containing commas)")
                entries.append(_entry(row["image"], row["labels"], row.get("negatives"), where))
    elif ext in (".jsonl", ".json", ".ndjson"):
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise common.DataPrepError(f"{where}: invalid JSON: {e.msg}") from None
                if not isinstance(obj, dict):
                    raise common.DataPrepError(f"{where}: expected a JSON object per line")
                for field in ("image", "labels"):
                    if field not in obj:
                        raise common.DataPrepError(f"{where}: missing field '{field}'")
                entries.append(_entry(obj["image"], obj["labels"], obj.get("negatives"), where))
    else:
        raise common.DataPrepError(f"{path}: unknown manifest type {ext!r}; use .csv, .tsv or "
                                   ".jsonl")
    seen: dict[str, str] = {}
    for e in entries:
        if e.image in seen:
            raise common.DataPrepError(f"{e.source}: image {e.image!r} already listed at "
                                       f"{seen[e.image]}")
        seen[e.image] = e.source
    return entries


def read_label_list(path: str) -> list[str]:
    """One label per line; blank lines and '#' comments ignored; duplicates are an error."""
    if not os.path.isfile(path):
        raise common.DataPrepError(f"label list {path!r} not found")
    labels: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            name = line.strip()
            if not name or name.startswith("#"):
                continue
            if name in labels:
                raise common.DataPrepError(f"{path}:{lineno}: label {name!r} repeated (first at "
                                           f"line {labels[name]})")
            labels[name] = lineno
    return list(labels)


def prepare(config: ManifestConfig) -> dict:
    """Reads the manifests, builds and saves the label space, writes every split.

    Returns:
      {split: summary} (see `data_prep.shards.write_split`); each summary's `details` holds
      `images_in_manifest` = `num_examples` + `num_skipped` (every listed image is written or
      skipped with a reason, none is dropped).
    """
    if not config.splits:
        raise common.DataPrepError("give at least one --split=NAME=MANIFEST")
    names = [s for s, _ in config.splits]
    if len(set(names)) != len(names):
        raise common.DataPrepError(f"split names repeated: {names}")
    manifests = {split: read_manifest(path) for split, path in config.splits}
    unseen = set(read_label_list(config.unseen_labels)) if config.unseen_labels else set()
    all_names = set(unseen)
    for entries in manifests.values():
        for e in entries:
            all_names.update(e.labels)
            all_names.update(e.negatives)
    label_names = sorted(all_names)
    if not label_names:
        raise common.DataPrepError("the manifests name no labels")
    space, dropped = labels.build_label_space(
        label_names, [n in unseen for n in label_names], word_vectors=config.word_vectors,
        word_vectors_format=config.word_vectors_format, label_vectors=config.label_vectors,
        drop_missing=config.drop_missing_labels)
    space.save(config.output_dir)
    index = space.name_to_index()
    summaries = {}
    for split, path in config.splits:
        entries = manifests[split]
        records = []
        with_unseen = 0
        for e in entries:
            pos = tuple(index[n] for n in e.labels if n in index)
            neg = tuple(index[n] for n in e.negatives if n in index)
            with_unseen += any(space.unseen[i] for i in pos)
            records.append(common.ImageRecord(
                e.image, os.path.join(config.image_root, e.image), pos, neg))
        num_shards = config.num_shards or max(1, math.ceil(len(records) /
                                                           DEFAULT_IMAGES_PER_SHARD))
        extra = {
            "manifest": os.path.abspath(path),
            "images_in_manifest": len(entries),
            "image_root": os.path.abspath(config.image_root),
            "dropped_labels": dropped,
            "images_with_unseen_positives": with_unseen,
            "images_without_positives": sum(1 for r in records if not r.positives),
        }
        summaries[split] = shards.write_split(
            records, config.output_dir, split, num_shards=num_shards,
            source=f"manifest {os.path.basename(path)}", max_side=config.max_side,
            num_workers=config.num_workers, num_parts=config.num_parts,
            part_index=config.part_index, progress=config.progress, extra=extra)
        if split == "train" and with_unseen and config.progress:
            sys.stderr.write(
                f"note: {with_unseen} train images have unseen positives; the reader never "
                "uses unseen labels as training targets, but the images are seen in training\n")
    return summaries


def _parse_split_flags(values) -> tuple[tuple[str, str], ...]:
    out = []
    for v in values or []:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise common.DataPrepError(f"--split={v!r}: expected NAME=MANIFEST, e.g. "
                                       "train=train.csv")
        out.append((name, path))
    return tuple(out)


def define_flags() -> None:
    """Defines this entry point's flags (plus the common ones) on the global absl FLAGS."""
    if "split" not in flags.FLAGS:
        flags.DEFINE_multi_string("split", None,
                                  "NAME=MANIFEST (.csv/.tsv/.jsonl); repeat per split.")
    converters.define_flags(ManifestConfig, common_flags=True)


def main(argv: Sequence[str]) -> int:
    # The common fields (output_dir, word_vectors, ...) are read from the common flags.
    return converters.main(argv, ManifestConfig, prepare,
                           splits=_parse_split_flags(flags.FLAGS.split))


def run() -> None:
    """Console-script entry point (`sdl-prep-manifest`)."""
    cli.run(main, define_flags)


if __name__ == "__main__":
    run()
