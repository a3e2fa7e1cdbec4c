r"""A synthetic, deterministic zero-shot multi-label data set small enough for 2 CPU cores.

Each RGB image (default 64x64) shows 1-8 objects (uniform count) on a noisy grey background:
1-3 large objects placed freely, 4-8 smaller ones on a jittered 3x3 grid. An object is a
colour x shape combination and its label is named by the combination ("red circle"). Images
with 7-8 objects have more than 6 labels: the "diverse" subset of paper Table 4.

Attribute swaps: in `swap_fraction` of the images with two or more objects, two of the objects
swap attributes ("red circle" + "blue square") while the swapped combinations ("red square",
"blue circle") are absent. The positives' label vectors then sum to (almost exactly) the
negatives' sum, so no single direction (M = 1, Fast0Tag) can rank both positives above both
negatives, while M >= 2 directions can (paper section 3.1, eq. 1 and Figure 1).

Unseen labels: a 2x2 block (red, green) x (circle, square) plus blue triangle, so swaps among
unseen labels exist in ZSL too; every colour and shape word still occurs in seen labels:

  train       only seen combinations
  val, test   at least one unseen combination per image (others drawn from all labels), so
              ZSL evaluates the unseen labels and GZSL all of them; half of the test swaps are
              the unseen block's (red circle + green square, or red square + green circle)

Attribute word vectors (random Gaussian, seeded) are written as a word2vec *text* file
(`attribute_vectors.txt`) and the label space is built from it through the same gensim path as
the real data sets (`build_label_space`): a label's vector is the mean of its two words' unit
vectors, which is what gives an unseen combination a meaningful vector (paper section 3: seen
and unseen labels share one word-vector space).

Usage:
  python -m data_prep.demo --output_dir=/tmp/sdl_demo [--seed=0 --num_train=3000 ...]

Output: labels.json, label_vectors.npy, attribute_vectors.txt, train/val/test shards and
summaries, and samples/*.jpg (+ samples/ground_truth.json) for the tagging demo.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw

from data_prep import common, converters
from data_prep.labels import build_label_space
from data_prep.shards import write_split
from sdl_tf import cli
from sdl_tf.config_flags import field
from sdl_tf.utils import gfile_utils

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (50, 90, 230),
    "yellow": (240, 210, 40),
    "purple": (150, 60, 190),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "diamond")
VECTORS_FILE = "attribute_vectors.txt"


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Options of the demo set (`configs/demo.flags` trains on it in ~330 CPU-seconds)."""

    output_dir: str = field(help="Where to write the demo set.", required=True)
    seed: int = field(0, "Random seed (same seed -> same bytes).")
    max_objects: int = field(8, "Objects per image are uniform in [1, max_objects].", flag=False)
    swap_fraction: float = field(
        0.5, "Probability that an image with >= 2 objects holds an attribute-swapped pair "
        "(module docstring).", flag=False)
    num_train: int = field(3000, "Training images.", lower_bound=1)
    num_val: int = field(300, "Validation images.", lower_bound=1)
    num_test: int = field(600, "Test images.", lower_bound=1)
    image_size: int = field(64, "Image side in pixels.", lower_bound=16)
    vector_dim: int = field(32, "Attribute word-vector size.", lower_bound=2)
    num_samples: int = field(8, "Loose test JPEGs in samples/.", lower_bound=0)
    train_shards: int = field(4, "Train shards.", lower_bound=1)
    eval_shards: int = field(1, "Val/test shards each.", lower_bound=1)
    num_workers: int | None = field(None, "Image threads (default: CPU cores).")
    progress: bool = field(True, "Progress bars and summary tables on stderr.")


def label_names() -> list[str]:
    """All colour x shape labels, colour-major ("red circle", "red square", ...)."""
    return [f"{c} {s}" for c in COLOURS for s in SHAPES]


UNSEEN_NAMES = ("red circle", "red square", "green circle", "green square", "blue triangle")


def unseen_flags() -> list[bool]:
    """Holds out the (red, green) x (circle, square) block and blue triangle: 5 of 25 labels.

    The block makes attribute swaps between unseen labels possible (red circle + green square
    vs red square + green circle); every word still appears in at least 3 seen labels.
    """
    return [name in UNSEEN_NAMES for name in label_names()]


def _split_name(label: int) -> tuple[int, int]:
    """(colour index, shape index) of a label index (colour-major order)."""
    return divmod(label, len(SHAPES))


def swapped(a: int, b: int) -> tuple[int, int]:
    """The two labels with the attributes of `a` and `b` swapped: (colour a x shape b, ...)."""
    (ca, sa), (cb, sb) = _split_name(a), _split_name(b)
    return ca * len(SHAPES) + sb, cb * len(SHAPES) + sa


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box, fill) -> None:
    """Draws one of `SHAPES` filling `box` (x0, y0, x1, y1) in colour `fill`."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    w, h = x1 - x0, y1 - y0
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle((x0 + 0.1 * w, y0 + 0.1 * h, x1 - 0.1 * w, y1 - 0.1 * h), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    elif shape == "cross":
        t = 0.17 * w
        draw.rectangle((cx - t, y0, cx + t, y1), fill=fill)
        draw.rectangle((x0, cy - t, x1, cy + t), fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def overlap(a, b) -> float:
    """Intersection of boxes `a` and `b` (x0, y0, x1, y1) over the smaller one's area."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy / smaller


def _boxes(rng: np.random.Generator, count: int, size: int) -> list[tuple]:
    """Object boxes: 1-3 large ones placed freely (little overlap), more on a 3x3 grid."""
    boxes = []
    if count > 3:
        cell = size / 3
        for c in rng.choice(9, size=count, replace=False):
            side = rng.uniform(0.72, 0.95) * cell
            x0, y0 = (c % 3) * cell + rng.uniform(0, cell - side), (c // 3) * cell + rng.uniform(
                0, cell - side)
            boxes.append((x0, y0, x0 + side, y0 + side))
        return boxes
    for _ in range(count):
        for _ in range(30):  # rejection-sample a placement that keeps each object visible
            side = rng.uniform(0.28, 0.42) * size
            x0, y0 = rng.uniform(0, size - side, size=2)
            box = (x0, y0, x0 + side, y0 + side)
            if all(overlap(box, b) < 0.15 for b in boxes):
                break
        boxes.append(box)
    return boxes


def render_image(rng: np.random.Generator, labels: list[int], size: int) -> Image.Image:
    """Draws the objects `labels` (indices into label_names()) on a noisy background."""
    names = label_names()
    grey = rng.uniform(70, 190)
    tint = rng.normal(0, 10, size=3)
    background = grey + tint + rng.normal(0, 8, size=(size, size, 3))
    img = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for label, box in zip(labels, _boxes(rng, len(labels), size), strict=True):
        colour, shape = names[label].split(" ")
        fill = tuple(int(v) for v in np.clip(np.array(COLOURS[colour]) + rng.normal(0, 12, 3),
                                             0, 255))
        draw_shape(draw, shape, box, fill)
    return img


def _swap_pair(rng: np.random.Generator, pool, labels: list[int]) -> tuple[int, int] | None:
    """Two labels of `pool` with different colours and shapes whose swapped combinations are
    not in `labels` (None if there is none)."""
    pairs = [(a, b) for a in pool for b in pool if a < b
             and all(x != y for x, y in zip(_split_name(a), _split_name(b), strict=True))
             and not {a, b, *swapped(a, b)} & set(labels)]
    return pairs[int(rng.integers(len(pairs)))] if pairs else None


def sample_labels(rng: np.random.Generator, split: str, max_objects: int = 8,
                  swap_fraction: float = 0.5) -> list[int]:
    """1..max_objects distinct labels; train: seen only; val/test: at least one unseen.

    With probability `swap_fraction` (and >= 2 objects) the image holds an attribute-swapped
    pair whose swapped combinations are kept out of the image (they are the confusable
    negatives); on val/test half of those pairs come from the unseen 2x2 block.
    """
    unseen = np.array(unseen_flags())
    seen_idx, unseen_idx = np.flatnonzero(~unseen), np.flatnonzero(unseen)
    count = int(rng.integers(1, max_objects + 1))
    pool = seen_idx if split == "train" else np.arange(len(unseen))
    labels: list[int] = []
    banned: set[int] = set()  # the swapped pair's confusable negatives
    if count >= 2 and rng.random() < swap_fraction:
        block = [label_names().index(n) for n in UNSEEN_NAMES[:4]]
        use_block = split != "train" and rng.random() < 0.5
        pair = _swap_pair(rng, block if use_block else pool, labels)
        if pair is not None:
            labels += pair
            banned = set(swapped(*pair))
    if split != "train" and not set(labels) & set(unseen_idx.tolist()):
        labels.insert(0, int(rng.choice([i for i in unseen_idx if i not in banned])))
    rest = [int(i) for i in pool if int(i) not in set(labels) | banned]
    extra = max(count - len(labels), 0)
    labels += [int(v) for v in rng.choice(rest, size=extra, replace=False)]
    return [int(v) for v in labels]


def write_attribute_vectors(path: str, dim: int, rng: np.random.Generator) -> None:
    """One random Gaussian vector per colour/shape word, word2vec text format."""
    words = list(COLOURS) + list(SHAPES)
    vectors = rng.normal(size=(len(words), dim)).astype(np.float32)
    lines = [f"{len(words)} {dim}"]
    lines += [w + " " + " ".join(f"{v:.6f}" for v in vec) for w, vec in zip(words, vectors,
                                                                           strict=True)]
    with tf.io.gfile.GFile(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def prepare(config: DemoConfig) -> dict:
    """Writes the demo set to `config.output_dir`; returns {split: summary}."""
    if min(config.num_train, config.num_val, config.num_test) < 1:
        raise common.DataPrepError("num_train, num_val and num_test must be >= 1")
    if config.image_size < 16:
        raise common.DataPrepError(f"image_size must be >= 16, got {config.image_size}")
    out = config.output_dir
    tf.io.gfile.makedirs(out)
    # Independent streams per purpose so changing --num_train does not change the test images.
    vec_seq, *split_seqs = np.random.SeedSequence(config.seed).spawn(4)
    vectors_path = os.path.join(out, VECTORS_FILE)
    write_attribute_vectors(vectors_path, config.vector_dim, np.random.default_rng(vec_seq))
    with gfile_utils.local_copy(vectors_path) as local_vectors:  # gensim reads local files only
        space, _ = build_label_space(label_names(), unseen_flags(), word_vectors=local_vectors,
                                     word_vectors_format="word2vec_text")
    space = dataclasses.replace(space, source=f"demo attribute vectors ({VECTORS_FILE}, "
                                              f"seed {config.seed})")
    space.save(out)

    splits = (("train", config.num_train, config.train_shards),
              ("val", config.num_val, config.eval_shards),
              ("test", config.num_test, config.eval_shards))
    summaries, ground_truth = {}, {}
    # The rendered images are read by `write_split` from a local scratch directory.
    scratch = out if gfile_utils.is_local(out) else None
    with tempfile.TemporaryDirectory(prefix=".demo-images-", dir=scratch) as tmp:
        for (split, count, shards), seq in zip(splits, split_seqs, strict=True):
            rng = np.random.default_rng(seq)
            records = []
            for i in range(count):
                labels = sample_labels(rng, split, config.max_objects, config.swap_fraction)
                path = os.path.join(tmp, f"{split}_{i:05d}.jpg")
                render_image(rng, labels, config.image_size).save(path, "JPEG", quality=90)
                records.append(common.ImageRecord(f"{split}_{i:05d}", path, tuple(sorted(labels))))
            summaries[split] = write_split(
                records, out, split, num_shards=shards,
                source=f"synthetic demo (seed {config.seed})",
                num_workers=config.num_workers, progress=config.progress)
            if split == "test":
                samples = os.path.join(out, "samples")
                tf.io.gfile.makedirs(samples)
                for rec in records[: config.num_samples]:
                    name = f"sample_{rec.image_id}.jpg"
                    tf.io.gfile.copy(rec.path, os.path.join(samples, name), overwrite=True)
                    ground_truth[name] = [space.names[i] for i in rec.positives]
    if ground_truth:
        with tf.io.gfile.GFile(os.path.join(out, "samples", "ground_truth.json"), "w") as f:
            json.dump(ground_truth, f, indent=1)
    if config.progress:
        sys.stderr.write(
            f"demo set in {out}: {space.num_labels} labels ({len(space.unseen_names)} unseen: "
            f"{', '.join(space.unseen_names)}), "
            + ", ".join(f"{s} {summaries[s]['num_examples']}" for s in summaries) + " images\n")
    return summaries


def define_flags() -> None:
    """Defines this entry point's flags on the global absl FLAGS."""
    converters.define_flags(DemoConfig)


def main(argv: Sequence[str]) -> int:
    return converters.main(argv, DemoConfig, prepare)


def run() -> None:
    """Console-script entry point (`sdl-prep-demo`)."""
    cli.run(main, define_flags)


if __name__ == "__main__":
    run()
