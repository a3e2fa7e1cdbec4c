"""Benchmark: ZSL/GZSL evaluation as `sdl_tf.evaluate` runs it, against its floors.

(a) `sdl_tf.evaluation.evaluator.evaluate` end to end (TFRecords -> JPEG decoding -> model ->
    eq. (1) scores -> metrics, row usage, diverse subset -> output files) on a small model (`tiny`
    backbone, M = 3, on the 64x64 `data_prep.demo` test split, random weights) against the
    model's forward pass alone on the same images (decoded beforehand, in memory) at the same
    batch size.
(b) Open Images scale (C = 7,586 labels, 400 unseen, M = 7, d = 300, ks = 10, 20, batch 64 as
    `--batch_size` defaults): `sdl_tf.evaluation.evaluator.predict_and_evaluate`, i.e. the calls
    evaluate makes per batch after the forward pass (NumPy eq. (1) scores,
    `ZSLEvaluator.update_scores`, row usage, the diverse subset) and at the end (`result()`), on
    random matrices fed through an identity "model", against the bare score GEMM: one (B*M, d) x (d,
    C) matmul per batch into a reused buffer, run batch by batch just before evaluation takes the
    batch (so both sides see the same machine load) and subtracted from the evaluation's time.

Each side of a ratio is timed `--repeats` times ((a): alternately, as the machine may be
shared); the best time of each side is reported. Ratio = time / floor time (1.0 = nothing
beyond the floor).

    .venv/bin/python benchmarks/bench_metrics.py                 # both, ~2 min on 2 cores
    .venv/bin/python benchmarks/bench_metrics.py --num_images=20000 --demo_images=0
"""

import argparse
import contextlib
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

M, D, C, UNSEEN, KS, BATCH = 7, 300, 7_586, 400, (10, 20), 64


def _best_alternating(fns, repeats):
    """Runs each zero-argument callable `repeats` times, alternately; best seconds of each."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def bench_end_to_end(num_images, batch_size, repeats, root):
    """(a): evaluate() end to end vs the forward pass alone (files under `root`); a dict."""
    from data_prep.demo import DemoConfig, prepare
    from sdl_tf.config import DataConfig, EvalConfig, ModelConfig, TrainConfig, save_config
    from sdl_tf.data import pipeline as data_lib
    from sdl_tf.evaluation import evaluator
    from sdl_tf.labels.label_space import LabelSpace
    from sdl_tf.modeling.model import build_model
    from tests.helpers import tiny_backbone

    tiny_backbone.register()  # the small model's backbone: the tests' CNN
    data_dir, model_dir = os.path.join(root, "data"), os.path.join(root, "run")
    prepare(DemoConfig(output_dir=data_dir, num_train=1, num_val=1, num_test=num_images,
                       image_size=64, num_samples=0, train_shards=1, progress=False))
    space = LabelSpace.load(data_dir)
    cfg = TrainConfig(model_dir=model_dir, data=DataConfig(data_dir=data_dir),
                      model=ModelConfig(backbone="tiny", weights="none", image_size=64,
                                        num_rows=3, dim=space.dim), eval_ks=(3, 5))
    os.makedirs(model_dir)
    model = build_model(cfg.model)
    model.save(os.path.join(model_dir, "final.keras"))
    space.save(model_dir)
    save_config(cfg, os.path.join(model_dir, "config.json"))

    eval_cfg = EvalConfig(model_dir=model_dir, batch_size=batch_size,
                          output_dir=os.path.join(root, "eval"))
    # The same images, decoded once and held in memory, for the forward pass alone.
    ds = data_lib.eval_dataset(cfg.data, "test", image_size=64, num_labels=space.num_labels,
                               batch_size=batch_size)
    images = [batch[0] for batch in ds]
    predict = evaluator._predict_fn(model)  # the traced call evaluate uses
    predict(images[0])  # trace once, outside the timing

    def forward():
        for x in images:
            predict(x).numpy()

    def end_to_end():
        evaluator.evaluate(eval_cfg, progress=False)

    # evaluate prints its tables and logs.
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), \
            contextlib.redirect_stderr(devnull):
        e2e, fwd = _best_alternating([end_to_end, forward], repeats)
    return {"images": num_images, "labels": space.num_labels, "e2e_s": e2e, "forward_s": fwd}


class _Identity:
    """A "model" whose output is its input: the batches are already the matrices."""

    def __call__(self, images, training=False):
        return images


def bench_open_images(num_images, batch_size, repeats):
    """(b): evaluation's per-batch and final work at Open Images scale vs the bare GEMM."""
    import tensorflow as tf

    from sdl_tf.evaluation import evaluator
    from sdl_tf.labels.label_space import LabelSpace

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((C, D), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    unseen = np.zeros(C, bool)
    unseen[rng.choice(C, UNSEEN, replace=False)] = True
    space = LabelSpace(names=tuple(f"l{i}" for i in range(C)), unseen=unseen, vectors=vectors)
    batches = []
    for start in range(0, num_images, batch_size):
        b = min(batch_size, num_images - start)
        matrices = rng.standard_normal((b, M, D), dtype=np.float32) * 0.1
        labels = np.zeros((b, C), np.float32)  # multi-hot, float32 as the eval pipeline's
        rows = np.repeat(np.arange(b), 1 + rng.poisson(9, size=b))
        labels[rows, rng.integers(0, C, size=rows.size)] = 1.0
        batches.append((tf.constant(matrices), tf.constant(labels)))
    model = _Identity()
    vectors_t = np.ascontiguousarray(vectors.T)
    workspace = np.empty((batch_size * M, C), np.float32)

    bare = [0.0]

    def interleaved():
        """The batches; before yielding each, times the bare GEMM of that batch."""
        for matrices, labels in batches:
            start = time.perf_counter()
            x = matrices.numpy().reshape(-1, D)
            np.matmul(x, vectors_t, out=workspace[: x.shape[0]])
            bare[0] += time.perf_counter() - start
            yield matrices, labels

    evaluator.predict_and_evaluate(model, batches[:1], space, ks=KS)  # trace the identity
    best_eval = best_bare = float("inf")
    for _ in range(repeats):
        bare[0] = 0.0
        start = time.perf_counter()
        evaluator.predict_and_evaluate(model, interleaved(), space, ks=KS,
                                        diverse_min_labels=6, diverse_k=10)
        best_eval = min(best_eval, time.perf_counter() - start - bare[0])
        best_bare = min(best_bare, bare[0])
    return {"images": num_images, "eval_s": best_eval, "bare_s": best_bare}


def _print_ratio(n: int, measured: tuple, floor: tuple) -> None:
    """Both times with their images/s, then the ratio measured / floor."""
    for name, seconds in (measured, floor):
        print(f"    {name:13s} {seconds:7.2f} s  {n / seconds:8.1f} images/s")
    print(f"    ratio {measured[0]} / {floor[0]}: {measured[1] / floor[1]:.2f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo_images", type=int, default=2000,
                        help="(a) test images of the demo set; 0 skips (a)")
    parser.add_argument("--num_images", type=int, default=4096,
                        help="(b) Open Images-scale images; 0 skips (b)")
    parser.add_argument("--batch_size", type=int, default=BATCH)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # evaluate retraces per loaded model, as users see it
    if args.demo_images:
        with tempfile.TemporaryDirectory(prefix="bench_metrics_") as root:
            r = bench_end_to_end(args.demo_images, args.batch_size, args.repeats, root)
        n = r["images"]
        print(f"(a) sdl_tf.evaluation.evaluator.evaluate end to end, tiny model, {n} images 64x64, "
              f"C = {r['labels']}, batch {args.batch_size}")
        _print_ratio(n, ("end to end", r["e2e_s"]), ("forward only", r["forward_s"]))
    if args.num_images:
        r = bench_open_images(args.num_images, args.batch_size, args.repeats)
        n = r["images"]
        print(f"(b) scores + metrics as evaluate runs them, {n} images x C = {C:,} "
              f"({UNSEEN} unseen), M = {M}, d = {D}, ks = {KS}, batch {args.batch_size}")
        _print_ratio(n, ("evaluation", r["eval_s"]), ("bare GEMM", r["bare_s"]))


if __name__ == "__main__":
    main()
