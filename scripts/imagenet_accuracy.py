"""ImageNet top-1 / top-5 of the converted EfficientNet-Lite0 classifier on real photos.

Usage:
    python scripts/imagenet_accuracy.py --imagenet_dir=DIR [--max_per_class=50] \
        [--image_size=224] [--weights=imagenet] [--padding=same] [--preprocess=lite] \
        [--batch_size=50]

DIR is an ImageNet-layout folder: `DIR/train/<wnid>/images/*.JPEG` (Tiny-ImageNet) or
`DIR/train/<wnid>/*.JPEG`; `DIR` may also be the `train` folder itself. Each image is
converted to RGB and resized to image_size x image_size (bilinear, antialiased when shrinking;
Tiny-ImageNet's 64 px photos are upscaled), run through `efficientnet_lite0(include_top=True)`
with the 1000-way `_fc` classifier, and scored against its folder's class, whose index is its
line in `sdl_tf/modeling/imagenet_wnids.txt` (the standard sorted synset order). Folders whose
wnid is not an ImageNet-1k class are skipped (and counted). `--padding` / `--preprocess`
exist to compare the alternatives (TF "same" vs torch-style symmetric padding; (x-127)/128 vs
x/127.5-1) on the same images.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

import numpy as np

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def load_wnids() -> list[str]:
    """The 1000 ImageNet-1k wnids in class-index order (shipped with the package)."""
    from sdl_tf.modeling import efficientnet_lite

    path = os.path.join(os.path.dirname(efficientnet_lite.__file__), "imagenet_wnids.txt")
    with open(path, encoding="utf-8") as f:
        wnids = [line.strip() for line in f if line.strip()]
    if len(wnids) != 1000:
        raise ValueError(f"{path}: {len(wnids)} wnids, expected 1000")
    return wnids


def list_images(imagenet_dir: str, max_per_class: int | None
                ) -> tuple[list[tuple[str, str]], list[str]]:
    """[(path, wnid)] sorted by class then file name, at most `max_per_class` per class.

    Returns:
        (images, class folder names found).
    """
    root = os.path.join(imagenet_dir, "train")
    if not os.path.isdir(root):
        root = imagenet_dir
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    images = []
    for wnid in classes:
        folder = os.path.join(root, wnid, "images")
        if not os.path.isdir(folder):
            folder = os.path.join(root, wnid)
        files = sorted(p for p in glob.glob(os.path.join(folder, "*"))
                       if p.lower().endswith(IMAGE_SUFFIXES))
        images += [(p, wnid) for p in files[:max_per_class]]
    return images, classes


def load_image(path: str, size: int) -> np.ndarray:
    """(size, size, 3) uint8 RGB."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(image, np.uint8)


def evaluate(imagenet_dir: str, max_per_class: int | None = 50, image_size: int = 224,
             weights: str = "imagenet", padding: str = "same", preprocess: str = "lite",
             batch_size: int = 50) -> dict:
    """Top-1 / top-5 accuracy (percent) of EfficientNet-Lite0's ImageNet head on a folder.

    Returns:
        {"images", "classes", "skipped_classes", "top1", "top5", "seconds", "images_per_s"}.
    """
    import keras

    from sdl_tf.modeling import efficientnet_lite_weights, layers

    wnids = load_wnids()
    index = {w: i for i, w in enumerate(wnids)}
    images, classes = list_images(imagenet_dir, max_per_class)
    skipped = sorted({w for _, w in images if w not in index})
    images = [(p, w) for p, w in images if w in index]
    if not images:
        raise ValueError(f"{imagenet_dir}: no images of ImageNet-1k classes found")
    start = time.perf_counter()
    net = efficientnet_lite_weights.build((image_size, image_size, 3), weights,
                                          include_top=True, padding=padding)
    inputs = keras.Input((image_size, image_size, 3), dtype="uint8")
    logits = net(layers.ImagePreprocessing(preprocess)(inputs))
    model = keras.Model(inputs, logits)
    labels = np.array([index[w] for _, w in images])
    top1 = top5 = 0
    for begin in range(0, len(images), batch_size):
        chunk = images[begin:begin + batch_size]
        batch = np.stack([load_image(p, image_size) for p, _ in chunk])
        scores = np.asarray(model.predict_on_batch(batch))
        # The 5 best classes per image (stable sort: ties go to the lower class index).
        best = np.argsort(-scores, axis=1, kind="stable")[:, :5]
        truth = labels[begin:begin + len(chunk), None]
        top1 += int((best[:, :1] == truth).sum())
        top5 += int((best == truth).any(axis=1).sum())
    seconds = time.perf_counter() - start
    n = len(images)
    return {"images": n, "classes": len(classes) - len(skipped), "skipped_classes": skipped,
            "top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n, "seconds": seconds,
            "images_per_s": n / seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--imagenet_dir", required=True)
    parser.add_argument("--max_per_class", type=int, default=50, help="0: all images")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--weights", default="imagenet",
                        help="imagenet, a torch state dict .pth, or a .weights.h5 with the top")
    parser.add_argument("--padding", default="same", choices=("same", "symmetric"))
    parser.add_argument("--preprocess", default="lite", choices=("lite", "symmetric"))
    parser.add_argument("--batch_size", type=int, default=50)
    args = parser.parse_args(argv)
    result = evaluate(args.imagenet_dir, args.max_per_class or None, args.image_size,
                      args.weights, args.padding, args.preprocess, args.batch_size)
    if result["skipped_classes"]:
        print(f"skipped {len(result['skipped_classes'])} folders that are not ImageNet-1k "
              f"classes: {' '.join(result['skipped_classes'][:8])}")
    print(f"efficientnet_lite0 {args.image_size}px padding={args.padding} "
          f"preprocess={args.preprocess}: {result['images']} images of {result['classes']} "
          f"classes: top-1 {result['top1']:.2f} %, top-5 {result['top5']:.2f} % "
          f"({result['seconds']:.1f} s, {result['images_per_s']:.1f} images/s)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    sys.exit(main())
