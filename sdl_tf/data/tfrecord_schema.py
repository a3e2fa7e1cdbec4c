"""The one TFRecord schema shared by every data-prep writer and the training/eval reader.

A prepared dataset directory holds the label space (`labels.json`, `label_vectors.npy`, see
`sdl_tf.labels.label_space`), the shards `<split>-%05d-of-%05d.tfrecord` and one
`<split>-summary.json` per split (counts, schema version, source, skipped files).

Per example (a `tf.train.Example`):
  - `image/id`         bytes: dataset image id (e.g. the COCO id or a relative path).
  - `image/encoded`    bytes: an RGB JPEG.
  - `labels/positive`  int64 list: indices into the label space's `names` (seen and unseen).
  - `labels/negative`  int64 list: verified negatives (Open Images confidence 0); empty when
                       the dataset has none. Everything else is *unknown*, not negative.

Training uses only the seen labels and the tri-state target of the paper's loss (section 3:
P = positives, N = everything else; -1 marks a verified negative, 0 unknown -- both are in N
for eq. (2), the distinction is kept for datasets/modes that treat them differently).
Evaluation uses multi-hot targets over all labels (ZSL slices the unseen ones, GZSL uses all).
"""

from __future__ import annotations

import os
import re

import tensorflow as tf

from sdl_tf import errors

SCHEMA_VERSION = 1

IMAGE_ID_KEY = "image/id"
IMAGE_ENCODED_KEY = "image/encoded"
POSITIVE_KEY = "labels/positive"
NEGATIVE_KEY = "labels/negative"

SHARD_SUFFIX = ".tfrecord"
_SHARD_RE = re.compile(r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.tfrecord$")

_FEATURE_SPEC = {
    IMAGE_ID_KEY: tf.io.FixedLenFeature([], tf.string),
    IMAGE_ENCODED_KEY: tf.io.FixedLenFeature([], tf.string),
    POSITIVE_KEY: tf.io.VarLenFeature(tf.int64),
    NEGATIVE_KEY: tf.io.VarLenFeature(tf.int64),
}


def _int64_list(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def serialize_example(image_id: str, image_bytes: bytes, positives, negatives=()) -> bytes:
    """Serialises one image and its labels as a `tf.train.Example`.

    Args:
      image_id: dataset image id (stored UTF-8 encoded).
      image_bytes: the encoded RGB JPEG.
      positives: label-space indices of the positive labels.
      negatives: label-space indices of verified negative labels (may be empty).

    Returns:
      The serialised proto bytes.

    Raises:
      ValueError: a label index is negative or a label is both positive and negative.
    """
    positives = [int(v) for v in positives]
    negatives = [int(v) for v in negatives]
    if any(v < 0 for v in positives + negatives):
        raise ValueError(f"image {image_id!r}: negative label index in {positives + negatives}")
    both = set(positives) & set(negatives)
    if both:
        raise ValueError(f"image {image_id!r}: labels {sorted(both)} are positive and negative")
    image_id_bytes = image_id.encode("utf-8") if isinstance(image_id, str) else bytes(image_id)
    example = tf.train.Example(
        features=tf.train.Features(
            feature={
                IMAGE_ID_KEY: _bytes(image_id_bytes),
                IMAGE_ENCODED_KEY: _bytes(bytes(image_bytes)),
                POSITIVE_KEY: _int64_list(positives),
                NEGATIVE_KEY: _int64_list(negatives),
            }
        )
    )
    return example.SerializeToString()


def parse_example(serialized: tf.Tensor) -> dict:
    """Parses one serialised example (usable inside `tf.data.Dataset.map`).

    Args:
      serialized: tf.string scalar.

    Returns:
      {"image_id": tf.string [], "image_bytes": tf.string [],
       "positives": tf.int64 [P], "negatives": tf.int64 [Q]}.
    """
    parsed = tf.io.parse_single_example(serialized, _FEATURE_SPEC)
    return {
        "image_id": parsed[IMAGE_ID_KEY],
        "image_bytes": parsed[IMAGE_ENCODED_KEY],
        "positives": tf.sparse.to_dense(parsed[POSITIVE_KEY]),
        "negatives": tf.sparse.to_dense(parsed[NEGATIVE_KEY]),
    }


def _indicator(indices: tf.Tensor, num_labels: int) -> tf.Tensor:
    """(K,) int64 indices -> (num_labels,) float32 with 1 at each index (duplicates allowed)."""
    indices = tf.reshape(tf.cast(indices, tf.int64), [-1, 1])
    counts = tf.scatter_nd(
        indices, tf.ones([tf.shape(indices)[0]], tf.float32), tf.constant([num_labels], tf.int64)
    )
    return tf.minimum(counts, 1.0)


def eval_targets(positives: tf.Tensor, num_labels: int) -> tf.Tensor:
    """Multi-hot evaluation targets over all labels.

    Args:
      positives: tf.int64 [P] label-space indices.
      num_labels: C, the size of the full label space.

    Returns:
      tf.float32 [C], 1 for positives and 0 elsewhere.
    """
    return _indicator(positives, num_labels)


def train_targets(positives, negatives, seen_indices, num_labels: int) -> tf.Tensor:
    """Tri-state training targets over the seen labels.

    Args:
      positives: tf.int64 [P] label-space indices.
      negatives: tf.int64 [Q] verified-negative label-space indices.
      seen_indices: int64 [S] indices of the seen labels (the order of the output).
      num_labels: C.

    Returns:
      tf.float32 [S]: 1 positive, -1 verified negative, 0 unknown. Unseen labels never appear
      in training targets, which is the zero-shot protocol (paper section 4.1).
    """
    pos = _indicator(positives, num_labels)
    neg = _indicator(negatives, num_labels)
    # A positive wins over a (contradictory) negative: the writer rejects such examples, but a
    # positive is the stronger statement if a hand-made record slips through.
    full = pos - neg * (1.0 - pos)
    return tf.gather(full, tf.cast(seen_indices, tf.int64))


def shard_name(split: str, index: int, num_shards: int) -> str:
    """Returns "<split>-%05d-of-%05d.tfrecord"."""
    if not 0 <= index < num_shards:
        raise ValueError(f"shard index {index} out of range for {num_shards} shards")
    return f"{split}-{index:05d}-of-{num_shards:05d}{SHARD_SUFFIX}"


def summary_path(data_dir: str, split: str) -> str:
    """Returns "<data_dir>/<split>-summary.json"."""
    return os.path.join(data_dir, f"{split}-summary.json")


def list_shards(data_dir: str, split: str) -> list[str]:
    """Lists the complete, sorted shard set of a split.

    Raises:
      errors.MissingPathError: no shard for the split in `data_dir` (a FileNotFoundError).
      ValueError: shards of different set sizes, or some shards of the set are missing (e.g. one
        data-prep part has not finished).
    """
    found: dict[int, set[int]] = {}
    # listdir rather than glob: any tf.io.gfile filesystem, and no escaping of the names.
    names = tf.io.gfile.listdir(data_dir) if tf.io.gfile.isdir(data_dir) else []
    for name in names:
        m = _SHARD_RE.match(name)
        if m is None or m.group("split") != split:
            continue
        found.setdefault(int(m.group("total")), set()).add(int(m.group("index")))
    if not found:
        raise errors.MissingPathError(
            f"no shards '{split}-NNNNN-of-NNNNN{SHARD_SUFFIX}' in {data_dir!r}",
            errors.missing_data_hint(data_dir))
    if len(found) > 1:
        raise ValueError(
            f"{data_dir!r} holds '{split}' shard sets of different sizes {sorted(found)}; "
            "remove the stale ones"
        )
    (total, indices), = found.items()
    missing = sorted(set(range(total)) - indices)
    if missing:
        shown = ", ".join(shard_name(split, i, total) for i in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ValueError(
            f"incomplete '{split}' shard set in {data_dir!r}: missing {shown}{more} "
            "(has every data-prep part finished?)"
        )
    return [os.path.join(data_dir, shard_name(split, i, total)) for i in range(total)]
