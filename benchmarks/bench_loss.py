"""Benchmark: SDL loss forward+backward vs the bare scoring einsum forward+backward.

The bare work is eq. (1)'s scores s = max_m A t_c for every label and their gradient w.r.t. A
(the irreducible part of any loss over these scores). The SDL loss adds the pairwise softplus
term over (B, P_max, C), the SDW and the regulariser. Both run as `tf.function`s on the same
inputs; repetitions alternate between them so all see the same load on a shared machine.
"loss" is what `SDLLoss` runs (the pairwise term in the fused XLA kernel); the "ref" columns
time the same loss with the pairwise term in plain `keras.ops`
(`losses._pairwise_sum_reference`, its specification).

    .venv/bin/python benchmarks/bench_loss.py            # NUS-WIDE and Open Images shapes
    .venv/bin/python benchmarks/bench_loss.py --quick    # small shapes, few repetitions

Figures: benchmarks/README.md.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from sdl_tf.modeling import losses, scoring  # noqa: E402

# name: (B, M, d, C, mean positives per image, fraction of verified negatives)
CASES = {
    "nus_wide": (192, 7, 300, 925, 10, 0.0),
    "openimages": (96, 7, 300, 7186, 20, 0.002),
    "quick_nus_wide": (32, 7, 300, 925, 10, 0.0),
    "quick_openimages": (16, 7, 300, 7186, 20, 0.002),
}


def make_inputs(b, m, d, c, mean_pos, neg_frac, seed=0):
    """Random matrices (B, M, d), unit label vectors (C, d), targets in {1, 0, -1}."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((c, d)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    matrices = (0.1 * rng.standard_normal((b, m, d))).astype(np.float32)
    targets = np.where(rng.random((b, c)) < neg_frac, -1.0, 0.0).astype(np.float32)
    for i, k in enumerate(1 + rng.poisson(mean_pos - 1, size=b)):
        targets[i, rng.choice(c, size=k, replace=False)] = 1.0
    return matrices, vectors, targets


def bench_case(name, reps):
    b, m, d, c, mean_pos, neg_frac = CASES[name]
    matrices, vectors, targets = make_inputs(b, m, d, c, mean_pos, neg_frac)
    a = tf.constant(matrices)
    y = tf.constant(targets)
    t = tf.constant(vectors)
    loss_fn = losses.SDLLoss(vectors)

    def make_sdl_step():
        @tf.function
        def sdl_step(a, y):
            with tf.GradientTape() as tape:
                tape.watch(a)
                loss = loss_fn(y, a)
            return loss, tape.gradient(loss, a)

        return sdl_step

    @tf.function
    def bare_step(a, y):
        with tf.GradientTape() as tape:
            tape.watch(a)
            # Any scalar of the scores; the mean keeps the backward pass of the same shape.
            loss = tf.reduce_mean(scoring.scores_from_matrices(a, t))
        return loss, tape.gradient(loss, a)

    # Each step is traced with one implementation of the pairwise term; the graph keeps it.
    pairwise = {"sdl": losses._pairwise_sum, "ref": losses._pairwise_sum_reference}
    steps = {"sdl": make_sdl_step(), "bare": bare_step, "ref": make_sdl_step()}
    default = losses._pairwise_sum
    for key, fn in steps.items():  # trace + warm up
        losses._pairwise_sum = pairwise.get(key, default)
        try:
            for _ in range(2):
                fn(a, y)[1].numpy()
        finally:
            losses._pairwise_sum = default
    times = {key: [] for key in steps}
    for _ in range(reps):
        for key, fn in steps.items():
            start = time.perf_counter()
            fn(a, y)[1].numpy()
            times[key].append(time.perf_counter() - start)
    sdl, bare, ref = (np.median(times[key]) for key in ("sdl", "bare", "ref"))
    p_max = int((targets == 1).sum(1).max())
    return b, c, p_max, sdl, bare, ref


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few repetitions")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per function")
    args = parser.parse_args()
    names = ["quick_nus_wide", "quick_openimages"] if args.quick else ["nus_wide", "openimages"]
    reps = args.reps or (5 if args.quick else 20)
    print(
        f"{'case':<18}{'B':>5}{'C':>7}{'P_max':>7}{'loss ms':>10}{'bare ms':>10}{'ratio':>8}"
        f"{'ref ms':>9}{'ref ratio':>11}"
    )
    for name in names:
        b, c, p_max, sdl, bare, ref = bench_case(name, reps)
        print(
            f"{name:<18}{b:>5}{c:>7}{p_max:>7}{1e3 * sdl:>10.1f}{1e3 * bare:>10.1f}"
            f"{sdl / bare:>8.2f}{1e3 * ref:>9.1f}{ref / bare:>11.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
