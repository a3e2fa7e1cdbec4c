"""The source of the mosaic benchmark: an ImageNet-layout folder's classes, their label names
and their photos (see `data_prep.mosaics` for the layout and the naming rules).

`read_classes` lists the classes (wnid, synonyms, photo paths), `choose_names` gives each class
one unique label name that has a word vector (or drops it), and `split_photos` splits a class's
photos into a train and a test part by a seeded hash of each file name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

from data_prep.common import DataPrepError

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
_FORBIDDEN_IN_NAMES = ("|", ";")  # the manifest's label separators


@dataclasses.dataclass(frozen=True)
class ImageClass:
    """One class of the source folder."""

    wnid: str
    synonyms: tuple[str, ...]  # as in the class-name file, first = the usual name
    photos: tuple[str, ...]    # absolute paths, sorted


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
                raise DataPrepError(f"{path}:{lineno}: expected 'wnid<TAB>name1, name2, "
                                    f"...', got {line!r}")
            wnid = wnid.strip()
            if wnid in out:
                raise DataPrepError(f"{path}:{lineno}: wnid {wnid!r} listed twice")
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
        raise DataPrepError(f"{train}: not a directory; --imagenet_dir must hold "
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
            raise DataPrepError(f"{words_file}: no name for classes {unnamed[:10]}"
                                f"{' ...' if len(unnamed) > 10 else ''}")
    else:
        raise DataPrepError(
            f"{imagenet_dir}: no class-name file; expected {tsv} ('wnid<TAB>name1, name2, ...') "
            f"or {wnids_file} + {words_file} (Tiny-ImageNet)")
    classes = []
    for wnid in sorted(wnids):
        class_dir = os.path.join(train, wnid)
        if not os.path.isdir(class_dir):
            raise DataPrepError(f"{class_dir}: class {wnid} (listed in {names_file}) "
                                "has no folder")
        classes.append(ImageClass(wnid, names[wnid], tuple(_class_dir_photos(class_dir))))
    if not classes:
        raise DataPrepError(f"{names_file}: lists no class")
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
# Photos
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
