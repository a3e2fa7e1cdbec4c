"""Which mosaics to draw: the seen/unseen class folds and, per mosaic, its classes and the photo
of each tile (see `data_prep.mosaics` for the protocol).

Everything is drawn from generators seeded per purpose (`[seed, 1]` the folds, `[seed, 2]` the
test mosaics, `[seed, 3, k]` fold k's train mosaics, `[seed, 4]` the all-classes set), so
changing `--num_train` never changes the test set.
"""

from __future__ import annotations

import dataclasses

import numpy as np

TILES_PER_SIDE = 2
TILES = TILES_PER_SIDE * TILES_PER_SIDE


@dataclasses.dataclass(frozen=True)
class Mosaic:
    """One planned mosaic: its file (relative to the output dir), classes and tile photos."""

    image: str
    classes: tuple[int, ...]  # indices into the kept classes, ascending
    photos: tuple[int, ...]   # TILES photo indices, row-major tile order


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



@dataclasses.dataclass(frozen=True)
class MosaicPlan:
    """Every mosaic to draw: the test set shared by the folds and each fold's train set."""

    test: list[Mosaic]
    fold_names: list[str]      # "fold0", "fold1", ... and "all" for the all-classes set
    unseen: list[np.ndarray]   # per fold, its unseen class indices (ascending; none for "all")
    trains: list[list[Mosaic]]  # per fold, its train mosaics (seen classes only)


def plan_mosaics(num_classes: int, *, num_unseen: int, folds: int, seed: int,
                 train_pools: list[np.ndarray], test_pools: list[np.ndarray], num_train: int,
                 num_test: int, supervised: bool) -> MosaicPlan:
    """The folds' unseen classes and every mosaic of the benchmark (nothing is drawn yet).

    Args:
      num_classes: the classes, indices 0 .. num_classes - 1.
      num_unseen: unseen classes per fold.
      folds: number of seen/unseen splits.
      seed: the seed of every generator (see the module docstring).
      train_pools, test_pools: per class, the photo indices its train / test tiles use.
      num_train: train mosaics per fold.
      num_test: test mosaics.
      supervised: also plan the "all" set: train mosaics of every class, no unseen class.
    """
    unseen_per_fold = fold_unseen(num_classes, num_unseen, folds, seed)
    test = sample_mosaics(np.random.default_rng([seed, 2]), np.arange(num_classes),
                          test_pools, num_test, "images/test")
    trains = []
    for k, unseen in enumerate(unseen_per_fold):
        seen = np.setdiff1d(np.arange(num_classes), unseen)
        trains.append(sample_mosaics(np.random.default_rng([seed, 3, k]), seen,
                                     train_pools, num_train, f"images/fold{k}/train"))
    fold_names = [f"fold{k}" for k in range(len(unseen_per_fold))]
    if supervised:  # every class seen: the folds' supervised upper bound
        unseen_per_fold = [*unseen_per_fold, np.zeros(0, np.int64)]
        trains.append(sample_mosaics(np.random.default_rng([seed, 4]), np.arange(num_classes),
                                     train_pools, num_train, "images/all/train"))
        fold_names.append("all")
    return MosaicPlan(test, fold_names, unseen_per_fold, trains)


def classes_histogram(mosaics: list[Mosaic]) -> dict[str, int]:
    """{number of classes: number of mosaics showing that many}."""
    counts: dict[str, int] = {}
    for m in mosaics:
        counts[str(len(m.classes))] = counts.get(str(len(m.classes)), 0) + 1
    return dict(sorted(counts.items()))
