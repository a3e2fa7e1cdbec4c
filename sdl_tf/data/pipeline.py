"""tf.data input pipelines over the prepared TFRecord shards (`sdl_tf.data.tfrecord_schema`).

Training: shuffled shard order -> parallel deterministic interleave -> per-input-pipeline shard
-> example shuffle -> repeat -> decode + augmentation (`sdl_tf.data.augment`, and
`sdl_tf.data.rand_augment`; parallel) -> per-replica batches -> prefetch. The training decode
does only the work its output needs (DCT scaling of large JPEGs, only the crop window when
cropping), so training images can differ from the evaluation decode (full resolution,
unchanged) by the DCT downscale's rounding. Everything random is seeded by (seed, epoch) and,
for the augmentation, by the example's position in the epoch's stream (stateless ops), so
epoch e is the same stream in every run. That is what makes resume exact: a restarted run
rebuilds epoch e and skips the examples it already consumed (before decoding them). With
`cache_train_images` a run decodes its training images once (`decode_train_images`) and every
epoch looks the pixels up by the encoded bytes instead of decoding them again: the same stream,
less CPU per step.

Evaluation: shards in order, decode, resize to the model size, multi-hot targets over all labels.

Images leave the pipeline as uint8 (B, H, W, 3); the model does its own preprocessing.
"""

from __future__ import annotations

import json
import os
import sys
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from sdl_tf import errors
from sdl_tf.config import DataConfig
from sdl_tf.data import augment, rand_augment, tfrecord_schema
from sdl_tf.labels.label_space import LABELS_FILE

AUTOTUNE = tf.data.AUTOTUNE
_HASH_BUCKETS = 10000
# RandAugment's seed is fold_in(example seed, this): a stream apart from the other augmentations.
_RAND_AUGMENT_STREAM = 0x5241
# cache_train_images refuses more decoded pixels than this: they stay in host memory and are
# embedded as one constant in every epoch's input graph, and a GraphDef is limited to 2 GiB.
MAX_CACHED_TRAIN_BYTES = 1 << 30


def has_split(data_dir: str, split: str) -> bool:
    """Whether `data_dir` holds a (complete) shard set for `split`."""
    try:
        tfrecord_schema.list_shards(data_dir, split)
    except FileNotFoundError:
        return False
    return True


def require_dataset(data_dir: str, splits=()) -> None:
    """Checks that `data_dir` is a prepared dataset with shards for each of `splits`.

    Raises:
        errors.MissingPathError: naming the directory, what is missing and (as its hint) the
            command that makes it.
    """
    if not data_dir:
        raise errors.MissingPathError("no data dir given", errors.missing_data_hint("DIR"))
    hint = errors.missing_data_hint(data_dir)
    if not tf.io.gfile.isdir(data_dir):
        raise errors.MissingPathError(f"data dir {data_dir!r} does not exist", hint)
    if not tf.io.gfile.exists(os.path.join(data_dir, LABELS_FILE)):
        raise errors.MissingPathError(
            f"data dir {data_dir!r} is not a prepared dataset (no {LABELS_FILE})", hint)
    for split in splits:
        try:
            tfrecord_schema.list_shards(data_dir, split)
        except FileNotFoundError:
            raise errors.MissingPathError(
                f"data dir {data_dir!r} has no '{split}' shards "
                f"({split}-NNNNN-of-NNNNN{tfrecord_schema.SHARD_SUFFIX})", hint) from None
        except ValueError as e:  # an incomplete or mixed shard set
            raise errors.MissingPathError(str(e), hint) from None


def count_examples(data_dir: str, split: str) -> int:
    """Number of examples in a split: from `<split>-summary.json`, else by counting records."""
    path = tfrecord_schema.summary_path(data_dir, split)
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            summary = json.load(f)
        for key in ("num_examples", "num_written", "written", "num_images", "count"):
            if isinstance(summary.get(key), int):
                return summary[key]
    files = tfrecord_schema.list_shards(data_dir, split)
    return int(tf.data.TFRecordDataset(files).reduce(tf.constant(0, tf.int64),
                                                     lambda n, _: n + 1).numpy())


def _in_val_fraction(image_id, fraction: float):
    """Stable hash split of training images into a held-out validation part."""
    bucket = tf.strings.to_hash_bucket_fast(image_id, _HASH_BUCKETS)
    return bucket < int(round(fraction * _HASH_BUCKETS))


def _augment(image_bytes, seed, image_size: int, cfg: DataConfig):
    """`augment_mode="imagenet"`: random resized crop (decoding only the window), flip,
    brightness and contrast, cutout (the paper, section 4.1).

    Args:
        image_bytes: tf.string scalar (JPEG).
        seed: int32 (2,) stateless seed of this example.

    Returns:
        uint8 (image_size, image_size, 3).
    """
    seeds = tf.random.experimental.stateless_split(seed, num=6)
    image = augment.decode_random_crop(image_bytes, seeds[0], image_size, cfg.min_crop_area)
    return augment.imagenet_pixels(image, seeds[1], int(round(cfg.cutout * image_size)))


def _augment_whole(image, seed, image_size: int, flip: bool, cutout: float):
    """Flip or cutout of a whole decoded image (no crop, no colour change).

    `augment_mode="flip"` (flip=True, cutout=0): the label-safe augmentation, a left-right flip
    with probability 1/2; no crop or cutout can remove a small labelled object, and no colour
    change can alter a colour word of a label. `augment_mode="resize"` (flip=False, cutout =
    `cfg.cutout`): the geometric part of the authors' COCO training transform (ZS_SDL
    train.py: Resize((224, 224)) then CutoutPIL(0.5), then RandAugment, which
    `rand_augment.rand_augment` adds when `cfg.rand_augment`).

    Args:
        image: uint8 (image_size, image_size, 3), `augment.decode_resized` of the JPEG.
        seed: int32 (2,) stateless seed of this example.
        flip: random left-right flip.
        cutout: cutout square side as a fraction of the image side (0 = none).

    Returns:
        uint8 (image_size, image_size, 3).
    """
    if flip:
        image = augment.random_flip(image, seed)
    if cutout > 0:
        image = augment.cutout(image, seed, int(round(cutout * image_size)))
    return image


def decode_eval_image(image_bytes, image_size: int):
    """Decodes a JPEG and resizes it (whole image, no crop) to uint8 (image_size, image_size, 3)."""
    image = tf.io.decode_jpeg(image_bytes, channels=3)
    image = tf.image.resize(image, (image_size, image_size), antialias=True)
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


class DecodedImages(NamedTuple):
    """Training images decoded once per run (`decode_train_images`), keyed by `_image_key`.

    keys: int64 (N,) distinct keys of the encoded images; images: uint8 (N, H, W, 3), the
    `augment.decode_resized` pixels of each (what the uncached training stream decodes).
    """

    keys: np.ndarray
    images: np.ndarray


def _image_key(image_bytes):
    """int64 key of an encoded image: its 64-bit fingerprint (equal bytes decode to equal
    pixels; `decode_train_images` refuses two different images with one key)."""
    return tf.strings.to_hash_bucket_fast(image_bytes, 2**63 - 1)


def train_examples(cfg: DataConfig, files) -> tf.data.Dataset:
    """Parsed training examples of `files`, minus the `val_fraction` carve when it applies."""
    ds = files.map(tfrecord_schema.parse_example, num_parallel_calls=AUTOTUNE)
    if cfg.val_fraction > 0 and not has_split(cfg.data_dir, cfg.val_split):
        ds = ds.filter(lambda ex: tf.logical_not(_in_val_fraction(ex["image_id"],
                                                                  cfg.val_fraction)))
    return ds


def decode_train_images(cfg: DataConfig, image_size: int) -> DecodedImages:
    """Decodes every training image once (`cfg.cache_train_images`).

    The epochs then look each example's pixels up instead of decoding its JPEG again: the
    same images, so the same batches as without the cache.

    Raises:
        ValueError: the decoded images would exceed `MAX_CACHED_TRAIN_BYTES`, or two different
            images share a key.
    """
    files = tfrecord_schema.list_shards(cfg.data_dir, cfg.train_split)
    ds = train_examples(cfg, tf.data.TFRecordDataset(files))
    ds = ds.map(lambda ex: (_image_key(ex["image_bytes"]), ex["image_id"],
                            augment.decode_resized(ex["image_bytes"], image_size)),
                num_parallel_calls=AUTOTUNE).batch(256).prefetch(AUTOTUNE)
    keys, ids, images, size = [], [], [], 0
    for k, i, im in ds.as_numpy_iterator():
        size += im.nbytes
        if size > MAX_CACHED_TRAIN_BYTES:
            raise ValueError(
                f"cache_train_images: the training images of {cfg.data_dir} take more than "
                f"{MAX_CACHED_TRAIN_BYTES >> 20} MiB decoded at {image_size} px; train "
                "without --cache_train_images")
        keys.append(k)
        ids.append(i)
        images.append(im)
    if not keys:
        raise ValueError(f"no training images in {cfg.data_dir} to cache")
    keys, ids, images = np.concatenate(keys), np.concatenate(ids), np.concatenate(images)
    unique, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    for n in np.flatnonzero(first[inverse] != np.arange(len(keys))):  # repeated keys
        if not np.array_equal(images[n], images[first[inverse[n]]]):
            raise ValueError(
                f"cache_train_images: training images {ids[n].decode()!r} and "
                f"{ids[first[inverse[n]]].decode()!r} in {cfg.data_dir} differ but share one "
                "64-bit key; train without --cache_train_images")
    return DecodedImages(unique, images[first])


_WARNED: set[str] = set()


def _warn_ignored_flags(cfg: DataConfig) -> None:
    """One stderr line, once per process, for augmentation settings this config ignores that
    `DataConfig` lets through because they may be defaults (its docstring)."""
    defaults = DataConfig(data_dir="-")
    message = ""
    if not cfg.augment:
        ignored = [f"--{n}={getattr(cfg, n)}" for n in
                   ("augment_mode", "cutout", "min_crop_area", "rand_augment",
                    "rand_augment_factor")
                   if getattr(cfg, n) != getattr(defaults, n) and getattr(cfg, n)]
        if ignored:
            message = f"--augment=false: no augmentation, so {', '.join(ignored)} does nothing"
    elif cfg.augment_mode == "flip" and cfg.cutout > 0:
        message = (f"--cutout={cfg.cutout} does nothing with --augment_mode=flip (flips only); "
                   "set --cutout=0")
    if message and message not in _WARNED:
        _WARNED.add(message)
        print(f"warning: {message}", file=sys.stderr, flush=True)


def _epoch_examples(cfg: DataConfig, epoch_seed: int, num_input_pipelines: int,
                    input_pipeline_id: int) -> tf.data.Dataset:
    """(index in the epoch's stream, parsed example) pairs of one input pipeline, repeated:
    shuffled shard order, deterministic interleave, record-level shard, example shuffle."""
    files = tfrecord_schema.list_shards(cfg.data_dir, cfg.train_split)
    ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=epoch_seed)
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), 8),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    if num_input_pipelines > 1:
        ds = ds.shard(num_input_pipelines, input_pipeline_id)
    ds = train_examples(cfg, ds)
    ds = ds.shuffle(cfg.shuffle_buffer, seed=epoch_seed + 7919 * input_pipeline_id)
    return ds.repeat().enumerate()


def _whole_image_fn(image_size: int, decoded: DecodedImages | None):
    """image_bytes -> uint8 (image_size, image_size, 3): decoded, or looked up in `decoded`."""
    if decoded is None:
        return lambda image_bytes: augment.decode_resized(image_bytes, image_size)
    index_of = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        decoded.keys, np.arange(len(decoded.keys), dtype=np.int64)), default_value=-1)
    pixels = tf.constant(decoded.images)
    return lambda image_bytes: tf.gather(pixels, index_of.lookup(_image_key(image_bytes)))


def _augmented_image(cfg: DataConfig, image_bytes, seed, image_size: int, whole_image):
    """The training image of one example under `cfg`'s augmentation (seeded by `seed`)."""
    if not cfg.augment:
        return whole_image(image_bytes)
    if cfg.augment_mode == "flip":
        image = _augment_whole(whole_image(image_bytes), seed, image_size, True, 0.0)
    elif cfg.augment_mode == "resize":
        image = _augment_whole(whole_image(image_bytes), seed, image_size, False, cfg.cutout)
    else:
        image = _augment(image_bytes, seed, image_size, cfg)
    if cfg.rand_augment:
        image = rand_augment.rand_augment(
            image, tf.random.experimental.stateless_fold_in(seed, _RAND_AUGMENT_STREAM),
            num_ops=2, magnitude=cfg.rand_augment_factor)
    return image


def train_dataset(
    cfg: DataConfig,
    *,
    image_size: int,
    seen_indices,
    num_labels: int,
    batch_size: int,
    epoch: int,
    seed: int = 0,
    skip_batches: int = 0,
    num_batches: int | None = None,
    num_input_pipelines: int = 1,
    input_pipeline_id: int = 0,
    decoded: DecodedImages | None = None,
) -> tf.data.Dataset:
    """One epoch of training batches for one input pipeline (one worker).

    Args:
        cfg: data config (`data_dir`, `train_split`, augmentation settings).
        image_size: model input side.
        seen_indices: (S,) int64 seen-label indices (target order, `LabelSpace.seen_indices`).
        num_labels: C.
        batch_size: batch size this pipeline emits (the per-replica batch under a strategy).
        epoch: epoch number; seeds the shard order, the shuffle and the augmentation.
        seed: run seed.
        skip_batches: batches of this epoch already consumed (resume); skipped before decoding.
        num_batches: batches in the epoch (the stream repeats, so every pipeline has enough);
            None = unbounded.
        num_input_pipelines / input_pipeline_id: record-level sharding between workers.
        decoded: with `cfg.cache_train_images`, the run's `decode_train_images` (built here when
            None; a trainer builds it once and passes it to every epoch).

    Yields:
        (images uint8 (batch_size, H, W, 3), targets float32 (batch_size, S) in {1, 0, -1}).
    """
    _warn_ignored_flags(cfg)
    if not cfg.cache_train_images:
        decoded = None
    elif decoded is None:
        decoded = decode_train_images(cfg, image_size)
    epoch_seed = seed * 1_000_003 + epoch
    ds = _epoch_examples(cfg, epoch_seed, num_input_pipelines, input_pipeline_id)
    if skip_batches:
        ds = ds.skip(skip_batches * batch_size)
    seen = tf.constant(seen_indices, tf.int64)
    base = tf.constant([epoch_seed % (2**31 - 1), input_pipeline_id], tf.int64)
    whole_image = _whole_image_fn(image_size, decoded)

    def prepare(index, ex):
        example_seed = tf.cast(tf.stack([base[0] + index, base[1]]), tf.int32)
        image = _augmented_image(cfg, ex["image_bytes"], example_seed, image_size, whole_image)
        targets = tfrecord_schema.train_targets(ex["positives"], ex["negatives"], seen,
                                                num_labels)
        return image, targets

    ds = ds.map(prepare, num_parallel_calls=cfg.num_parallel_calls, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    if num_batches is not None:
        ds = ds.take(max(num_batches - skip_batches, 0))
    return ds.prefetch(AUTOTUNE)


def eval_dataset(
    cfg: DataConfig,
    split: str,
    *,
    image_size: int,
    num_labels: int,
    batch_size: int,
    max_images: int = 0,
    carve_from_train: bool = False,
    with_ids: bool = False,
) -> tf.data.Dataset:
    """Evaluation batches in shard order.

    Args:
        cfg: data config.
        split: shard split to read; with `carve_from_train`, the training split filtered to the
            hashed `val_fraction` part instead.
        image_size: model input side.
        num_labels: C.
        batch_size: batch size.
        max_images: stop after this many images (0 = all).
        with_ids: also yield the image ids.

    Yields:
        (images uint8 (B, H, W, 3), labels float32 (B, C) multi-hot[, ids string (B,)]).
    """
    files = tfrecord_schema.list_shards(cfg.data_dir, cfg.train_split if carve_from_train
                                        else split)
    ds = tf.data.TFRecordDataset(files, num_parallel_reads=None)
    ds = ds.map(tfrecord_schema.parse_example, num_parallel_calls=AUTOTUNE)
    if carve_from_train:
        ds = ds.filter(lambda ex: _in_val_fraction(ex["image_id"], cfg.val_fraction))
    if max_images:
        ds = ds.take(max_images)

    def prepare(ex):
        out = (decode_eval_image(ex["image_bytes"], image_size),
               tfrecord_schema.eval_targets(ex["positives"], num_labels))
        return (*out, ex["image_id"]) if with_ids else out

    ds = ds.map(prepare, num_parallel_calls=cfg.num_parallel_calls, deterministic=True)
    if cfg.cache_eval:
        ds = ds.cache()
    return ds.batch(batch_size).prefetch(AUTOTUNE)
