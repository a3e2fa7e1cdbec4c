"""Tiny official-format dataset files and images for the converter tests.

Everything is generated here (nothing downloads): a handful of 8x8 images of each kind the
converters must handle, one file of each kind the image checks must handle (corrupt, CMYK,
transparent PNG, ...), a word2vec text file covering the fixture label words, and the official
file layouts of COCO 2014, NUS-WIDE and Open Images v4 with a few images each.
"""

from __future__ import annotations

import csv
import io
import json
import os

import numpy as np
import tensorflow as tf
from PIL import Image

from sdl_tf.data import tfrecord_schema

# Image kinds: "jpeg" (RGB, passes through), "png" and "gray" (converted to RGB JPEG),
# "truncated" (a JPEG cut short: skipped), "not_image" (text: skipped), "empty" (skipped).
IMAGE_KINDS = ("jpeg", "png", "gray", "truncated", "not_image", "empty")


def write_image(path: str, kind: str = "jpeg", seed: int = 0) -> str:
    """Writes an 8x8 image of `kind` at `path` (folders created); returns `path`."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    if kind == "jpeg":
        Image.fromarray(pixels).save(path, format="JPEG")
    elif kind == "png":
        Image.fromarray(pixels).save(path, format="PNG")
    elif kind == "gray":
        Image.fromarray(pixels[..., 0]).save(path, format="JPEG")
    elif kind == "truncated":
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG")
        with open(path, "wb") as f:
            f.write(buf.getvalue()[:-60])
    elif kind == "not_image":
        with open(path, "w", encoding="utf-8") as f:
            f.write("<html>404 not found</html>\n")
    elif kind == "empty":
        open(path, "wb").close()
    else:
        raise ValueError(f"unknown image kind {kind!r}")
    return path


def solid_jpeg(path, size=(20, 12), mode="RGB", color=(200, 30, 30)) -> str:
    """A one-colour JPEG (quality 90) of `size` in PIL `mode`; returns its path as a string."""
    Image.new(mode, size, color).save(path, "JPEG", quality=90)
    return str(path)


def write_image_kinds(d) -> dict[str, str]:
    """One file of each kind the image checks and the writer must handle, in folder `d`
    (a `pathlib.Path`, created): kind -> path ("missing" names a file that does not exist)."""
    d.mkdir()
    p = {}
    p["rgb"] = solid_jpeg(d / "rgb.jpg")
    p["gray"] = solid_jpeg(d / "gray.jpg", mode="L", color=128)
    p["cmyk"] = solid_jpeg(d / "cmyk.jpg", mode="CMYK", color=(0, 255, 255, 0))
    Image.new("RGBA", (8, 6), (0, 0, 255, 0)).save(d / "alpha.png")  # transparent -> white
    p["png"] = str(d / "alpha.png")
    (d / "empty.jpg").write_bytes(b"")
    p["empty"] = str(d / "empty.jpg")
    big = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        big, "JPEG")
    (d / "truncated.jpg").write_bytes(big.getvalue()[: len(big.getvalue()) // 2])
    p["truncated"] = str(d / "truncated.jpg")
    (d / "notes.jpg").write_text("this is not an image\n")
    p["text"] = str(d / "notes.jpg")
    # Corrupt entropy-coded data in a JPEG and a PNG (headers intact).
    jpeg = bytearray(big.getvalue())
    jpeg[400:2000] = bytes(range(256)) * 6 + bytes(range(64))
    (d / "corrupt.jpg").write_bytes(bytes(jpeg))
    p["corrupt"] = str(d / "corrupt.jpg")
    png = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)).save(
        png, "PNG")
    png = bytearray(png.getvalue())
    at = png.find(b"IDAT")
    png[at + 20 : at + 60] = b"\x00" * 40
    (d / "corrupt.png").write_bytes(bytes(png))
    p["corrupt_png"] = str(d / "corrupt.png")
    p["missing"] = str(d / "missing.jpg")
    return p


def write_word2vec(path: str, words, dim: int = 6, seed: int = 0) -> str:
    """A word2vec text file with a random vector for each word (multi-word names split)."""
    vocab = []
    for w in words:
        for token in str(w).replace("_", " ").split():
            if token not in vocab:
                vocab.append(token)
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{len(vocab)} {dim}\n")
        for token in vocab:
            f.write(token + " " + " ".join(f"{v:.5f}" for v in rng.normal(size=dim)) + "\n")
    return path


def read_split(data_dir: str, split: str) -> dict[str, dict]:
    """Reads every example of a split back through `sdl_tf.data.tfrecord_schema`.

    Returns:
      image id -> {"positives": sorted list, "negatives": sorted list, "image": (H, W, 3)}.
    """
    out = {}
    files = tfrecord_schema.list_shards(data_dir, split)
    for serialized in tf.data.TFRecordDataset(files):
        ex = tfrecord_schema.parse_example(serialized)
        image_id = ex["image_id"].numpy().decode()
        assert image_id not in out, f"duplicate example {image_id}"
        out[image_id] = {
            "positives": sorted(ex["positives"].numpy().tolist()),
            "negatives": sorted(ex["negatives"].numpy().tolist()),
            "image": tf.io.decode_jpeg(ex["image_bytes"], channels=0).numpy(),
        }
    return out


# --------------------------------------------------------------------------------- COCO
# The 80 COCO 2014 class names. Category ids are deliberately not COCO's (and the list is
# shuffled) so the tests catch any reliance on ids or order instead of names.
COCO_80 = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip


def coco_category_ids() -> dict[str, int]:
    rng = np.random.default_rng(1)
    order = list(COCO_80)
    rng.shuffle(order)
    return {name: 200 + 3 * i for i, name in enumerate(order)}


def coco_json(images: dict[int, tuple[str, list[str]]]) -> dict:
    """A COCO instances dict: image id -> (file name, class names of its objects)."""
    ids = coco_category_ids()
    cats = [{"id": cid, "name": name, "supercategory": "x"} for name, cid in ids.items()]
    imgs, anns = [], []
    for iid, (file_name, classes) in images.items():
        imgs.append({"id": iid, "file_name": file_name, "height": 8, "width": 8})
        for name in classes:
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": ids[name],
                         "bbox": [0, 0, 4, 4], "area": 16.0, "iscrowd": 0})
    return {"info": {}, "images": imgs, "annotations": anns, "categories": cats}


# Train pool: image id -> (classes, image kind). The split rule's expected outcome in comments.
COCO_TRAIN = {
    1: (["person", "bicycle", "person"], "jpeg"),  # train: seen only
    2: (["person", "cat"], "jpeg"),                # nowhere: seen + unseen
    3: (["traffic light"], "jpeg"),                # nowhere: only an excluded class
    4: (["dog"], "jpeg"),                          # nowhere: unseen only
    5: (["tv", "hot dog"], "png"),                 # train (converted): excluded class dropped
    6: (["zebra"], "gray"),                        # train (converted)
    7: (["bench"], "truncated"),                   # selected but skipped by the writer
    8: ([], "jpeg"),                               # nowhere: no object
}  # fmt: skip
# Val pool.
COCO_VAL = {
    11: (["dog", "person"], "jpeg"),   # test: seen + unseen, labels over all 65
    12: (["person", "car"], "jpeg"),   # nowhere: seen only
    13: (["hot dog", "cake"], "jpeg"),  # test: cake only (hot dog excluded)
    14: (["scissors"], "jpeg"),        # test
    15: (["cat"], "jpeg"),             # selected, image file missing: skipped by the writer
}  # fmt: skip


def write_coco(root: str) -> dict[str, str]:
    """Writes train2014/, val2014/ and annotations/instances_{train,val}2014.json."""
    paths = {}
    for split, pool, folder in (("train", COCO_TRAIN, "train2014"),
                                ("val", COCO_VAL, "val2014")):
        images = {}
        for iid, (classes, kind) in pool.items():
            name = f"COCO_{folder}_{iid:012d}.jpg"
            images[iid] = (name, classes)
            if iid != 15:
                write_image(os.path.join(root, folder, name), kind, seed=iid)
        ann = os.path.join(root, "annotations", f"instances_{folder}.json")
        os.makedirs(os.path.dirname(ann), exist_ok=True)
        with open(ann, "w", encoding="utf-8") as f:
            json.dump(coco_json(images), f, indent=1)
        paths[f"{split}_annotations"] = ann
        paths[f"{split}_images"] = os.path.join(root, folder)
    return paths


# ----------------------------------------------------------------------------- NUS-WIDE
NUS_TAGS = ("sky", "water", "dog", "sunset", "beach", "clouds")
NUS_CONCEPTS = ("animal", "beach", "dog")  # "animal" is not a tag; beach/dog are
# Imagelist rows: (folder, file, tag names, concept names, split, present on disk).
NUS_ROWS = (
    ("actor", "0001_11.jpg", ["sky", "dog"], ["dog", "animal"], "train", True),
    ("actor", "0002_12.jpg", ["water", "beach"], ["beach"], "test", True),
    ("beach", "0003_13.jpg", ["sunset", "clouds"], [], "train", False),   # missing image
    ("beach", "0004_14.jpg", ["dog"], ["animal"], "train", True),         # no seen label
    ("zoo", "0005_15.jpg", [], ["animal"], "test", True),                 # unseen only
    ("zoo", "0006_16.jpg", ["sky"], [], "test", True),
    ("zoo", "0007_17.jpg", ["clouds"], [], "none", True),                 # in neither list
)  # fmt: skip


def write_nus_wide(root: str, image_root: str, flickr_layout: bool = True) -> None:
    """Writes the official NUS-WIDE text files under `root` and the images under
    `image_root` (as `Flickr/<folder>/<file>` or `<folder>/<file>`)."""
    def put(rel, lines):
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path) or root, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write("".join(line + "\r\n" for line in lines))  # the files have CRLF endings

    put("Concepts81.txt", NUS_CONCEPTS)
    put(os.path.join("NUS_WID_Tags", "TagList1k.txt"), NUS_TAGS)
    put(os.path.join("NUS_WID_Tags", "AllTags1k.txt"),
        [" ".join("1" if t in tags else "0" for t in NUS_TAGS) + " "
         for _, _, tags, _, _, _ in NUS_ROWS])
    for concept in NUS_CONCEPTS:
        put(os.path.join("AllLabels", f"Labels_{concept}.txt"),
            ["1" if concept in concepts else "0" for _, _, _, concepts, _, _ in NUS_ROWS])
    put(os.path.join("ImageList", "Imagelist.txt"),
        [f"C:\\ImageData\\Flickr\\{d}\\{n}" for d, n, *_ in NUS_ROWS])
    for split in ("train", "test"):
        put(os.path.join("ImageList", f"{split.capitalize()}Imagelist.txt"),
            [f"{d}\\{n}" for d, n, _, _, s, _ in NUS_ROWS if s == split])
    for i, (d, n, _, _, _, present) in enumerate(NUS_ROWS):
        if present:
            base = os.path.join(image_root, "Flickr") if flickr_layout else image_root
            write_image(os.path.join(base, d, n), "jpeg", seed=i)


# -------------------------------------------------------------------------- Open Images
OI_CLASSES = {
    "/m/01a": "Cat", "/m/01b": "Dog", "/m/01c": "Tree", "/m/01d": "Bow",
    "/m/01e": "Bow", "/m/01f": "Owl", "/m/0u1": "Zebra crossing", "/m/0u2": "Violin",
    "/m/0x9": "Lamp",
}  # fmt: skip
OI_TRAINABLE = ("/m/01a", "/m/01b", "/m/01c", "/m/01d", "/m/01e", "/m/01f")
OI_UNSEEN = ("/m/0u1", "/m/0u2")
# Train rows (ImageID, LabelName, Confidence). Positive images per class: Cat 3, Dog 1,
# Tree 2, Bow(/m/01d) 2, Bow(/m/01e) 2, Owl 1 -> with min_train_images=2 seen = Cat, Tree,
# both Bows; Dog and Owl are too rare, Lamp is not trainable.
OI_TRAIN_ROWS = (
    ("000a", "/m/01a", 1), ("000a", "/m/01c", 0), ("000a", "/m/01b", 0),
    ("000b", "/m/01a", 1), ("000b", "/m/01c", 1), ("000b", "/m/0x9", 1),
    ("000bb", "/m/0u1", 1), ("000bb", "/m/0u2", 0),  # unseen classes only: excluded
    ("000c", "/m/01a", 1), ("000c", "/m/01b", 0), ("000c", "/m/01d", 1), ("000c", "/m/01e", 1),
    ("000d", "/m/01c", 1), ("000d", "/m/01a", 0), ("000d", "/m/01a", 0),
    ("000e", "/m/01b", 1), ("000e", "/m/01c", 0),   # only a non-seen positive: excluded
    ("000f", "/m/01d", 1), ("000f", "/m/01e", 1), ("000f", "/m/01d", 0),  # 1 wins over 0
    ("000g", "/m/01f", 1),                          # a too-rare class only: excluded
    ("000h", "/m/0x9", 1), ("000h", "/m/01b", 0),   # non-trainable + too-rare only: excluded
)  # fmt: skip
OI_TEST_ROWS = (
    ("100a", "/m/0u1", 1), ("100a", "/m/01a", 0), ("100a", "/m/0u2", 0),
    ("100b", "/m/01c", 1), ("100b", "/m/0u2", 1),
    ("100c", "/m/01a", 0),                          # no positive: excluded
    ("100d", "/m/01b", 1), ("100d", "/m/0x9", 0),   # classes outside the label set: excluded
)  # fmt: skip


def write_open_images(root: str, shuffle_train: bool = False) -> dict[str, str]:
    """Writes the v4 CSVs + lists under `root` and train/ + test/ images; returns paths."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "class-descriptions.csv"), "w", newline="",
              encoding="utf-8") as f:
        csv.writer(f).writerows(OI_CLASSES.items())
    with open(os.path.join(root, "classes-trainable.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(OI_TRAINABLE) + "\n")
    unseen = os.path.join(root, "unseen-400.txt")
    with open(unseen, "w", encoding="utf-8") as f:
        f.write("\n".join(OI_UNSEEN) + "\n")
    for split, rows in (("train", OI_TRAIN_ROWS), ("test", OI_TEST_ROWS)):
        rows = list(rows)
        if shuffle_train and split == "train":
            rows = rows[::-1]
        with open(os.path.join(root, f"{split}-annotations-human-imagelabels.csv"), "w",
                  newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["ImageID", "Source", "LabelName", "Confidence"])
            for image_id, mid, conf in rows:
                w.writerow([image_id, "verification", mid, conf])
        for k, image_id in enumerate(sorted({r[0] for r in rows})):
            write_image(os.path.join(root, split, f"{image_id}.jpg"), "jpeg", seed=k)
    return {"oi_dir": root, "unseen_classes": unseen,
            "train_images": os.path.join(root, "train"),
            "test_images": os.path.join(root, "test")}
