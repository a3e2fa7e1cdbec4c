"""Training input pipeline vs the decode floor, on real photos, measured in one run.

    python benchmarks/bench_pipeline.py --photos=../shared/data/coco_photos/images \
        [--sizes=224,448] [--rounds=3] [--batches=12] [--step_steps=6] [--op_costs]

Writes the photos (JPEGs as they are, e.g. COCO's ~640x480) into TFRecord shards under
--work_dir (/tmp by default) and times, in --rounds rounds, each variant right after the floor
(images/s of batches of 32; the ratio is the median over the rounds of variant / floor):
  * the floor: the same shards through the same tf.data structure as `train_dataset` (shuffled
    shards, deterministic parallel interleave, parse, shuffle, repeat, one parallel map,
    batch, prefetch) with the map = `decode_jpeg` + antialiased resize
    (`pipeline.decode_eval_image`, the eval path);
  * the new floor: the same with `augment.decode_resized` (DCT-scaled decode where the photo is
    >= 2x the target, then the same resize);
  * every augmentation mode through `pipeline.train_dataset` itself.
Each ratio is the mode's images/s over the floor's in the same run. Then the fed train step: a
ResNet50 train step (`Trainer.train_step`, --step_backbone at 224, random weights, batch
--step_batch) taking its batches from the pipeline against the same step on one in-memory
batch, alternately. --op_costs also prints each RandAugment op's images/s on one image.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from sdl_tf.config import DataConfig, ModelConfig, TrainConfig  # noqa: E402
from sdl_tf.data import augment, rand_augment, tfrecord_schema  # noqa: E402
from sdl_tf.data import pipeline as data_lib  # noqa: E402
from sdl_tf.labels.label_space import LabelSpace  # noqa: E402

flags.DEFINE_string("photos", "../shared/data/coco_photos/images", "Directory of JPEG photos.")
flags.DEFINE_string("work_dir", "/tmp/sdl_bench_pipeline", "Where the shards are written.")
flags.DEFINE_list("sizes", ["224", "448"], "Output sides.")
flags.DEFINE_integer("batch", 32, "Pipeline batch size.")
flags.DEFINE_integer("batches", 12, "Timed batches per measurement (after 3 warm-up batches).")
flags.DEFINE_integer("rounds", 3, "Alternating rounds; each figure is the best of them.")
flags.DEFINE_string("step_backbone", "resnet50", "Backbone of the fed-step comparison.")
flags.DEFINE_integer("step_batch", 16, "Batch of the fed-step comparison.")
flags.DEFINE_integer("step_steps", 6, "Timed steps per fed/in-memory measurement (0 skips).")
flags.DEFINE_integer("step_rounds", 3, "Alternating in-memory/fed rounds per mode.")
flags.DEFINE_bool("op_costs", False, "Also time each RandAugment op on one image.")
FLAGS = flags.FLAGS

NUM_LABELS, NUM_UNSEEN, DIM = 20, 5, 300
# (name, DataConfig fields): every augmentation mode, with the shipped configs' settings.
MODES = (
    ("augment=false", dict(augment=False)),
    ("flip (configs/demo.flags)", dict(augment_mode="flip", cutout=0.0)),
    ("resize + cutout", dict(augment_mode="resize", cutout=0.5)),
    ("resize + cutout + RandAugment (coco_authors)",
     dict(augment_mode="resize", cutout=0.5, rand_augment=True)),
    ("imagenet: crop, flip, colour, cutout (paper)", dict(augment_mode="imagenet", cutout=0.5)),
    ("imagenet + RandAugment", dict(augment_mode="imagenet", cutout=0.5, rand_augment=True)),
)


def write_shards(photos: str, out_dir: str, num_shards: int = 4) -> int:
    """The photos as a prepared training split (random labels) in `out_dir`; returns the count."""
    paths = sorted(glob.glob(os.path.join(photos, "*.jpg")))
    if not paths:
        raise FileNotFoundError(f"no *.jpg in {photos}")
    if data_lib.has_split(out_dir, "train") and os.path.exists(os.path.join(out_dir, "n.txt")):
        with open(os.path.join(out_dir, "n.txt")) as f:
            if int(f.read()) == len(paths):
                return len(paths)
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(0)
    writers = [tf.io.TFRecordWriter(os.path.join(out_dir, tfrecord_schema.shard_name(
        "train", i, num_shards))) for i in range(num_shards)]
    for n, path in enumerate(paths):
        with open(path, "rb") as f:
            data = f.read()
        positives = rng.choice(NUM_LABELS - NUM_UNSEEN, size=3, replace=False)
        writers[n % num_shards].write(tfrecord_schema.serialize_example(
            os.path.basename(path), data, positives))
    for w in writers:
        w.close()
    vectors = rng.normal(size=(NUM_LABELS, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    unseen = np.zeros(NUM_LABELS, bool)
    unseen[-NUM_UNSEEN:] = True
    LabelSpace(tuple(f"label{i}" for i in range(NUM_LABELS)), unseen, vectors).save(out_dir)
    with open(os.path.join(out_dir, "n.txt"), "w") as f:
        f.write(str(len(paths)))
    return len(paths)


def floor_dataset(cfg: DataConfig, size: int, batch: int, decode) -> tf.data.Dataset:
    """`train_dataset`'s tf.data structure with the map = `decode(image_bytes, size)` only."""
    files = tfrecord_schema.list_shards(cfg.data_dir, cfg.train_split)
    ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=0)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                       num_parallel_calls=data_lib.AUTOTUNE, deterministic=True)
    ds = ds.map(tfrecord_schema.parse_example, num_parallel_calls=data_lib.AUTOTUNE)
    ds = ds.shuffle(cfg.shuffle_buffer, seed=0).repeat()
    ds = ds.map(lambda ex: decode(ex["image_bytes"], size),
                num_parallel_calls=cfg.num_parallel_calls, deterministic=True)
    return ds.batch(batch, drop_remainder=True).prefetch(data_lib.AUTOTUNE)


def mode_dataset(cfg: DataConfig, size: int, batch: int) -> tf.data.Dataset:
    space = LabelSpace.load(cfg.data_dir)
    return data_lib.train_dataset(cfg, image_size=size, seen_indices=space.seen_indices,
                                  num_labels=space.num_labels, batch_size=batch, epoch=0)


def time_dataset(make, batches: int) -> float:
    """Images/s of a fresh iterator of `make()` over `batches` batches after 3 warm-up ones."""
    it = iter(make())
    for _ in range(3):
        first = next(it)
    batch = int(tf.shape(tf.nest.flatten(first)[0])[0])
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    ips = batches * batch / (time.perf_counter() - t0)
    del it
    return ips


def decode_quality(photos: str, size: int) -> dict:
    """Pixel difference of `decode_resized` (DCT-scaled) vs `decode_eval_image` (full decode),
    and of both vs a Lanczos resize (PIL) of the full decode, over the photos it scales."""
    from PIL import Image

    diffs, psnrs, to_ref = [], [], {"eval": [], "dct": []}
    for path in sorted(glob.glob(os.path.join(photos, "*.jpg"))):
        with open(path, "rb") as f:
            data = tf.constant(f.read())
        shape = tf.image.extract_jpeg_shape(data)
        if int(augment.dct_ratio(shape[0], shape[1], size)) == 1:
            continue
        a = data_lib.decode_eval_image(data, size).numpy().astype(np.float64)
        b = augment.decode_resized(data, size).numpy().astype(np.float64)
        ref = np.asarray(Image.fromarray(tf.io.decode_jpeg(data, channels=3).numpy()).resize(
            (size, size), Image.LANCZOS), np.float64)
        diffs.append(np.abs(a - b))
        psnrs.append(10 * np.log10(255.0**2 / max(np.mean((a - b) ** 2), 1e-12)))
        to_ref["eval"].append(np.abs(a - ref).mean())
        to_ref["dct"].append(np.abs(b - ref).mean())
    if not diffs:
        return dict(reduced=0)
    d = np.stack(diffs)
    return dict(reduced=len(diffs), mean_abs=d.mean(), p99=np.percentile(d, 99), max=d.max(),
                psnr_min=min(psnrs), psnr_median=float(np.median(psnrs)),
                eval_to_lanczos=np.mean(to_ref["eval"]), dct_to_lanczos=np.mean(to_ref["dct"]))


def time_ops(photo: str, size: int, reps: int = 30) -> list[tuple[str, float]]:
    """Images/s of each RandAugment op on one photo at `size` (one core's graph, 1 image)."""
    with open(photo, "rb") as f:
        image = augment.decode_resized(tf.constant(f.read()), size)
    out = []
    for op in rand_augment.RAND_AUGMENT_OPS + ("cutout", "flip", "decode_resized", "decode_eval"):
        if op == "cutout":
            fn = tf.function(lambda x: augment.cutout(x, tf.constant([1, 2]), size // 2))
        elif op == "flip":
            fn = tf.function(lambda x: augment.random_flip(x, tf.constant([1, 2])))
        elif op in ("decode_resized", "decode_eval"):
            with open(photo, "rb") as f:
                data = tf.constant(f.read())
            dec = augment.decode_resized if op == "decode_resized" else data_lib.decode_eval_image
            fn = tf.function(lambda x, dec=dec, data=data: dec(data, size))
        else:
            fn = tf.function(lambda x, op=op: rand_augment.apply_op(x, op, 0.5))
        fn(image)
        t0 = time.perf_counter()
        for _ in range(reps):
            fn(image).numpy()
        out.append((op, reps / (time.perf_counter() - t0)))
    return out


def _task(batch: int, num_seen: int):
    from sdl_tf.training import task as task_lib

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(num_seen, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    model = ModelConfig(backbone=FLAGS.step_backbone, weights="none", image_size=224,
                        num_rows=7, dim=DIM)
    cfg = TrainConfig(model_dir="unused", model=model, batch_size=batch)
    return task_lib.SDLTask(cfg, vectors, tf.distribute.get_strategy(), total_steps=1000)


def time_steps(trainer, batches, steps: int) -> float:
    """Images/s of `trainer.train_step` over `steps` batches from the iterator `batches`."""
    for _ in range(2):
        trainer.train_step(next(batches))["loss"].numpy()
    t0 = time.perf_counter()
    n = 0
    for _ in range(steps):
        b = next(batches)
        n += int(b[0].shape[0])
        out = trainer.train_step(b)
    out["loss"].numpy()
    return n / (time.perf_counter() - t0)


def main(argv):
    del argv
    cores = len(os.sched_getaffinity(0))
    data_dir = os.path.join(FLAGS.work_dir, "data")
    n = write_shards(FLAGS.photos, data_dir)
    base = DataConfig(data_dir=data_dir)
    sizes = [int(s) for s in FLAGS.sizes]
    print(f"{n} photos from {FLAGS.photos}, batch {FLAGS.batch}, {cores} CPU cores, "
          f"{FLAGS.rounds} rounds of {FLAGS.batches} batches per measurement")
    for size in sizes:
        q = decode_quality(FLAGS.photos, size)
        if q["reduced"]:
            print(f"{size} px: {q['reduced']} of {n} photos decoded DCT-scaled; vs full decode: "
                  f"mean |diff| {q['mean_abs']:.2f}, p99 {q['p99']:.0f}, max {q['max']:.0f} "
                  f"(0-255), PSNR min {q['psnr_min']:.1f} dB, median {q['psnr_median']:.1f} dB; "
                  f"mean |diff| to a Lanczos resize of the full decode: full decode "
                  f"{q['eval_to_lanczos']:.2f}, DCT-scaled {q['dct_to_lanczos']:.2f}")
        else:
            print(f"{size} px: no photo is >= 2x the target per side: the full decode")
    variants = [("floor: decode_jpeg + antialiased resize", lambda s: floor_dataset(
                    base, s, FLAGS.batch, data_lib.decode_eval_image)),
                ("new floor: augment.decode_resized (DCT-scaled)", lambda s: floor_dataset(
                    base, s, FLAGS.batch, augment.decode_resized))]
    for name, fields in MODES:
        cfg = dataclasses.replace(base, **fields)
        variants.append((name, lambda s, cfg=cfg: mode_dataset(cfg, s, FLAGS.batch)))
    # Each variant is timed right after the floor, and its ratio is taken to that floor
    # measurement: on a shared machine the load drifts between measurements, so a ratio of
    # neighbours (median over rounds) is steadier than the ratio of two best-ofs.
    best, ratios = {}, {}
    for _ in range(FLAGS.rounds):
        for size in sizes:
            for name, make in variants[1:]:
                pair = [time_dataset(lambda mk=mk, size=size: mk(size), FLAGS.batches)
                        for mk in (variants[0][1], make)]
                for v, ips in zip((variants[0][0], name), pair, strict=True):
                    best[v, size] = max(best.get((v, size), 0.0), ips)
                ratios.setdefault((name, size), []).append(pair[1] / pair[0])
    header = ("| pipeline | " + " | ".join(f"{s} px img/s/core | ratio" for s in sizes)
              + " |")
    print("\n" + header)
    print("|---|" + "---:|---:|" * len(sizes))
    for name, _ in variants:
        cells = [f"{best[name, s] / cores:.0f} | "
                 f"{np.median(ratios.get((name, s), [1.0])):.2f}x" for s in sizes]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("(img/s/core: best of the rounds; ratio: median over the rounds of the mode's images/s "
          "over the floor's measured just before it)")
    if FLAGS.op_costs:
        photo = sorted(glob.glob(os.path.join(FLAGS.photos, "*.jpg")))[0]
        for size in sizes:
            print(f"\nops on one photo at {size} px (images/s, one graph call each):")
            for op, ips in time_ops(photo, size):
                print(f"  {op:<16} {ips:8.0f}")
    if FLAGS.step_steps:
        space = LabelSpace.load(data_dir)
        trainer = _task(FLAGS.step_batch, len(space.seen_indices))
        rng = np.random.default_rng(0)
        memory = (tf.constant(rng.integers(0, 256, (FLAGS.step_batch, 224, 224, 3), np.uint8)),
                  tf.constant(np.where(rng.random((FLAGS.step_batch, len(space.seen_indices)))
                                       < 0.15, 1.0, 0.0).astype(np.float32)))

        def forever(batch):
            while True:
                yield batch

        fed_modes = [MODES[3], MODES[4]]
        best, ratios = {}, {}
        for _ in range(FLAGS.step_rounds):
            for name, fields in fed_modes:  # in-memory, then fed: a ratio of neighbours
                pair = [time_steps(trainer, forever(memory), FLAGS.step_steps)]
                it = iter(mode_dataset(dataclasses.replace(base, **fields), 224,
                                       FLAGS.step_batch))
                pair.append(time_steps(trainer, it, FLAGS.step_steps))
                del it
                for v, ips in zip(("in-memory batch", name), pair, strict=True):
                    best[v] = max(best.get(v, 0.0), ips)
                ratios.setdefault(name, []).append(pair[1] / pair[0])
        print(f"\n| {FLAGS.step_backbone} train step at 224, batch {FLAGS.step_batch} | "
              "images/s | fed / in-memory |")
        print("|---|---:|---:|")
        for name, ips in best.items():
            print(f"| {name} | {ips:.1f} | {np.median(ratios.get(name, [1.0])):.2f}x |")


if __name__ == "__main__":
    app.run(main)
