"""Tests for data_prep.mosaic_sampling: the seen/unseen folds and the planned mosaics."""

import numpy as np

from data_prep import mosaic_sampling as sampling

NUM_CLASSES = 10
# Class c's train photos are 100c .. 100c+4, its test photos 100c+50 .. 100c+52.
TRAIN_POOLS = [np.arange(100 * c, 100 * c + 5) for c in range(NUM_CLASSES)]
TEST_POOLS = [np.arange(100 * c + 50, 100 * c + 53) for c in range(NUM_CLASSES)]


def _plan(seed=0, num_train=30, supervised=False):
    return sampling.plan_mosaics(NUM_CLASSES, num_unseen=3, folds=3, seed=seed,
                                 train_pools=TRAIN_POOLS, test_pools=TEST_POOLS,
                                 num_train=num_train, num_test=20, supervised=supervised)


def _check(mosaic, pools):
    assert 1 <= len(mosaic.classes) <= sampling.TILES and len(mosaic.photos) == sampling.TILES
    assert {p // 100 for p in mosaic.photos} == set(mosaic.classes)  # every class on a tile
    assert all(p in pools[p // 100] for p in mosaic.photos)


def test_folds_and_mosaics_follow_the_protocol():
    plan = _plan()
    assert plan.fold_names == ["fold0", "fold1", "fold2"]
    # 3 folds x 3 unseen <= 10 classes: disjoint unseen sets.
    assert len(set(np.concatenate(plan.unseen).tolist())) == 9
    for unseen, train in zip(plan.unseen, plan.trains, strict=True):
        assert len(train) == 30
        for m in train:
            _check(m, TRAIN_POOLS)
            assert not set(m.classes) & set(unseen.tolist())  # seen classes only
    assert len(plan.test) == 20 and plan.test[0].image == "images/test/000000.jpg"
    for m in plan.test:
        _check(m, TEST_POOLS)
    assert sum(sampling.classes_histogram(plan.test).values()) == 20


def test_seeded_per_purpose_and_supervised_set():
    plan = _plan()
    again = _plan()
    assert (again.test, again.trains) == (plan.test, plan.trains)
    # More train mosaics never change the test set or the folds.
    more = _plan(num_train=40)
    assert more.test == plan.test and all(
        (a == b).all() for a, b in zip(more.unseen, plan.unseen, strict=True))
    assert _plan(seed=1).test != plan.test
    every = _plan(supervised=True)
    assert every.fold_names[-1] == "all" and len(every.unseen[-1]) == 0
    assert every.trains[-1][0].image.startswith("images/all/train/")
    assert every.test == plan.test and every.trains[:3] == plan.trains
