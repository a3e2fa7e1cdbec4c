#!/usr/bin/env bash
# Equal-budget comparison on the demo set over 3 seeds (`make demo-compare`): for each seed,
# a demo set generated with that seed, then SDL (configs/demo.flags), Fast0Tag
# (demo_fast0tag.flags), the M-direction l2 baseline of paper section 4.1 (demo_l2.flags) and
# random scores, all evaluated on the test split; mean ± std over the seeds in
# $OUT/comparison.md (per-seed rows in $OUT/comparison_per_seed.md).
# Seed 0 reuses `make demo`'s runs ($OUT/data, $OUT/sdl, $OUT/fast0tag, $OUT/l2); seeds 1-2
# live in $OUT/seed<N>/. Expected: 25-50 minutes on 2 CPU cores (9 trainings of 1.5-4 minutes).
# Rerunning reuses finished steps.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${DEMO_OUT:-demo_out}
SEEDS=${SEEDS:-0 1 2}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
step() { printf '\n==== [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
start=$(date +%s)

results=()
for seed in $SEEDS; do
  dir="$OUT"
  [ "$seed" = 0 ] || dir="$OUT/seed$seed"
  step "seed $seed: synthetic data -> $dir/data"
  $PY -m data_prep.demo --output_dir="$dir/data" --seed="$seed" --progress=false
  for method in sdl fast0tag l2; do
    flags=configs/demo.flags
    [ "$method" = sdl ] || flags="configs/demo_$method.flags"
    step "seed $seed: train $method ($flags)"
    $PY -m sdl_tf.train --flagfile="$flags" --data_dir="$dir/data" --model_dir="$dir/$method" \
      --seed="$seed" --progress=false
    if [ ! -f "$dir/$method/eval/test_metrics.json" ] || \
       [ "$dir/$method/final.keras" -nt "$dir/$method/eval/test_metrics.json" ]; then
      $PY -m sdl_tf.evaluate --model_dir="$dir/$method" --split=test
    fi
    results+=("$dir/$method/eval/test_metrics.json")
  done
  $PY -m sdl_tf.evaluate --model_dir="$dir/sdl" --split=test --baseline=random --seed="$seed" \
    --output_dir="$dir/random"
  results+=("$dir/random/random_test_metrics.json")
done

step "mean ± std over seeds ($SEEDS)"
$PY scripts/compare_runs.py --seeds "${results[@]}" --out="$OUT/comparison.md"
$PY scripts/compare_runs.py "${results[@]}" --out="$OUT/comparison_per_seed.md" > /dev/null
step "done in $(( $(date +%s) - start )) s: $OUT/comparison.md ($OUT/comparison_per_seed.md)"
