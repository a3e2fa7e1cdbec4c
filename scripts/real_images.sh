#!/usr/bin/env bash
# Real-photo zero-shot benchmark (`make real-images`): 2x2 mosaics of the photos of an
# ImageNet-layout folder (default: the Tiny-ImageNet tarball), $FOLDS random 160 / 40
# seen / unseen class splits, and per fold and seed SDL (configs/tiny_imagenet.flags), Fast0Tag
# (tiny_imagenet_fast0tag.flags) and the l2 baseline (tiny_imagenet_l2.flags), same data,
# backbone and budget; random scores per fold; one model trained on every class (the `all/`
# set) scored on each fold as the supervised upper bound. Report: $OUT/comparison.md
# (scripts/paired_comparison.py: mean ± std over folds x seeds, SDL minus each baseline paired
# by fold and seed). The backbone's features are computed once per fold (--feature_cache_dir)
# and shared by the fold's runs. Rerunning reuses finished steps.
#   REAL_DATA  a .tar.gz / .zip of an ImageNet-layout folder, or the folder itself
#   REAL_OUT   output directory (default real_out); FOLDS (3), SEEDS ("0 1"), SPLIT_SEED (0)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
SRC=${REAL_DATA:-../shared/data/tiny_imagenet/tiny-imagenet-200-train250.tar.gz}
OUT=${REAL_OUT:-real_out}
FOLDS=${FOLDS:-3}
SEEDS=${SEEDS:-0 1}
SPLIT_SEED=${SPLIT_SEED:-0}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
step() { printf '\n==== [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
start=$(date +%s)

if [ ! -e "$SRC" ]; then
  echo "real-images: no data at $SRC; get Tiny-ImageNet (tiny-imagenet-200.zip from" \
    "https://cs231n.stanford.edu/tiny-imagenet-200.zip) and run" \
    "'make real-images REAL_DATA=<the zip or its tiny-imagenet-200 folder>'" >&2
  exit 1
fi
mkdir -p "$OUT"
src_dir=$SRC
if [ -f "$SRC" ]; then
  if [ ! -f "$OUT/source/.unpacked" ]; then
    step "unpack $SRC -> $OUT/source"
    rm -rf "$OUT/source" && mkdir -p "$OUT/source"
    case "$SRC" in
      *.zip) $PY -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
               "$SRC" "$OUT/source" ;;
      *) tar -xzf "$SRC" -C "$OUT/source" ;;
    esac
    touch "$OUT/source/.unpacked"
  fi
  train=$(find "$OUT/source" -maxdepth 3 -type d -name train | head -n 1)
  [ -n "$train" ] || { echo "real-images: no train/ folder in $SRC" >&2; exit 1; }
  src_dir=$(dirname "$train")
fi

mosaics=$OUT/mosaics
if [ ! -f "$mosaics/mosaics-summary.json" ]; then
  step "mosaics: $src_dir -> $mosaics ($FOLDS folds, seed $SPLIT_SEED)"
  $PY -m data_prep.mosaics --imagenet_dir="$src_dir" --output_dir="$mosaics" \
    --folds="$FOLDS" --seed="$SPLIT_SEED" --supervised --progress=false
fi

train_eval() {  # flags model_dir data_dir seed [evaluate flags...]
  local flags=$1 dir=$2 data=$3 seed=$4
  shift 4
  if [ ! -f "$dir/final.keras" ]; then
    $PY -m sdl_tf.train --flagfile="$flags" --data_dir="$data" --model_dir="$dir" \
      --seed="$seed" --feature_cache_dir="$OUT/features" --progress=false
  fi
  if [ ! -f "$dir/eval/test_metrics.json" ] || \
     [ "$dir/final.keras" -nt "$dir/eval/test_metrics.json" ]; then
    $PY -m sdl_tf.evaluate --model_dir="$dir" --split=test \
      --feature_cache_dir="$OUT/features" "$@" > /dev/null
  fi
}

runs=$OUT/runs
for ((k = 0; k < FOLDS; k++)); do
  data=$mosaics/fold$k/data
  for seed in $SEEDS; do
    for method in sdl fast0tag l2; do
      flags=configs/tiny_imagenet.flags
      [ "$method" = sdl ] || flags="configs/tiny_imagenet_$method.flags"
      step "fold $k seed $seed: $method ($flags)"
      train_eval "$flags" "$runs/fold$k/seed$seed/$method" "$data" "$seed"
    done
  done
  $PY -m sdl_tf.evaluate --data_dir="$data" --split=test --baseline=random --seed="$k" \
    --output_dir="$runs/fold$k/random" > /dev/null
done

step "supervised upper bound: SDL trained on every class ($mosaics/all)"
train_eval configs/tiny_imagenet.flags "$runs/supervised" "$mosaics/all/data" 0
for ((k = 0; k < FOLDS; k++)); do
  $PY -m sdl_tf.evaluate --model_dir="$runs/supervised" --data_dir="$mosaics/fold$k/data" \
    --split=test --unseen_from_data --output_dir="$runs/fold$k/supervised/eval" \
    --feature_cache_dir="$OUT/features" > /dev/null
done

step "comparison"
$PY scripts/paired_comparison.py "$runs" --out="$OUT/comparison.md"
step "done in $(( $(date +%s) - start )) s: $OUT/comparison.md"
