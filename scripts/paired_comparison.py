"""Folds x seeds comparison of zero-shot methods, with paired differences (`make real-images`).

Usage: python scripts/paired_comparison.py RUNS_DIR [--out=comparison.md]

Reads the `sdl_tf.evaluate` results under RUNS_DIR laid out as
    fold<k>/seed<s>/<method>/eval/test_metrics.json     trained methods (sdl, fast0tag, l2)
    fold<k>/random/random_test_metrics.json             random scores (one per fold)
    fold<k>/supervised/eval/test_metrics.json           trained on all classes (upper bound)
and prints one markdown report:
  1. every method's ZSL / GZSL mAP and F1@K, mean ± std over its runs (folds x seeds);
  2. SDL minus each baseline, paired by (fold, seed): mean, standard error of the mean,
     mean / SE, the smallest difference and in how many pairs SDL is ahead;
  3. row diagnostics: the share of each image's top-K tags won by each row of A (largest
     first) and the mean pairwise cosine of the rows;
  4. the per-run mAPs of the trained methods.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import sys

METHODS = {"sdl": "SDL", "fast0tag": "Fast0Tag", "l2": "l2 baseline",
           "random": "random scores", "supervised": "supervised, all classes (upper bound)"}
TRAINED = ("sdl", "fast0tag", "l2")
_RUN = re.compile(r"fold(\d+)/(?:seed(\d+)/)?(\w+)/(?:eval/)?(?:random_)?test_metrics\.json$")


def load_runs(runs_dir: str) -> dict[tuple[str, int, int | None], dict]:
    """{(method, fold, seed or None): metrics JSON} of every result under `runs_dir`."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(runs_dir, "fold*", "**", "*test_metrics.json"),
                                 recursive=True)):
        m = _RUN.search(os.path.relpath(path, runs_dir).replace(os.sep, "/"))
        if not m or m.group(3) not in METHODS:
            continue
        with open(path, encoding="utf-8") as f:
            runs[(m.group(3), int(m.group(1)), None if m.group(2) is None else int(m.group(2)))] \
                = json.load(f)
    if not runs:
        raise SystemExit(f"paired_comparison: no */test_metrics.json results under {runs_dir}")
    return runs


def _mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def _metric_keys(runs) -> list[tuple[str, str]]:
    ks = next(iter(runs.values()))["ks"]
    return ([("zsl", "mAP"), ("gzsl", "mAP")]
            + [(task, f"F1@{k}") for k in ks for task in ("zsl", "gzsl")])


def method_table(runs) -> str:
    keys = _metric_keys(runs)
    head = ["method", "runs"] + [f"{t.upper()} {m}" for t, m in keys]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * len(keys)]
    for method, name in METHODS.items():
        rows = [r for (m, _, _), r in runs.items() if m == method]
        if not rows:
            continue
        cells = []
        for task, metric in keys:
            mean, std = _mean_std([r[task][metric] for r in rows])
            cells.append(f"{mean:.1f} ± {std:.1f}")
        lines.append(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(runs, reference: str = "sdl") -> str:
    lines = ["| SDL minus | task | pairs | mean | SE | mean / SE | smallest | SDL ahead |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for other in ("fast0tag", "l2"):
        pairs = sorted((f, s) for (m, f, s) in runs if m == reference
                       and (other, f, s) in runs)
        if not pairs:
            continue
        for task in ("zsl", "gzsl"):
            diffs = [runs[(reference, f, s)][task]["mAP"] - runs[(other, f, s)][task]["mAP"]
                     for f, s in pairs]
            mean, std = _mean_std(diffs)
            se = std / math.sqrt(len(diffs))
            ratio = f"{mean / se:.1f}" if se > 0 else "-"
            ahead = sum(d > 0 for d in diffs)
            lines.append(f"| {METHODS[other]} | {task.upper()} mAP | {len(diffs)} | "
                         f"{mean:+.2f} | {se:.2f} | {ratio} | {min(diffs):+.2f} | "
                         f"{ahead} of {len(diffs)} |")
    return "\n".join(lines)


def per_run_table(runs) -> str:
    methods = [m for m in TRAINED if any(k[0] == m for k in runs)]
    head = ["fold", "seed"] + [f"{METHODS[m]} {t}" for m in methods for t in ("ZSL", "GZSL")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for f, s in sorted({(f, s) for (m, f, s) in runs if m in TRAINED}):
        cells = []
        for m in methods:
            r = runs.get((m, f, s))
            cells += ([f"{r['zsl']['mAP']:.1f}", f"{r['gzsl']['mAP']:.1f}"] if r
                      else ["-", "-"])
        lines.append(f"| {f} | {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rows_table(runs) -> str:
    """Row diagnostics of the trained methods: which row of A wins each image's top-K tags
    (shares sorted largest first, averaged over runs) and the mean pairwise row cosine."""
    lines = ["| method | M | share of tags per row (largest first) | row cosine | "
             "per-image entropy / log M |", "|---|---:|---|---:|---:|"]
    for method in TRAINED:
        usages = [r["row_usage"] for (m, _, _), r in runs.items()
                  if m == method and r.get("row_usage")]
        if not usages:
            continue
        num_rows = usages[0]["num_rows"]
        shares = [sorted(u["share"], reverse=True) for u in usages if u["num_rows"] == num_rows]
        mean_share = [sum(col) / len(col) for col in zip(*shares, strict=True)]
        cosines = [u["mean_cosine"] for u in usages if u.get("mean_cosine") is not None]
        entropy = [u["mean_image_entropy_normalized"] for u in usages
                   if u.get("mean_image_entropy_normalized") is not None]
        cell = lambda v: f"{sum(v) / len(v):.2f}" if v else "-"  # noqa: E731
        lines.append(f"| {METHODS[method]} | {num_rows} | "
                     + " / ".join(f"{x:.2f}" for x in mean_share)
                     + f" | {cell(cosines)} | {cell(entropy)} |")
    return "\n".join(lines)


def report(runs_dir: str) -> str:
    runs = load_runs(runs_dir)
    return ("## Methods (mean ± std over folds x seeds)\n\n" + method_table(runs)
            + "\n\n## SDL minus each baseline, paired by fold and seed (mAP points)\n\n"
            + paired_table(runs) + "\n\n## Rows of A on the test images (top-K tags)\n\n"
            + rows_table(runs) + "\n\n## Per run (mAP)\n\n" + per_run_table(runs) + "\n")


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--out=")]
    outs = [a.split("=", 1)[1] for a in argv if a.startswith("--out=")]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    text = report(args[0])
    print(text)
    if outs:
        with open(outs[0], "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
