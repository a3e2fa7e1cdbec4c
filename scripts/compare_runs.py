"""Prints one markdown table comparing `sdl_tf.evaluate` results (its `*metrics.json` files).

Usage: python scripts/compare_runs.py RUN.json [RUN.json ...] [--out=table.md] [--seeds]

Without --seeds: one row per run and task (ZSL, GZSL), mAP and P/R/F1@K columns (an l2-scored
run is named "l2 (M=...)", paper section 4.1's baseline).
With --seeds: runs of the same method (its name without "seed N"; an l2-scored run is named
"l2 (M=...)", section 4.1's baseline) are one row per task, each cell "mean ± std" over the
runs (sample standard deviation), plus the number of seeds and, when the runs have it, the
GZSL F1 of paper Table 4's diverse images (more than `min_labels` positives, top-k).
"""

from __future__ import annotations

import json
import math
import re
import sys

_SEED = re.compile(r"\s*\(seed \d+\)|,? seed \d+")


def _cell(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def _load(paths: list[str]) -> list[dict]:
    runs = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            runs.append(json.load(f))
    return runs


def compare(paths: list[str]) -> str:
    """Markdown table: one row per run and task (ZSL, GZSL), mAP and P/R/F1@K columns."""
    runs = _load(paths)
    ks = runs[0]["ks"]
    head = ["Method", "Task", "mAP"] + [f"{m}@{k}" for k in ks for m in ("P", "R", "F1")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        for task in ("zsl", "gzsl"):
            r = run[task]
            cells = [method_name(run, keep_seed=True), task.upper(), _cell(r.get("mAP"))]
            cells += [_cell(r.get(f"{m}@{k}")) for k in ks for m in ("P", "R", "F1")]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def method_name(run: dict, keep_seed: bool = False) -> str:
    """The run's method (without its seed); an l2-scored model is section 4.1's baseline."""
    name = run["method"] if keep_seed else _SEED.sub("", run["method"]).strip()
    if run.get("scoring") == "l2":
        name = re.sub(r"^(SDL|Fast0Tag)", "l2", name)
    return name


def mean_std(values) -> str:
    """"mean ± std" (sample std; "mean" alone for one value, "-" when nothing is known)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return "-"
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return f"{mean:.1f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return f"{mean:.1f} ± {std:.1f}"


def aggregate(paths: list[str]) -> str:
    """Markdown table over seeds: one row per method and task, cells mean ± std."""
    runs = _load(paths)
    ks = runs[0]["ks"]
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(method_name(run), []).append(run)
    diverse = next((r["diverse"] for r in runs if r.get("diverse")), None)
    head = ["Method", "Task", "seeds", "mAP"] + [f"F1@{k}" for k in ks]
    if diverse:
        head.append(f"diverse F1@{diverse['k']}")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, group in groups.items():
        for task in ("zsl", "gzsl"):
            cells = [name, task.upper(), str(len(group)),
                     mean_std(r[task].get("mAP") for r in group)]
            cells += [mean_std(r[task].get(f"F1@{k}") for r in group) for k in ks]
            if diverse:
                k = diverse["k"]
                cells.append(mean_std(r.get("diverse", {}).get(task, {}).get(f"F1@{k}")
                                      for r in group))
            lines.append("| " + " | ".join(cells) + " |")
    if diverse:
        n = {r.get("diverse", {}).get("gzsl", {}).get("num_images") for r in runs} - {None}
        lines.append("")
        lines.append(f"Diverse images: more than {diverse['min_labels']} positives "
                     f"({', '.join(str(v) for v in sorted(n))} test "
                     "images in GZSL; none in ZSL unless an image has that many unseen labels).")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    out = None
    seeds = False
    paths = []
    for arg in argv[1:]:
        if arg.startswith("--out="):
            out = arg.split("=", 1)[1]
        elif arg == "--seeds":
            seeds = True
        else:
            paths.append(arg)
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    table = aggregate(paths) if seeds else compare(paths)
    print(table)
    if out:
        with open(out, "w", encoding="utf-8") as f:
            f.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
