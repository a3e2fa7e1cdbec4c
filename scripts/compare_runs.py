"""Prints one markdown table comparing `sdl_tf.evaluate` results (its `*metrics.json` files).

Usage: python scripts/compare_runs.py RUN.json [RUN.json ...] [--out=table.md]
"""

from __future__ import annotations

import json
import sys


def _cell(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def compare(paths: list[str]) -> str:
    """Markdown table: one row per run and task (ZSL, GZSL), mAP and P/R/F1@K columns."""
    runs = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            runs.append(json.load(f))
    ks = runs[0]["ks"]
    head = ["Method", "Task", "mAP"] + [f"{m}@{k}" for k in ks for m in ("P", "R", "F1")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        for task in ("zsl", "gzsl"):
            r = run[task]
            cells = [run["method"], task.upper(), _cell(r.get("mAP"))]
            cells += [_cell(r.get(f"{m}@{k}")) for k in ks for m in ("P", "R", "F1")]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    out = None
    paths = []
    for arg in argv[1:]:
        if arg.startswith("--out="):
            out = arg.split("=", 1)[1]
        else:
            paths.append(arg)
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    table = compare(paths)
    print(table)
    if out:
        with open(out, "w", encoding="utf-8") as f:
            f.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
