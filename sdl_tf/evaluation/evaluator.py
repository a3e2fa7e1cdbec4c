"""Evaluation: ZSL/GZSL mAP and P/R/F1@K (paper Tables 1-2), the diverse-image subset (Table 4).

Protocol (`sdl_tf.evaluation.metrics`): ZSL ranks only the unseen labels, GZSL all labels;
images without a positive among the ranked labels are dropped; P/R/F1@K are micro-averaged; mAP
is the mean over labels of the AP of ranking the images by that label's score (tag-based retrieval).

Scores are s_ij = max_m (A_i t_j) (eq. 1) computed in streaming fashion, so memory stays
O(batch x C) except for the (few) diverse images, whose score rows are kept for Table 4. A model
also gets its row usage (Figure 3 made measurable, `sdl_tf.evaluation.row_usage`).

`evaluate` evaluates a training run's directory (`sdl_tf.modeling.run_dir`: the model, its
label space and config) or the seeded random baseline, and writes the result files.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import sys
import weakref

import numpy as np
import tensorflow as tf

from sdl_tf import errors
from sdl_tf.config import DataConfig, EvalConfig, TrainConfig
from sdl_tf.data import feature_cache
from sdl_tf.data import pipeline as data_lib
from sdl_tf.evaluation.metrics import ZSLEvaluator, evaluate_scores
from sdl_tf.evaluation.row_usage import RowUsage, row_usage_table
from sdl_tf.labels.label_space import LabelSpace
from sdl_tf.modeling import run_dir
from sdl_tf.modeling.model import split_model
from sdl_tf.modeling.scoring import NumpyScorer
from sdl_tf.utils import atomic_io

# Where `evaluate` writes, in the output dir, each name after a `<split>_` (or
# `random_<split>_`) prefix.
OUTPUT_FILES = ("metrics.json", "metrics.md", "per_label_ap.csv")


def log(msg: str) -> None:
    print(f"[sdl_tf.evaluate] {msg}", file=sys.stderr, flush=True)


_PREDICT_FNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def predict_fn(model):
    """The model's traced inference function, `images -> matrices` (one per model: validation
    runs every epoch)."""
    if model not in _PREDICT_FNS:

        @tf.function(reduce_retracing=True, autograph=False)
        def predict(images):
            return model(images, training=False)

        _PREDICT_FNS[model] = predict
    return _PREDICT_FNS[model]


class _DiverseCollector:
    """Keeps score/label rows of images with more than `min_labels` positives (Table 4)."""

    def __init__(self, unseen_indices, min_labels: int):
        self.unseen = np.asarray(unseen_indices, np.int64)
        self.min_labels = min_labels
        self.rows = {"zsl": ([], []), "gzsl": ([], [])}

    def update(self, scores, labels):
        n_unseen = labels[:, self.unseen].sum(axis=1)
        n_all = labels.sum(axis=1)
        for task, n in (("zsl", n_unseen), ("gzsl", n_all)):
            keep = n > self.min_labels
            if keep.any():
                self.rows[task][0].append(scores[keep])
                self.rows[task][1].append(labels[keep])

    def result(self, k: int) -> dict:
        out = {}
        for task in ("zsl", "gzsl"):
            scores, labels = self.rows[task]
            if not scores:
                out[task] = {"num_images": 0, f"P@{k}": None, f"R@{k}": None, f"F1@{k}": None}
                continue
            r = evaluate_scores(np.concatenate(scores), np.concatenate(labels), self.unseen,
                                ks=(k,))[task]
            out[task] = {"num_images": int(r["num_images"]), f"P@{k}": float(r[f"P@{k}"]),
                         f"R@{k}": float(r[f"R@{k}"]), f"F1@{k}": float(r[f"F1@{k}"])}
        return out


def _scored_batches(model, dataset, label_space, scoring, random_seed):
    """Yields (labels (B, C), scores (B, C) float32, matrices (B, M, d) or None) per batch:
    eq. (1) on the model's matrices, or seeded uniform random scores (`random_seed`)."""
    if random_seed is not None:
        rng = np.random.default_rng(random_seed)
        for batch in dataset:
            labels = batch[1].numpy()
            yield (labels, rng.random((labels.shape[0], label_space.num_labels),
                                      dtype=np.float32), None)
        return
    # Eq. (1) in NumPy; the scorer reuses its transposed vectors and GEMM workspace per batch.
    scorer = NumpyScorer(label_space.vectors, scoring)
    predict = predict_fn(model)
    for batch in dataset:
        labels = batch[1].numpy()
        matrices = predict(batch[0]).numpy().astype(np.float32)
        yield labels, scorer.scores(matrices), matrices


def predict_and_evaluate(model, dataset, label_space, ks=(3, 5), scoring="max",
                         random_seed=None, diverse_min_labels=None, diverse_k=10,
                         progress=False, row_usage_k=None) -> dict:
    """Runs the model over `dataset` and evaluates ZSL/GZSL.

    Args:
        model: SDL model (images uint8 (B, H, W, 3) -> matrices (B, M, d)); unused when
            `random_seed` is given.
        dataset: yields (images, labels (B, C) multi-hot) (`sdl_tf.data.pipeline.eval_dataset`).
        label_space: the `LabelSpace` (vectors and unseen flags, all C labels).
        ks: K values for P/R/F1@K.
        scoring: "max" (eq. 1) or "l2".
        random_seed: if not None, score with seeded uniform random numbers (random baseline).
        diverse_min_labels: if set, also evaluate images with more than this many positives
            at top-`diverse_k` (Table 4), under key "diverse".
        progress: print a progress bar.
        row_usage_k: K of the row-usage statistics (`RowUsage`); default max(ks). Not computed
            for the random baseline (no matrices).

    Returns:
        The `ZSLEvaluator.result()` dict ({"zsl": ..., "gzsl": ...}) plus "diverse" if asked
        and "row_usage" (`RowUsage.result()`) for a model.
    """
    import keras

    evaluator = ZSLEvaluator(label_space.unseen_indices, ks=tuple(ks),
                             num_labels=label_space.num_labels)
    diverse = (_DiverseCollector(label_space.unseen_indices, diverse_min_labels)
               if diverse_min_labels is not None else None)
    rows = (RowUsage(label_space.vectors, row_usage_k or max(ks), scoring)
            if random_seed is None else None)
    bar = keras.utils.Progbar(None, unit_name="image") if progress else None
    seen = 0
    for labels, scores, matrices in _scored_batches(model, dataset, label_space, scoring,
                                                    random_seed):
        evaluator.update_scores(scores, labels)  # (checks the scores for NaN first)
        if rows is not None:
            rows.update(matrices, scores)
        if diverse is not None:
            diverse.update(scores, labels)
        seen += labels.shape[0]
        if bar is not None:
            bar.update(seen)
    if seen == 0:
        raise errors.SDLError("the evaluation split yielded no images")
    result = evaluator.result()
    if diverse is not None:
        result["diverse"] = {**diverse.result(diverse_k), "min_labels": diverse_min_labels,
                             "k": diverse_k}
    if rows is not None:
        result["row_usage"] = rows.result()
    return result


def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.1f}"


def markdown_tables(result: dict, ks, method: str = "SDL") -> str:
    """Tables 1-2 layout (P/R/F1 per K, then mAP; rows ZSL and GZSL) and Table 4's subset."""
    head = "| Method | Task |" + "".join(f" P@{k} | R@{k} | F1@{k} |" for k in ks) + " mAP |"
    sep = "|---|---|" + "---|---|---|" * len(ks) + "---|"
    lines = [head, sep]
    for i, task in enumerate(("zsl", "gzsl")):
        r = result[task]
        cells = "".join(f" {_fmt(r[f'P@{k}'])} | {_fmt(r[f'R@{k}'])} | {_fmt(r[f'F1@{k}'])} |"
                        for k in ks)
        lines.append(f"| {method if i == 0 else ''} | {task.upper()} |{cells} {_fmt(r['mAP'])} |")
    lines.append("")
    lines.append(f"Images: ZSL {result['zsl']['num_images']}, GZSL {result['gzsl']['num_images']}"
                 f"; labels: ZSL {result['zsl']['num_labels']}, GZSL "
                 f"{result['gzsl']['num_labels']}.")
    if "diverse" in result:
        d = result["diverse"]
        k = d["k"]
        lines += ["", f"Diverse images (more than {d['min_labels']} positives, top-{k}; "
                  "Table 4):", "", f"| Task | images | P@{k} | R@{k} | F1@{k} |",
                  "|---|---|---|---|---|"]
        for task in ("zsl", "gzsl"):
            r = d[task]
            lines.append(f"| {task.upper()} | {r['num_images']} | {_fmt(r[f'P@{k}'])} | "
                         f"{_fmt(r[f'R@{k}'])} | {_fmt(r[f'F1@{k}'])} |")
    if result.get("row_usage", {}).get("num_images"):
        lines += ["", *row_usage_table(result["row_usage"])]
    return "\n".join(lines) + "\n"


def per_label_csv(result: dict, label_space, label_counts) -> str:
    """CSV: label, unseen, num_positives, zsl_ap, gzsl_ap (AP in [0, 1], not percent; empty =
    not evaluated)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["label", "unseen", "num_positives", "zsl_ap", "gzsl_ap"])
    zsl = np.asarray(result["zsl"]["per_label_ap"], np.float64)
    gzsl = np.asarray(result["gzsl"]["per_label_ap"], np.float64)
    for i, name in enumerate(label_space.names):
        w.writerow([name, int(bool(label_space.unseen[i])), int(label_counts[i]),
                    "" if np.isnan(zsl[i]) else f"{zsl[i]:.4f}",
                    "" if np.isnan(gzsl[i]) else f"{gzsl[i]:.4f}"])
    return buf.getvalue()


def _jsonable(result: dict) -> dict:
    out = {}
    for key, value in result.items():
        if key == "per_label_ap":
            continue
        if isinstance(value, dict):
            out[key] = _jsonable(value)
        elif isinstance(value, np.generic):
            out[key] = value.item()
        else:
            out[key] = value
    return out


class _CountingDataset:
    """Wraps an eval dataset to count positives per label while iterating."""

    def __init__(self, ds, num_labels):
        self.ds = ds
        self.counts = np.zeros(num_labels, np.int64)

    def __iter__(self):
        for images, labels in self.ds:
            self.counts += labels.numpy().astype(np.int64).sum(axis=0)
            yield images, labels


def _run_config(cfg: EvalConfig) -> TrainConfig | None:
    """The evaluated run's config (None without a model dir or `config.json`); checks first
    that a model's run is finished."""
    if cfg.baseline != "random":
        run_dir.require_finished(cfg.model_dir, cfg.model_file)
    return run_dir.read_config(cfg.model_dir) if cfg.model_dir else None


def _settings(cfg: EvalConfig, run_config: TrainConfig | None) -> tuple[str, tuple, str]:
    """(data_dir, ks, scoring): the flags, else the run's config (saying so), else defaults."""
    data_dir, ks, scoring = cfg.data_dir, cfg.ks, cfg.scoring
    inherited = []
    if run_config is not None:
        if not data_dir:
            data_dir = run_config.data.data_dir
            inherited.append(f"data_dir={data_dir}")
        if not ks:
            ks = run_config.eval_ks
            inherited.append("ks=" + ",".join(str(k) for k in ks))
        if not scoring:
            scoring = run_config.scoring
            inherited.append(f"scoring={scoring}")
    if inherited:
        log(f"from the run's {run_dir.CONFIG_FILE}: {', '.join(inherited)}")
    if not data_dir:
        raise errors.ConfigError(
            f"--data_dir is required (no {run_dir.CONFIG_FILE} in the model dir)")
    data_lib.require_dataset(data_dir)
    return data_dir, ks or (3, 5), scoring or "max"


def _load(cfg: EvalConfig, run_config: TrainConfig | None, data_dir: str):
    """(model or None for the random baseline, label space, input image side, method name)."""
    if cfg.baseline == "random":
        own_labels = cfg.model_dir and tf.io.gfile.exists(
            run_dir.path(cfg.model_dir, run_dir.LABELS_FILE))
        label_space = (run_dir.read_label_space(cfg.model_dir) if own_labels
                       else LabelSpace.load(data_dir))
        return None, label_space, 32, f"Random (seed {cfg.seed})"  # 32: images not looked at
    model, label_space = run_dir.load(cfg.model_dir, filename=cfg.model_file)
    method = "SDL" if (run_config is None or run_config.model.num_rows > 1
                       or run_config.use_sdw or run_config.use_reg) else "Fast0Tag"
    if run_config is not None:
        method += f" (M={run_config.model.num_rows})"
    return model, label_space, int(model.input_shape[1]), method


def _with_data_labels(cfg: EvalConfig, label_space, data_dir: str, method: str):
    """Checks the data's label names against the model's; `unseen_from_data` takes the data's
    unseen flags. Returns (label space, method name)."""
    data_labels = LabelSpace.load(data_dir)
    if tuple(data_labels.names) != tuple(label_space.names):
        raise errors.ConfigError(
            f"label space of {data_dir} differs from the model's ({cfg.model_dir})")
    if cfg.unseen_from_data and not np.array_equal(data_labels.unseen, label_space.unseen):
        log(f"unseen labels from {data_dir} ({len(data_labels.unseen_indices)}), not the "
            f"model's ({len(label_space.unseen_indices)})")
        label_space = dataclasses.replace(label_space, unseen=data_labels.unseen.copy())
        method += " [unseen labels of the data]"
    return label_space, method


def _dataset(cfg: EvalConfig, run_config, model, label_space, data_dir: str, image_size: int):
    """(what to run, its dataset): the model on the split's images, or for a frozen backbone
    with `feature_cache_dir` the model's head on the split's stored backbone features."""
    data_cfg = run_config.data if run_config else DataConfig()
    data_cfg = DataConfig(**{**data_cfg.__dict__, "data_dir": data_dir})

    def images():
        return data_lib.eval_dataset(data_cfg, cfg.split, image_size=image_size,
                                     num_labels=label_space.num_labels,
                                     batch_size=cfg.batch_size, max_images=cfg.max_images)

    if not (cfg.feature_cache_dir and model is not None and run_config is not None
            and not run_config.model.trainable_backbone):
        return model, images()
    # A frozen backbone's features of this split, computed once for every run on it.
    feature_model, head = split_model(model)  # the head maps features -> A_i
    key = feature_cache.eval_store_key(data_dir, cfg.split, run_config.model,
                                       label_space.num_labels, cfg.max_images)
    return head, feature_cache.features_eval_dataset(*feature_cache.stored_eval_features(
        cfg.feature_cache_dir, key, feature_model, images), cfg.batch_size)


def _write_results(cfg: EvalConfig, result: dict, summary: dict, label_space,
                   label_counts) -> dict:
    """Writes the metrics JSON and markdown and the per-label AP CSV; prints the tables."""
    out_dir = cfg.output_dir or run_dir.path(cfg.model_dir, run_dir.EVAL_DIR)
    tf.io.gfile.makedirs(out_dir)
    prefix = f"{'random_' if cfg.baseline else ''}{cfg.split}_"
    files = {name: os.path.join(out_dir, prefix + name) for name in OUTPUT_FILES}
    method = summary["method"]
    table = markdown_tables(result, summary["ks"], method)
    summary = {**_jsonable(result), **summary, "files": files}
    write = atomic_io.atomic_write_text
    write(files["per_label_ap.csv"], per_label_csv(result, label_space, label_counts))
    write(files["metrics.md"], f"# {method} on {cfg.split}\n\n{table}")
    write(files["metrics.json"], json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(f"\n{method} on {summary['data_dir']} ({cfg.split}):\n\n{table}", flush=True)
    log(f"wrote {', '.join(files.values())}")
    return summary


def evaluate(cfg: EvalConfig, progress: bool = True) -> dict:
    """Evaluates a trained run (or the random baseline) and writes the results.

    Writes `<prefix>metrics.json`, `<prefix>metrics.md` and `<prefix>per_label_ap.csv` into
    `cfg.output_dir` (default `<model_dir>/eval`), prefix `<split>_` (`random_<split>_` for the
    baseline), and prints the markdown tables. `data_dir`, `ks` and `scoring` default to the
    run's (`config.json`); a line says which were taken from there.

    Returns:
        The JSON-able result: {"zsl", "gzsl", "diverse", "split", "method", "files", ...}.
    """
    run_config = _run_config(cfg)
    data_dir, ks, scoring = _settings(cfg, run_config)
    model, label_space, image_size, method = _load(cfg, run_config, data_dir)
    label_space, method = _with_data_labels(cfg, label_space, data_dir, method)
    data_lib.require_dataset(data_dir, [cfg.split])
    model, ds = _dataset(cfg, run_config, model, label_space, data_dir, image_size)
    counting = _CountingDataset(ds, label_space.num_labels)
    log(f"evaluating {method} on {data_dir} split {cfg.split!r} (K = {list(ks)})")
    result = predict_and_evaluate(
        model, counting, label_space, ks=ks, scoring=scoring,
        random_seed=cfg.seed if cfg.baseline == "random" else None,
        diverse_min_labels=cfg.diverse_min_labels, diverse_k=cfg.diverse_k, progress=progress,
    )
    summary = {"method": method, "split": cfg.split, "data_dir": data_dir,
               "model_dir": cfg.model_dir, "ks": list(ks), "scoring": scoring}
    if cfg.baseline:
        summary["seed"] = cfg.seed
    return _write_results(cfg, result, summary, label_space, counting.counts)
