#!/usr/bin/env bash
# End-to-end demo (the README's first command, via `make demo`): synthetic zero-shot data ->
# train SDL and the Fast0Tag baseline with the same budget -> evaluate both and a random-score
# baseline -> export SDL for TF Serving -> tag a few demo images (grid PNG + HTML).
# One seed; scripts/demo_compare.sh adds the M-direction l2 baseline (paper section 4.1) and
# repeats the comparison over 3 seeds (mean ± std). Expected: 3.5-9.5 minutes on 2 CPU cores
# (two trainings of 1.5-4 minutes). Rerunning reuses finished steps.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${DEMO_OUT:-demo_out}
SEED=${SEED:-0}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
step() { printf '\n==== [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
start=$(date +%s)

step "1/6 synthetic data -> $OUT/data (seed $SEED)"
$PY -m data_prep.demo --output_dir="$OUT/data" --seed="$SEED"

step "2/6 train SDL (configs/demo.flags)"
$PY -m sdl_tf.train --flagfile=configs/demo.flags --data_dir="$OUT/data" \
  --model_dir="$OUT/sdl" --seed="$SEED"

step "3/6 train the Fast0Tag baseline, same budget (configs/demo_fast0tag.flags)"
$PY -m sdl_tf.train --flagfile=configs/demo_fast0tag.flags --data_dir="$OUT/data" \
  --model_dir="$OUT/fast0tag" --seed="$SEED"

step "4/6 evaluate SDL, Fast0Tag and random scores on the test split"
$PY -m sdl_tf.evaluate --model_dir="$OUT/sdl" --split=test
$PY -m sdl_tf.evaluate --model_dir="$OUT/fast0tag" --split=test
$PY -m sdl_tf.evaluate --model_dir="$OUT/sdl" --split=test --baseline=random --seed="$SEED" \
  --output_dir="$OUT/random"
$PY scripts/compare_runs.py "$OUT/sdl/eval/test_metrics.json" \
  "$OUT/fast0tag/eval/test_metrics.json" "$OUT/random/random_test_metrics.json" \
  --out="$OUT/comparison.md"

step "5/6 export SDL as a SavedModel for TF Serving -> $OUT/saved_models/sdl_demo/1"
$PY -m sdl_tf.export --model_dir="$OUT/sdl" --export_dir="$OUT/saved_models" \
  --name=sdl_demo --version=1 --overwrite

step "6/6 tag the sample images with the exported model (unseen tags marked)"
$PY -m sdl_tf.predict --model="$OUT/saved_models/sdl_demo/1" --images="$OUT/data/samples" \
  --top_k=5 --output_dir="$OUT/predictions"

step "done in $(( $(date +%s) - start )) s: comparison in $OUT/comparison.md," \
  "tag grid in $OUT/predictions/"
