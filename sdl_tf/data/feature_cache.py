"""Frozen-backbone training on backbone features computed once per image.

With a frozen pretrained backbone (`--trainable_backbone=false`) every step would run the same
backbone forward pass on the same images again; only the SDL head (pooling, projection to the
M x d matrix A_i of paper section 3.1) learns. `--cache_backbone_features` runs the backbone
once over the training split (and over its horizontal flips when `augment_mode=flip`), keeps the
feature maps in memory as float16, and trains the head on them: the same model, optimizer, loss
and final `final.keras` (images -> A_i), at the cost of the head's step instead of the
backbone's.

The model is split at the head's first layer (`sdl_tf.modeling.model.split_model`):
`feature_model` maps uint8 images to the backbone's features (B, h, w, F) or (B, F), `head`
maps those features to A_i (B, M, d). Both share the full model's layers and weights.
`evaluate --feature_cache_dir` uses the same store for a frozen backbone's test features.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from sdl_tf import errors
from sdl_tf.data import pipeline as data_lib
from sdl_tf.data import tfrecord_schema
from sdl_tf.utils import atomic_io, gfile_utils

# float16 features: half the memory of float32; backbone features after ReLU6 / BN are well
# inside its range and its 11-bit mantissa is far finer than what the head can learn from.
FEATURE_DTYPE = np.float16
MAX_CACHED_FEATURE_BYTES = 8 << 30
STORE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class FeatureCache:
    """Backbone features of the training split, in the split's record order.

    Attributes:
        features: float16 (N, V, ...feature shape) with V = 2 views (the image and its
            horizontal flip) or 1.
        targets: float32 (N, S) training targets over the seen labels (1 / 0 / -1).
    """

    features: np.ndarray
    targets: np.ndarray

    @property
    def num_examples(self) -> int:
        return int(self.features.shape[0])

    @property
    def num_views(self) -> int:
        return int(self.features.shape[1])


def _log(msg: str) -> None:
    print(f"[sdl_tf.features] {msg}", file=sys.stderr, flush=True)


def extract_train_features(feature_model: keras.Model, data_cfg, image_size: int, seen_indices,
                           num_labels: int, flips: bool, batch_size: int = 64) -> FeatureCache:
    """Runs the frozen backbone once over every training image (minus the val carve).

    Args:
        feature_model: images uint8 (B, H, W, 3) -> features (`model.split_model`).
        data_cfg: the run's `DataConfig` (data_dir, train_split, val_fraction).
        image_size: model input side; images are resized whole, as for evaluation.
        seen_indices: (S,) int64 seen-label indices (the target order).
        num_labels: C.
        flips: also compute the features of every image's horizontal flip.
        batch_size: images per backbone call.

    Raises:
        errors.SDLError: no training images; errors.ConfigError: the features would exceed
            `MAX_CACHED_FEATURE_BYTES`.
    """
    files = tfrecord_schema.list_shards(data_cfg.data_dir, data_cfg.train_split)
    total = data_lib.count_examples(data_cfg.data_dir, data_cfg.train_split)
    seen = tf.constant(seen_indices, tf.int64)
    ds = data_lib.train_examples(data_cfg, tf.data.TFRecordDataset(files))
    ds = ds.map(lambda ex: (data_lib.decode_eval_image(ex["image_bytes"], image_size),
                            tfrecord_schema.train_targets(ex["positives"], ex["negatives"],
                                                          seen, num_labels)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    feats, targets = _backbone_pass(feature_model, ds, flips, f"{data_cfg.data_dir} training",
                                    max_bytes=MAX_CACHED_FEATURE_BYTES, total=total)
    return FeatureCache(feats, targets)


def eval_features(feature_model: keras.Model, dataset: tf.data.Dataset, what: str = "validation"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The backbone features of an evaluation dataset, computed once.

    Args:
        feature_model: images -> features (`model.split_model`).
        dataset: yields (images uint8 (B, H, W, 3), labels float32 (B, C)) (`eval_dataset`).
        what: the split's name, for messages.

    Returns:
        (features float16 (N, ...), labels float32 (N, C)); `features_eval_dataset` turns them
        back into batches for the head.
    """
    feats, labels = _backbone_pass(feature_model, dataset, False, what)
    return feats[:, 0], labels


def _backbone_pass(feature_model: keras.Model, dataset: tf.data.Dataset, flips: bool,
                   what: str, max_bytes: int | None = None, total: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The one loop of the backbone over a dataset of (images, per-image arrays).

    Returns:
        (features float16 (N, V, ...) with V = 2 views (image, flip) or 1, the dataset's second
        element float32 (N, ...)). Logs progress every 30 s when `total` is given.

    Raises:
        errors.SDLError: an empty dataset; errors.ConfigError: features over `max_bytes`.
    """
    @tf.function(reduce_retracing=True, autograph=False)
    def features_of(images):
        views = [feature_model(images, training=False)]
        if flips:
            views.append(feature_model(tf.image.flip_left_right(images), training=False))
        return tf.stack([tf.cast(v, tf.float16) for v in views], axis=1)

    chunks, second, size, done = [], [], 0, 0
    start = last = time.perf_counter()
    for images, batch_second in dataset:
        feats = features_of(images).numpy()
        size += feats.nbytes
        if max_bytes is not None and size > max_bytes:
            raise errors.ConfigError(
                f"cache_backbone_features: the features of the {what} images exceed "
                f"{max_bytes >> 30} GiB at this --image_size; use a smaller --image_size or train "
                "without --cache_backbone_features")
        chunks.append(feats)
        second.append(batch_second.numpy())
        done += len(feats)
        now = time.perf_counter()
        if total is not None and now - last > 30:
            rate = done / (now - start)
            _log(f"backbone features: {done} of ~{total} images ({rate:.0f} images/s)")
            last = now
    if not chunks:
        raise errors.SDLError(f"no {what} images to compute backbone features of")
    return np.concatenate(chunks), np.concatenate(second).astype(np.float32)


def features_eval_dataset(features: np.ndarray, labels: np.ndarray,
                          batch_size: int) -> tf.data.Dataset:
    """(features float32, labels) batches of `eval_features`' arrays, for the model's head."""
    ds = tf.data.Dataset.from_tensor_slices((features, labels)).batch(batch_size)
    return ds.map(lambda f, y: (tf.cast(f, tf.float32), y))


# ----------------------------------------------------------------------------- on disk


def _shards(data_dir: str, split: str) -> list:
    """[name, size, modification time] of each shard of a split."""
    out = []
    for path in tfrecord_schema.list_shards(data_dir, split):
        stat = tf.io.gfile.stat(path)
        out.append([os.path.basename(path), int(stat.length), int(stat.mtime_nsec)])
    return out


def _backbone_key(model_cfg) -> dict:
    weights = model_cfg.weights
    if os.path.isfile(weights):
        stat = os.stat(weights)
        weights = [os.path.abspath(weights), stat.st_size, stat.st_mtime_ns]
    return {"backbone": model_cfg.backbone, "weights": weights,
            "image_size": model_cfg.image_size}


def _data_dir_key(data_dir: str) -> str:
    return os.path.abspath(data_dir) if gfile_utils.is_local(data_dir) else data_dir


def store_key(data_cfg, model_cfg, seen_indices, num_labels: int, flips: bool) -> dict:
    """What the stored training features of a run depend on: the training shards (names,
    sizes and modification times), the validation carve, the seen labels (the targets'
    order), the backbone, its weights (a file's size and time), the input size and the flips."""
    return {
        "version": STORE_VERSION, "data_dir": _data_dir_key(data_cfg.data_dir),
        "train_split": data_cfg.train_split,
        "shards": _shards(data_cfg.data_dir, data_cfg.train_split),
        "val_split": data_cfg.val_split, "val_fraction": data_cfg.val_fraction,
        "has_val_split": data_lib.has_split(data_cfg.data_dir, data_cfg.val_split),
        "seen_indices": [int(i) for i in seen_indices], "num_labels": int(num_labels),
        "flips": bool(flips), **_backbone_key(model_cfg),
    }


def eval_store_key(data_dir: str, split: str, model_cfg, num_labels: int,
                   max_images: int) -> dict:
    """What the stored features of an evaluation split depend on (see `store_key`)."""
    return {"version": STORE_VERSION, "data_dir": _data_dir_key(data_dir), "split": split,
            "shards": _shards(data_dir, split), "num_labels": int(num_labels),
            "max_images": int(max_images), **_backbone_key(model_cfg)}


def stored_eval_features(directory: str, key: dict, feature_model: keras.Model,
                         dataset_fn) -> tuple[np.ndarray, np.ndarray]:
    """`eval_features` of `dataset_fn()`, from the store at `directory` when there."""
    store = FeatureStore(directory, key)
    loaded = store.load("features", "labels")
    if loaded is not None:
        _log(f"backbone features of the {key['split']} images loaded from {store.prefix}-*.npy")
        return loaded
    t = time.perf_counter()
    features, labels = eval_features(feature_model, dataset_fn(), key["split"])
    store.save(features=features, labels=labels)
    _log(f"backbone features of {len(features)} {key['split']} images computed once "
         f"({time.perf_counter() - t:.1f} s) and stored as {store.prefix}-*.npy")
    return features, labels


class FeatureStore:
    """Backbone features kept on disk between runs (`--feature_cache_dir`), so that runs on
    the same data and backbone (other methods, seeds, heads) compute them once.

    Files: `<dir>/<key>.json` (what the key stands for) and `<dir>/<key>-<name>.npy`, each
    written atomically; the key is a hash of `store_key`.
    """

    def __init__(self, directory: str, key: dict):
        self.directory = directory
        self.key = key
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        self.prefix = os.path.join(directory, digest)

    def _path(self, name: str) -> str:
        return f"{self.prefix}-{name}.npy"

    def load(self, *names: str) -> tuple[np.ndarray, ...] | None:
        """The stored arrays (memory-mapped where local), or None if any is missing."""
        paths = [self._path(n) for n in names]
        if not all(tf.io.gfile.exists(p) for p in paths):
            return None
        out = []
        for p in paths:
            if gfile_utils.is_local(p):
                out.append(np.load(p, mmap_mode="r", allow_pickle=False))
            else:
                with tf.io.gfile.GFile(p, "rb") as f:
                    out.append(np.load(io.BytesIO(f.read()), allow_pickle=False))
        return tuple(out)

    def save(self, **arrays: np.ndarray) -> None:
        tf.io.gfile.makedirs(self.directory)
        for name, array in arrays.items():
            atomic_io.atomic_write(self._path(name),
                                   lambda f, a=array: np.save(f, a, allow_pickle=False))
        atomic_io.atomic_write_text(self.prefix + ".json",
                                    json.dumps(self.key, indent=1, sort_keys=True) + "\n")


def run_features(feature_model: keras.Model, config, seen_indices, num_labels: int,
                 val_dataset_fn=None) -> tuple[FeatureCache, tuple | None]:
    """The training (and validation) features of a run: from `config.feature_cache_dir` when
    stored there by an earlier run with the same data and backbone, else computed (and stored).

    Args:
        feature_model: images -> features (`model.split_model`).
        config: the `TrainConfig`.
        seen_indices, num_labels: the label space's seen indices and C.
        val_dataset_fn: None, or a callable returning the validation images dataset.

    Returns:
        (train `FeatureCache`, (val features, val labels) or None).
    """
    flips = config.data.augment and config.data.augment_mode == "flip"
    store = None
    if config.feature_cache_dir:
        store = FeatureStore(config.feature_cache_dir, store_key(
            config.data, config.model, seen_indices, num_labels, flips))
        names = ("train_features", "train_targets") + (
            ("val_features", "val_labels") if val_dataset_fn else ())
        loaded = store.load(*names)
        if loaded is not None:
            _log(f"backbone features loaded from {store.prefix}-*.npy")
            return (FeatureCache(loaded[0], loaded[1]),
                    (loaded[2], loaded[3]) if val_dataset_fn else None)
    t = time.perf_counter()
    train = extract_train_features(feature_model, config.data, config.model.image_size,
                                   seen_indices, num_labels, flips=flips,
                                   batch_size=config.eval_batch_size)
    val = eval_features(feature_model, val_dataset_fn()) if val_dataset_fn else None
    _log(f"backbone features of {train.num_examples} training images x {train.num_views} "
         f"view(s){' and the validation images' if val else ''} computed once "
         f"({train.features.nbytes >> 20} MiB, {time.perf_counter() - t:.1f} s)")
    if store is not None:
        arrays = {"train_features": train.features, "train_targets": train.targets}
        if val is not None:
            arrays.update(val_features=val[0], val_labels=val[1])
        store.save(**arrays)
        _log(f"backbone features stored as {store.prefix}-*.npy")
    return train, val


def epoch_order(num_examples: int, num_views: int, num_steps: int, batch_size: int, seed: int,
                epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """Which example (and view) fills each slot of an epoch's global batches.

    A fresh permutation per pass over the examples (several when the epoch is longer than the
    data), seeded by (seed, epoch) so a resumed run sees the same batches.

    Returns:
        (examples int64 (num_steps * batch_size,), views int64 (same shape) in [0, num_views)).
    """
    rng = np.random.default_rng([seed, epoch, 7243])
    need = num_steps * batch_size
    passes = -(-need // num_examples)
    examples = np.concatenate([rng.permutation(num_examples) for _ in range(passes)])[:need]
    views = rng.integers(0, num_views, size=need)
    return examples.astype(np.int64), views.astype(np.int64)


def feature_dataset(cache: FeatureCache, *, global_batch_size: int, per_replica_batch: int,
                    replicas_per_pipeline: int, input_pipeline_id: int, epoch: int, seed: int,
                    skip_steps: int, num_steps: int) -> tf.data.Dataset:
    """One epoch of (features float32, targets float32) per-replica batches of one pipeline.

    The global batch of step s is the slots [s * B, (s + 1) * B) of `epoch_order`, cut into
    per-replica batches; input pipeline p emits the replicas p * R .. (p + 1) * R - 1 of every
    step (R = `replicas_per_pipeline`), as `tf.distribute` expects.
    """
    examples, views = epoch_order(cache.num_examples, cache.num_views, num_steps,
                                  global_batch_size, seed, epoch)
    first = input_pipeline_id * replicas_per_pipeline

    def batches():
        for step in range(skip_steps, num_steps):
            for r in range(first, first + replicas_per_pipeline):
                lo = step * global_batch_size + r * per_replica_batch
                idx = examples[lo: lo + per_replica_batch]
                feats = cache.features[idx, views[lo: lo + per_replica_batch]]
                yield feats.astype(np.float32), cache.targets[idx]

    spec = (tf.TensorSpec((per_replica_batch,) + cache.features.shape[2:], tf.float32),
            tf.TensorSpec((per_replica_batch, cache.targets.shape[1]), tf.float32))
    return tf.data.Dataset.from_generator(batches, output_signature=spec).prefetch(2)
