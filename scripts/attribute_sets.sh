#!/usr/bin/env bash
# The from-scratch recipe on generated "attribute object" sets, as a user would run it on their
# own 64x64 images (`make attribute-sets`): for each family:seed in SETS, a set written by
# scripts/make_attribute_set.py, then `sdl_tf.train --flagfile=configs/demo.flags` with only
# --data_dir, --model_dir and --val_fraction=0.1 (plus $EXTRA_FLAGS, empty by default), then
# `sdl_tf.evaluate --split=test`. Prints and writes $OUT/attribute_sets.md: test ZSL / GZSL
# mAP, training wall seconds, and the bag-of-words oracle (scripts/attribute_set_ceiling.py).
# Expected: about 2-5 minutes per set on 2 CPU cores (7 sets: ~14-35 minutes). Rerunning reuses
# finished sets and trainings.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${ATTR_OUT:-attr_out}
SETS=${SETS:-texture_shape:0 texture_shape:1 texture_shape:2 texture_shape:3 colour_shape:1 size_shape:2 pattern_colour:0}
EXTRA_FLAGS=${EXTRA_FLAGS:-}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
step() { printf '\n==== [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

rows=()
for item in $SETS; do
  family=${item%%:*}
  seed=${item##*:}
  dir="$OUT/${family}_$seed"
  if [ ! -f "$dir/data/labels.json" ]; then
    step "$family seed $seed: generate -> $dir"
    $PY scripts/make_attribute_set.py --family="$family" --seed="$seed" --out="$dir"
  fi
  if [ ! -f "$dir/sdl/final.keras" ]; then
    step "$family seed $seed: train (configs/demo.flags $EXTRA_FLAGS)"
    begin=$(date +%s)
    # shellcheck disable=SC2086  # EXTRA_FLAGS is a list of flags
    $PY -m sdl_tf.train --flagfile=configs/demo.flags --data_dir="$dir/data" \
      --model_dir="$dir/sdl" --val_fraction=0.1 --progress=false --overwrite $EXTRA_FLAGS
    echo $(( $(date +%s) - begin )) > "$dir/sdl/train_seconds.txt"
  fi
  if [ ! -f "$dir/sdl/eval/test_metrics.json" ]; then
    $PY -m sdl_tf.evaluate --model_dir="$dir/sdl" --split=test --progress=false > /dev/null
  fi
  rows+=("$family $seed $dir")
done

step "table -> $OUT/attribute_sets.md"
$PY - "$OUT/attribute_sets.md" "${rows[@]}" <<'PY'
import json
import os
import sys

sys.path.insert(0, "scripts")
from attribute_set_ceiling import ceiling  # noqa: E402

lines = ["| Set (family, seed) | SDL ZSL / GZSL mAP | training (s) | oracle ZSL / GZSL |",
         "|---|---|---|---|"]
zsl, gzsl = [], []
for row in sys.argv[2:]:
    family, seed, path = row.split(" ", 2)
    with open(os.path.join(path, "sdl", "eval", "test_metrics.json"), encoding="utf-8") as f:
        m = json.load(f)
    seconds_path = os.path.join(path, "sdl", "train_seconds.txt")
    seconds = "-"  # trained by hand into this folder, not timed by this script
    if os.path.exists(seconds_path):
        with open(seconds_path, encoding="utf-8") as f:
            seconds = f.read().strip()
    oz, og = ceiling(path)["bag_of_words"]
    zsl.append(m["zsl"]["mAP"])
    gzsl.append(m["gzsl"]["mAP"])
    lines.append(f"| {family.replace('_', ' x ')}, {seed} | {zsl[-1]:.1f} / {gzsl[-1]:.1f} "
                 f"| {seconds} | {oz:.1f} / {og:.1f} |")
lines.append(f"| mean | {sum(zsl) / len(zsl):.1f} / {sum(gzsl) / len(gzsl):.1f} | | |")
text = "\n".join(lines) + "\n"
with open(sys.argv[1], "w", encoding="utf-8") as f:
    f.write(text)
print(text)
PY
