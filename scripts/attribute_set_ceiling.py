r"""ZSL/GZSL mAP of word-level oracles on an attribute set (`scripts/make_attribute_set.py` output).

How far a model could get on such a set if it recognised every object's two words perfectly but
did not know which words belong to the same object (a "bag of words": what one direction per
image can hold at best). For the label "a b" and a test image:

  bag_of_words      (#objects whose label has word a + #objects whose label has word b)
                    / sqrt(#objects): a per-image normalised score
  bag_of_words_raw  the same without the division (scores not comparable across images)

A seeded 1e-6 jitter breaks ties at random. Protocol and metrics are those of `sdl_tf.evaluate`
(`sdl_tf.evaluation.metrics.evaluate_scores`: ZSL ranks the unseen labels, GZSL all labels).

Usage:
  python scripts/attribute_set_ceiling.py /tmp/attr_ts0 [/tmp/attr_pc0 ...]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from sdl_tf.evaluation.metrics import evaluate_scores  # noqa: E402 (repo root on sys.path first)

MODES = ("bag_of_words", "bag_of_words_raw")


def read_set(path: str) -> tuple[list[str], list[bool], list[list[str]]]:
    """(label names, unseen flags, test images' label lists) of a written attribute set."""
    with open(os.path.join(path, "unseen.txt"), encoding="utf-8") as f:
        unseen = {line.strip() for line in f if line.strip()}
    images = {}
    for split in ("train", "test"):
        with open(os.path.join(path, f"{split}.csv"), encoding="utf-8", newline="") as f:
            images[split] = [row["labels"].split("|") for row in csv.DictReader(f)]
    names = sorted({n for split in images.values() for labels in split for n in labels} | unseen)
    return names, [n in unseen for n in names], images["test"]


def oracle_scores(names: list[str], images: list[list[str]], mode: str,
                  seed: int = 0) -> np.ndarray:
    """(N, C) bag-of-words scores (module docstring) of the test images."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    words = [n.split() for n in names]
    scores = np.zeros((len(images), len(names)))
    for i, labels in enumerate(images):
        objects = [label.split() for label in labels]
        for c, (a, b) in enumerate(words):
            scores[i, c] = sum(o[0] == a for o in objects) + sum(o[1] == b for o in objects)
        if mode == "bag_of_words":
            scores[i] /= np.sqrt(len(objects))
    return scores + 1e-6 * np.random.default_rng(seed).random(scores.shape)


def ceiling(path: str) -> dict[str, tuple[float, float]]:
    """{mode: (ZSL mAP, GZSL mAP)} in percent for the set written to `path`."""
    names, unseen, images = read_set(path)
    index = {n: c for c, n in enumerate(names)}
    labels = np.zeros((len(images), len(names)), np.int8)
    for i, image_labels in enumerate(images):
        labels[i, [index[n] for n in image_labels]] = 1
    unseen_indices = np.flatnonzero(unseen)
    out = {}
    for mode in MODES:
        r = evaluate_scores(oracle_scores(names, images, mode), labels, unseen_indices)
        out[mode] = (r["zsl"]["mAP"], r["gzsl"]["mAP"])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("sets", nargs="+", help="directories written by make_attribute_set.py")
    a = p.parse_args(argv)
    for path in a.sets:
        result = ceiling(path)
        print(path + ": " + "; ".join(f"{m} ZSL {z:.1f} / GZSL {g:.1f}"
                                      for m, (z, g) in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
