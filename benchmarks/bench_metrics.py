"""Benchmark: streaming ZSL/GZSL evaluation vs the bare score matrix product, with peak RSS.

For each shape (N images x C labels, M = 7, d = 300), a fresh subprocess
1. times the bare score product: one (B*M, d) x (d, C) GEMM per batch into a reused buffer
   (the physical floor of any evaluation), and
2. times `ZSLEvaluator.update` on the same batch (alternating, so both see the same load),
   then `ZSLEvaluator.result()`;
and reports seconds, the ratio evaluator / bare product (wall clock, and CPU time summed over
threads, which is less sensitive to other processes on a shared machine), and the subprocess
peak RSS.
Random inputs are generated per batch outside the timed regions (never an N x M x d array).

    .venv/bin/python benchmarks/bench_metrics.py            # 20,000 x 1,006 and 125,000 x 7,586
    .venv/bin/python benchmarks/bench_metrics.py --quick    # small shapes
    .venv/bin/python benchmarks/bench_metrics.py --case=openimages

Targets: Open Images scale < 4 min, ratio <= 2, peak RSS < 6 GB.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

CASES = {
    # name: (N, C, unseen, mean positives per image)
    "nus_wide": (20_000, 1_006, 81, 3),
    "openimages": (125_000, 7_586, 400, 10),
    "quick_nus_wide": (2_000, 1_006, 81, 3),
    "quick_openimages": (4_000, 7_586, 400, 10),
}
M, D, BATCH = 7, 300, 1024


def _batch(rng, vectors, b, mean_pos):
    """Random (b, M, D) matrices and sparse {0,1} labels with ~mean_pos positives per image."""
    c = vectors.shape[0]
    matrices = rng.standard_normal((b, M, D), dtype=np.float32) * 0.1
    labels = np.zeros((b, c), np.uint8)
    counts = 1 + rng.poisson(mean_pos - 1, size=b)
    rows = np.repeat(np.arange(b), counts)
    labels[rows, rng.integers(0, c, size=rows.size)] = 1
    return matrices, labels


def run_case(name):
    """Runs one case in this process; prints one JSON line."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from sdl_tf import metrics

    n, c, num_unseen, mean_pos = CASES[name]
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((c, D), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors_t = np.ascontiguousarray(vectors.T)
    unseen = rng.choice(c, size=num_unseen, replace=False)
    sizes = [min(BATCH, n - s) for s in range(0, n, BATCH)]

    # Bare product and evaluator alternate batch by batch so both see the same machine load
    # (the machine is shared); wall and CPU (all threads) time are both recorded.
    evaluator = metrics.ZSLEvaluator(vectors, unseen, ks=(3, 5, 10, 20))
    workspace = np.empty((BATCH * M, c), np.float32)  # the floor writes into a reused buffer
    bare = update = bare_cpu = update_cpu = 0.0
    batch_rng = np.random.default_rng(1)
    for b in sizes:
        matrices, labels = _batch(batch_rng, vectors, b, mean_pos)
        wall, cpu = time.perf_counter(), time.process_time()
        np.matmul(matrices.reshape(-1, D), vectors_t, out=workspace[: b * M])
        bare += time.perf_counter() - wall
        bare_cpu += time.process_time() - cpu
        wall, cpu = time.perf_counter(), time.process_time()
        evaluator.update(matrices, labels)
        update += time.perf_counter() - wall
        update_cpu += time.process_time() - cpu
    del workspace
    wall, cpu = time.perf_counter(), time.process_time()
    result = evaluator.result()
    finish = time.perf_counter() - wall
    finish_cpu = time.process_time() - cpu
    print(
        json.dumps(
            {
                "case": name,
                "n": n,
                "c": c,
                "bare_s": bare,
                "update_s": update,
                "result_s": finish,
                "eval_s": update + finish,
                "ratio": (update + finish) / bare,
                "bare_cpu_s": bare_cpu,
                "eval_cpu_s": update_cpu + finish_cpu,
                "cpu_ratio": (update_cpu + finish_cpu) / bare_cpu,
                "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                "gzsl_mAP": result["gzsl"]["mAP"],
            }
        ),
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes")
    parser.add_argument("--case", choices=sorted(CASES), help="run only this case")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        run_case(args._child)
        return
    names = [args.case] if args.case else (
        ["quick_nus_wide", "quick_openimages"] if args.quick else ["nus_wide", "openimages"]
    )
    print(
        f"{'case':<18}{'N x C':>16}{'bare s':>9}{'eval s':>9}{'update':>9}{'result':>9}"
        f"{'ratio':>7}{'cpu ratio':>10}{'peak RSS GB':>13}"
    )
    for name in names:
        # A fresh process per case, so ru_maxrss is this case's peak.
        out = subprocess.run(
            [sys.executable, __file__, f"--_child={name}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"{name:<18}{r['n']:>9,} x {r['c']:<5,}{r['bare_s']:>8.1f} {r['eval_s']:>8.1f} "
            f"{r['update_s']:>8.1f} {r['result_s']:>8.1f} {r['ratio']:>6.2f} "
            f"{r['cpu_ratio']:>9.2f} {r['peak_rss_gb']:>12.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
