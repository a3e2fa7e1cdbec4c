"""Benchmark: images/s of `data_prep.manifest` on this machine.

Generates COCO-sized JPEGs (640x480 by default), then times `manifest.prepare` end to end for:
  1. pass-through JPEGs (verified by a 1/8-scale decode, written byte-identical), 1 thread;
  2. pass-through JPEGs, all cores (threads);
  3. re-encoding with --max_side (decode, resize, JPEG encode), all cores.
Prints images/s and the ratios measured in this one run.

  .venv/bin/python benchmarks/bench_data_prep.py [--num_images=400 --width=640 --height=480]
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from absl import app, flags
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_prep import manifest  # noqa: E402

flags.DEFINE_integer("num_images", 400, "Images per run.")
flags.DEFINE_integer("width", 640, "Image width.")
flags.DEFINE_integer("height", 480, "Image height.")
flags.DEFINE_integer("max_side", 256, "max_side of the re-encoding run.")
flags.DEFINE_integer("repeats", 2, "Timed repeats per setting (the best is reported).")


def _make_images(root: str, n: int, w: int, h: int) -> None:
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(root, "img"))
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        # Smooth colour fields plus mild noise: JPEG sizes close to natural photos (~60-100 KB).
        f = rng.uniform(0.005, 0.03, size=3)
        base = 128 + 100 * np.sin(f[None, None, :] * (xx[..., None] + yy[..., None] * f[0] * 50))
        img = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(os.path.join(root, "img", f"{i:05d}.jpg"), quality=90)
    with open(os.path.join(root, "train.csv"), "w") as f:
        f.write("image,labels\n")
        for i in range(n):
            f.write(f"img/{i:05d}.jpg,{'cat' if i % 2 else 'dog'}\n")
    with open(os.path.join(root, "vec.txt"), "w") as f:
        f.write("2 3\ncat 1 0 0\ndog 0 1 0\n")


def _run(root: str, workers: int, max_side: int | None, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        out = os.path.join(root, "out")
        shutil.rmtree(out, ignore_errors=True)
        cfg = manifest.ManifestConfig(
            output_dir=out, splits=(("train", os.path.join(root, "train.csv")),),
            image_root=root, word_vectors=os.path.join(root, "vec.txt"), num_shards=4,
            max_side=max_side, num_workers=workers, progress=False)
        t0 = time.perf_counter()
        summary = manifest.prepare(cfg)["train"]
        best = min(best, time.perf_counter() - t0)
        assert summary["num_skipped"] == 0
    return best


def main(argv):
    del argv
    # gensim logs every load at INFO, which absl shows; keep the progress output readable.
    logging.getLogger("gensim").setLevel(logging.WARNING)
    f = flags.FLAGS
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as root:
        _make_images(root, f.num_images, f.width, f.height)
        mb = sum(os.path.getsize(os.path.join(root, "img", p))
                 for p in os.listdir(os.path.join(root, "img"))) / 1e6
        rows = [
            ("pass-through JPEG, 1 thread", 1, None),
            (f"pass-through JPEG, {cores} threads", cores, None),
            (f"re-encode max_side={f.max_side}, {cores} threads", cores, f.max_side),
        ]
        rates = []
        for _, workers, max_side in rows:
            rates.append(f.num_images / _run(root, workers, max_side, f.repeats))
    print(f"{f.num_images} images {f.width}x{f.height}, {mb / f.num_images * 1000:.0f} KB avg, "
          f"{cores} CPU cores")
    print(f"| setting | images/s | ratio to pass-through ({cores} threads) |")
    print("|---|---:|---:|")
    for (name, _, _), rate in zip(rows, rates, strict=True):
        print(f"| {name} | {rate:.0f} | {rate / rates[1]:.2f} |")


if __name__ == "__main__":
    app.run(main)
