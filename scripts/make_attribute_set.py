r"""Writes a synthetic "<attribute> <object>" zero-shot set as a user would: images + CSV manifests.

Tuning data for the from-scratch demo recipe (configs/demo.flags), built like a user's own set
for `data_prep.manifest`: 64x64 JPEGs with 1-3 objects, labels "<word1> <word2>" from one of
four attribute families, 15 seen / 5 unseen labels, random Gaussian word vectors in a word2vec
text file (a label's vector is then the mean of its two words' vectors, `data_prep.labels`).

Families (4 x 5 = 20 labels each; "random" attributes vary but carry no label information):
  texture_shape    solid/striped/dotted/checkered x 5 shapes, colour random
  colour_shape     red/green/blue/yellow x 5 shapes
  size_shape       tiny/small/medium/large x 5 shapes, colour random
  pattern_colour   solid/striped/dotted/checkered x red/green/blue/yellow/purple, shape random

Splits: train images only show seen labels; every test image shows at least one unseen label
(its other objects are drawn from all labels). The 5 unseen labels are drawn (seeded) so that
every word still occurs in at least two seen labels.

Usage:
  python scripts/make_attribute_set.py --family=texture_shape --seed=0 --out=/tmp/attr_ts0
  # -> /tmp/attr_ts0/{images/, train.csv, test.csv, unseen.txt, vectors.txt} and, converted
  #    with data_prep.manifest, the training directory /tmp/attr_ts0/data
  python -m sdl_tf.train --flagfile=configs/demo.flags --data_dir=/tmp/attr_ts0/data \
      --model_dir=/tmp/attr_ts0/sdl --val_fraction=0.1
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from data_prep import demo  # noqa: E402 (repo root on sys.path first)

SHAPES = ("circle", "square", "triangle", "cross", "diamond")
TEXTURES = ("solid", "striped", "dotted", "checkered")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (50, 90, 230),
           "yellow": (240, 210, 40), "purple": (150, 60, 190)}
SIZES = {"tiny": 0.18, "small": 0.26, "medium": 0.34, "large": 0.44}  # side / image side
FAMILIES = {
    "texture_shape": (TEXTURES, SHAPES),
    "colour_shape": (tuple(COLOURS)[:4], SHAPES),
    "size_shape": (tuple(SIZES), SHAPES),
    "pattern_colour": (TEXTURES, tuple(COLOURS)),
}
NUM_UNSEEN = 5


def label_names(family: str) -> list[str]:
    """The family's 20 labels, attribute-major ("solid circle", "solid square", ...)."""
    first, second = FAMILIES[family]
    return [f"{a} {b}" for a in first for b in second]


def pick_unseen(names: list[str], rng: np.random.Generator) -> list[bool]:
    """5 unseen labels such that every word keeps at least two seen labels."""
    while True:
        unseen = np.zeros(len(names), bool)
        unseen[rng.choice(len(names), NUM_UNSEEN, replace=False)] = True
        words = {w for n in names for w in n.split()}
        seen_count = {w: sum(w in n.split() for n, u in zip(names, unseen, strict=True)
                                     if not u)
                      for w in words}
        if min(seen_count.values()) >= 2:
            return unseen.tolist()


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated random colour (random hue): colour carries no label information."""
    hue = rng.uniform(0, 6)
    x = 1 - abs(hue % 2 - 1)
    rgb = [(1, x, 0), (x, 1, 0), (0, 1, x), (0, x, 1), (x, 0, 1), (1, 0, x)][int(hue) % 6]
    return 40 + 190 * np.array(rgb)


def _texture_mask(texture: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size) bool: where the texture paints the object colour (elsewhere: dark)."""
    yy, xx = np.mgrid[:size, :size]
    oy, ox = rng.integers(0, 8, size=2)
    if texture == "solid":
        return np.ones((size, size), bool)
    if texture == "striped":
        return (yy + oy) % 4 < 2
    if texture == "dotted":
        return ~(((yy + oy) % 5 < 2) & ((xx + ox) % 5 < 2))  # dark 2x2 dots every 5 px
    if texture == "checkered":
        return ((yy + oy) // 3 + (xx + ox) // 3) % 2 == 0
    raise ValueError(f"unknown texture {texture!r}")


def render(rng: np.random.Generator, family: str, labels: list[str], size: int) -> Image.Image:
    """Draws one object per label name on a noisy grey background."""
    grey = rng.uniform(70, 190)
    background = grey + rng.normal(0, 10, size=3) + rng.normal(0, 8, size=(size, size, 3))
    canvas = np.clip(background, 0, 255)
    boxes = []
    for name in labels:
        a, b = name.split()
        shape = b if b in SHAPES else SHAPES[int(rng.integers(len(SHAPES)))]
        if a in COLOURS or b in COLOURS:
            colour = np.array(COLOURS[a if a in COLOURS else b], float) + rng.normal(0, 12, 3)
        else:
            colour = _random_colour(rng)
        frac = SIZES[a] + rng.uniform(-0.02, 0.02) if a in SIZES else rng.uniform(0.28, 0.42)
        side = frac * size
        for _ in range(30):  # rejection-sample a placement that keeps each object visible
            x0, y0 = rng.uniform(0, size - side, size=2)
            box = (x0, y0, x0 + side, y0 + side)
            if all(demo.overlap(box, other) < 0.15 for other in boxes):
                break
        boxes.append(box)
        mask_img = Image.new("L", (size, size), 0)
        demo.draw_shape(ImageDraw.Draw(mask_img), shape, box, 255)
        mask = np.asarray(mask_img) > 127
        paint = _texture_mask(a, size, rng) if a in TEXTURES else np.ones((size, size), bool)
        fill = np.where(paint[..., None], colour, 0.3 * colour)
        canvas = np.where(mask[..., None], fill, canvas)
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), "RGB")


def write_vectors(path: str, words: list[str], dim: int, rng: np.random.Generator) -> None:
    """Random Gaussian word vectors in word2vec text format."""
    vectors = rng.normal(size=(len(words), dim))
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{len(words)} {dim}\n")
        for word, vec in zip(words, vectors, strict=True):
            f.write(word + " " + " ".join(f"{v:.6f}" for v in vec) + "\n")


def make(out: str, family: str, seed: int, num_train: int = 1200, num_test: int = 300,
         image_size: int = 64, dim: int = 300) -> None:
    """Writes images/, train.csv, test.csv, unseen.txt and vectors.txt to `out`."""
    names = label_names(family)
    vec_seq, unseen_seq, train_seq, test_seq = np.random.SeedSequence(seed).spawn(4)
    unseen = pick_unseen(names, np.random.default_rng(unseen_seq))
    words = list(dict.fromkeys(w for n in names for w in n.split()))
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    write_vectors(os.path.join(out, "vectors.txt"), words, dim, np.random.default_rng(vec_seq))
    with open(os.path.join(out, "unseen.txt"), "w", encoding="utf-8") as f:
        f.write("".join(n + "\n" for n, u in zip(names, unseen, strict=True) if u))
    seen_idx = [i for i, u in enumerate(unseen) if not u]
    unseen_idx = [i for i, u in enumerate(unseen) if u]
    for split, count, seq in (("train", num_train, train_seq), ("test", num_test, test_seq)):
        rng = np.random.default_rng(seq)
        rows = []
        for i in range(count):
            k = int(rng.integers(1, 4))
            if split == "train":
                idx = [int(v) for v in rng.choice(seen_idx, k, replace=False)]
            else:
                first = int(rng.choice(unseen_idx))
                rest = [j for j in range(len(names)) if j != first]
                idx = [first] + [int(v) for v in rng.choice(rest, k - 1, replace=False)]
            rel = f"images/{split}_{i:05d}.jpg"
            render(rng, family, [names[j] for j in idx], image_size).save(
                os.path.join(out, rel), "JPEG", quality=95)
            rows.append((rel, "|".join(names[j] for j in idx)))
        with open(os.path.join(out, f"{split}.csv"), "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", "labels"])
            w.writerows(rows)


def convert(out: str) -> None:
    """Runs `data_prep.manifest` on the written files -> `out/data`."""
    from data_prep import manifest

    manifest.prepare(manifest.ManifestConfig(
        output_dir=os.path.join(out, "data"), image_root=out,
        splits=(("train", os.path.join(out, "train.csv")),
                ("test", os.path.join(out, "test.csv"))),
        unseen_labels=os.path.join(out, "unseen.txt"),
        word_vectors=os.path.join(out, "vectors.txt"), word_vectors_format="word2vec_text",
        progress=False))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", choices=sorted(FAMILIES), required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--num_train", type=int, default=1200)
    p.add_argument("--num_test", type=int, default=300)
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--dim", type=int, default=300, help="word-vector size")
    p.add_argument("--convert", action=argparse.BooleanOptionalAction, default=True,
                   help="also run data_prep.manifest -> OUT/data")
    a = p.parse_args(argv)
    make(a.out, a.family, a.seed, a.num_train, a.num_test, a.image_size, a.dim)
    if a.convert:
        convert(a.out)
    print(f"{a.family} seed {a.seed} -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
