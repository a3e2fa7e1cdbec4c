"""The label space: label names, their seen/unseen flags and l2-normalised word vectors.

One loader for training, evaluation, export and prediction. Files (no pickle anywhere):
  `<dir>/labels.json`        {"schema_version": 1, "labels": [{"name", "unseen"}, ...],
                              "dim": d, "source": ...}
  `<dir>/label_vectors.npy`  float32 (C, d), rows l2-normalised (the paper's section 4.2:
                              "The word vectors are l2 normalized").
Label indices everywhere in the project are indices into `names`.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os

import numpy as np

from sdl_tf import errors
from sdl_tf.utils import atomic_io, gfile_utils

LABELS_FILE = "labels.json"
VECTORS_FILE = "label_vectors.npy"
SCHEMA_VERSION = 1
_NORM_TOL = 1e-3


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Row-wise l2 normalisation of a (n, d) array to float32; zero rows raise ValueError."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    if np.any(norms == 0) or not np.all(np.isfinite(norms)):
        bad = np.flatnonzero((norms[:, 0] == 0) | ~np.isfinite(norms[:, 0]))
        raise ValueError(f"cannot l2-normalise zero or non-finite vector rows {bad.tolist()}")
    return (vectors / norms).astype(np.float32)


class LabelFileError(errors.SDLError, ValueError):
    """A label-space directory whose labels.json / label_vectors.npy cannot be read."""


@dataclasses.dataclass(frozen=True)
class LabelSpace:
    """All C labels in a fixed order, their unseen flags and (C, d) l2-normalised vectors.

    Attributes:
      names: the C label names; the label index everywhere is the position in this tuple.
      unseen: (C,) bool, True for labels held out of training (zero-shot).
      vectors: (C, d) float32 with unit rows.
      source: free text naming where the vectors came from (recorded in labels.json).
    """

    names: tuple[str, ...]
    unseen: np.ndarray
    vectors: np.ndarray
    source: str = ""

    def __post_init__(self):
        names = tuple(str(n) for n in self.names)
        unseen = np.asarray(self.unseen, dtype=bool).reshape(-1)
        vectors = np.asarray(self.vectors)
        if vectors.ndim != 2:
            raise ValueError(f"label vectors must be (C, d), got shape {vectors.shape}")
        if not (len(names) == unseen.shape[0] == vectors.shape[0]):
            raise ValueError(
                f"{len(names)} names, {unseen.shape[0]} unseen flags and {vectors.shape[0]} "
                "vectors: the counts must match"
            )
        dupes = sorted(n for n, k in collections.Counter(names).items() if k > 1)
        if dupes:
            raise ValueError(f"duplicate label names: {dupes}")
        vectors = vectors.astype(np.float32)
        norms = np.linalg.norm(vectors, axis=1)
        if vectors.shape[0] and not np.allclose(norms, 1.0, atol=_NORM_TOL):
            raise ValueError("label vectors must be l2-normalised (use LabelSpace.create)")
        unseen.setflags(write=False)
        vectors.setflags(write=False)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "unseen", unseen)
        object.__setattr__(self, "vectors", vectors)

    @classmethod
    def create(cls, names, unseen, vectors, source: str = "") -> LabelSpace:
        """Builds a label space, l2-normalising `vectors` (n, d) first."""
        return cls(tuple(names), np.asarray(unseen, bool), l2_normalize(vectors), source)

    # -- properties ---------------------------------------------------------------------------
    @property
    def num_labels(self) -> int:
        return len(self.names)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def seen_indices(self) -> np.ndarray:
        """(S,) int64 ascending indices of the seen labels."""
        return np.flatnonzero(~self.unseen).astype(np.int64)

    @property
    def unseen_indices(self) -> np.ndarray:
        """(U,) int64 ascending indices of the unseen labels."""
        return np.flatnonzero(self.unseen).astype(np.int64)

    @property
    def seen_names(self) -> tuple[str, ...]:
        return tuple(self.names[i] for i in self.seen_indices)

    @property
    def unseen_names(self) -> tuple[str, ...]:
        return tuple(self.names[i] for i in self.unseen_indices)

    @property
    def seen_vectors(self) -> np.ndarray:
        """(S, d) float32."""
        return self.vectors[self.seen_indices]

    @property
    def unseen_vectors(self) -> np.ndarray:
        """(U, d) float32."""
        return self.vectors[self.unseen_indices]

    def index(self, name: str) -> int:
        """Index of `name`; KeyError naming the label if absent."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"label {name!r} is not in the label space") from None

    def name_to_index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}

    # -- files --------------------------------------------------------------------------------
    def save(self, directory: str) -> None:
        """Writes labels.json and label_vectors.npy into `directory`, each atomically.

        The vectors are written first and labels.json last, so a present labels.json always
        has matching vectors next to it (load() also checks the shapes agree).
        """
        gfile_utils.makedirs(directory)
        atomic_io.atomic_write(
            os.path.join(directory, VECTORS_FILE),
            lambda f: np.save(f, np.ascontiguousarray(self.vectors), allow_pickle=False),
        )
        meta = {
            "schema_version": SCHEMA_VERSION,
            "labels": [
                {"name": n, "unseen": bool(u)} for n, u in zip(self.names, self.unseen, strict=True)
            ],
            "dim": self.dim,
            "num_labels": self.num_labels,
            "num_seen": int((~self.unseen).sum()),
            "num_unseen": int(self.unseen.sum()),
            "source": self.source,
        }
        atomic_io.atomic_write(
            os.path.join(directory, LABELS_FILE),
            lambda f: f.write(json.dumps(meta, indent=1, ensure_ascii=False) + "\n"),
            mode="w",
        )

    @classmethod
    def load(cls, directory: str) -> LabelSpace:
        """Loads a label space written by `save` (clear errors naming the bad file/field)."""
        labels_path = os.path.join(directory, LABELS_FILE)
        vectors_path = os.path.join(directory, VECTORS_FILE)
        for path in (labels_path, vectors_path):
            if not gfile_utils.isfile(path):
                raise errors.MissingPathError(f"label space file {path!r} not found")
        try:
            with gfile_utils.open_file(labels_path) as f:
                meta = json.load(f)
        except json.JSONDecodeError as e:
            raise LabelFileError(
                f"{labels_path}: invalid JSON at line {e.lineno}: {e.msg}") from None
        if not isinstance(meta, dict) or "labels" not in meta:
            raise LabelFileError(f"{labels_path}: expected an object with a 'labels' list")
        version = meta.get("schema_version")
        if version != SCHEMA_VERSION:
            raise LabelFileError(
                f"{labels_path}: schema_version {version!r}, this code reads {SCHEMA_VERSION}"
            )
        names, unseen = [], []
        for i, entry in enumerate(meta["labels"]):
            if not isinstance(entry, dict) or "name" not in entry or "unseen" not in entry:
                raise LabelFileError(f"{labels_path}: labels[{i}] needs 'name' and 'unseen'")
            names.append(str(entry["name"]))
            unseen.append(bool(entry["unseen"]))
        with gfile_utils.open_file(vectors_path, "rb") as f:
            vectors = np.load(f, allow_pickle=False)
        if vectors.ndim != 2 or vectors.shape[0] != len(names):
            raise LabelFileError(
                f"{vectors_path}: shape {vectors.shape} does not match the {len(names)} labels "
                f"in {labels_path}"
            )
        if "dim" in meta and int(meta["dim"]) != vectors.shape[1]:
            raise LabelFileError(
                f"{labels_path}: dim {meta['dim']} but {vectors_path} has {vectors.shape[1]}"
            )
        try:
            return cls(tuple(names), np.array(unseen, bool), vectors, str(meta.get("source", "")))
        except ValueError as e:
            raise LabelFileError(f"{directory}: {e}") from None
