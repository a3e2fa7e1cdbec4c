"""Evaluation: ZSL/GZSL mAP and P/R/F1@K (paper Tables 1-2), the diverse-image subset (Table 4).

Protocol (`sdl_tf.evaluation.metrics`): ZSL ranks only the unseen labels, GZSL all labels;
images without a positive among the ranked labels are dropped; P/R/F1@K are micro-averaged; mAP
is the mean over labels of the AP of ranking the images by that label's score (tag-based retrieval).

Scores are s_ij = max_m (A_i t_j) (eq. 1) computed in streaming fashion, so memory stays
O(batch x C) except for the (few) diverse images, whose score rows are kept for Table 4.

Row usage (Figure 3 / section 4.5, made measurable; `RowUsage`): for each image's top-K tags,
the row m of A_i that attains the max in eq. (1) "wins" the tag. Aggregated over the images: the
share of top-K tags won by each row, the entropy of those shares, the mean per-image entropy,
and the mean pairwise cosine between the rows of A_i. Rows that specialise in different
concepts (the paper's claim) give a high share entropy and low cosines; a collapsed matrix
(one row doing all the work, or M near-identical rows) gives entropy ~0 or cosines ~1.
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

from sdl_tf.config import DataConfig, EvalConfig, load_config
from sdl_tf.data import pipeline as data_lib
from sdl_tf.utils import atomic_io


def log(msg: str) -> None:
    print(f"[sdl_tf.evaluate] {msg}", file=sys.stderr, flush=True)


_PREDICT_FNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _predict_fn(model):
    """One traced inference function per model (validation runs every epoch)."""
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
        from sdl_tf.evaluation.metrics import evaluate_scores

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


def _entropy(p, axis=-1):
    """Shannon entropy in nats of distributions along `axis` (0 log 0 = 0)."""
    p = np.asarray(p, np.float64)
    logs = np.log(np.where(p > 0, p, 1.0))
    return 0.0 - np.sum(p * logs, axis=axis)  # 0.0 - x, not -x: no "-0.0" in the JSON


class RowUsage:
    """Streams which row of A wins each image's top-K tags (Figure 3, made measurable).

    Per batch only (B, M, K) products and (B, M, M) row cosines are formed, never (N, C, M).
    Every image counts (row usage needs no ground truth), over all C labels (the GZSL ranking
    that Figure 3 shows).

    Args:
        label_vectors: (C, d) word vectors of all labels.
        k: K, top tags per image (capped at C).
        scoring: "max" (eq. 1) or "l2"; ranks the tags and picks the winning row.
    """

    def __init__(self, label_vectors, k: int, scoring: str = "max"):
        self.vectors = np.asarray(label_vectors, np.float32)
        self.k = max(1, min(int(k), self.vectors.shape[0]))
        self.scoring = scoring
        self.counts = None  # (M,) top-K tags won per row
        self.num_images = 0
        self._entropy_sum = 0.0
        self._cosine_sum = 0.0

    def update(self, matrices, scores) -> np.ndarray:
        """Adds a batch.

        Args:
            matrices: (B, M, d) the images' matrices.
            scores: (B, C) their label scores (from the same matrices, `sdl_tf.modeling.scoring`).

        Returns:
            (B, K) int64 winning row of each image's top-K tags, best tag first.
        """
        from sdl_tf.evaluation.metrics import top_k_indices
        from sdl_tf.modeling.scoring import numpy_scores_and_rows

        matrices = np.asarray(matrices, np.float32)
        b, m, _ = matrices.shape
        if self.counts is None:
            self.counts = np.zeros(m, np.int64)
        top = top_k_indices(scores, self.k)  # (B, K), same tie-breaking as P/R/F1@K
        # Only each image's top-K label vectors: (B, M, K) products, never (B, M, C).
        _, rows = numpy_scores_and_rows(matrices, self.vectors[top], self.scoring)  # (B, K)
        per_image = (rows[:, :, None] == np.arange(m)).sum(axis=1)  # (B, M) tags won
        self.counts += per_image.sum(axis=0)
        self._entropy_sum += float(_entropy(per_image / self.k, axis=1).sum())
        if m > 1 and b:
            norms = np.linalg.norm(matrices, axis=2, keepdims=True)
            unit = matrices / np.maximum(norms, 1e-12)  # a zero row has cosine 0 with any row
            cos = np.einsum("bmd,bnd->bmn", unit, unit)  # (B, M, M)
            upper = np.triu_indices(m, k=1)
            self._cosine_sum += float(cos[:, upper[0], upper[1]].mean(axis=1).sum())
        self.num_images += b
        return rows

    def result(self) -> dict:
        """The aggregate: {"k", "num_rows", "num_images", "share" (M floats, sum 1),
        "entropy" and "entropy_normalized" (of the shares; nats, / log M), "mean_image_entropy"
        (+ "_normalized"), "mean_cosine" (None for M = 1)}; None-valued fields when empty."""
        if not self.num_images:
            return {"k": self.k, "num_rows": None, "num_images": 0, "share": [],
                    "entropy": None, "entropy_normalized": None, "mean_image_entropy": None,
                    "mean_image_entropy_normalized": None, "mean_cosine": None}
        m = len(self.counts)
        share = self.counts / self.counts.sum()
        entropy = float(_entropy(share))
        image_entropy = self._entropy_sum / self.num_images
        log_m = np.log(m) if m > 1 else None  # normalising by log 1 = 0 is undefined
        return {
            "k": self.k,
            "num_rows": m,
            "num_images": self.num_images,
            "share": [float(x) for x in share],
            "entropy": entropy,
            "entropy_normalized": entropy / log_m if log_m else None,
            "mean_image_entropy": image_entropy,
            "mean_image_entropy_normalized": image_entropy / log_m if log_m else None,
            "mean_cosine": self._cosine_sum / self.num_images if m > 1 else None,
        }


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

    from sdl_tf.evaluation.metrics import ZSLEvaluator
    from sdl_tf.modeling.scoring import NumpyScorer

    evaluator = ZSLEvaluator(label_space.unseen_indices, ks=tuple(ks),
                             num_labels=label_space.num_labels)
    # Eq. (1) in NumPy; the scorer reuses its transposed vectors and GEMM workspace per batch.
    scorer = NumpyScorer(label_space.vectors, scoring)
    diverse = (_DiverseCollector(label_space.unseen_indices, diverse_min_labels)
               if diverse_min_labels is not None else None)
    rng = np.random.default_rng(random_seed) if random_seed is not None else None
    predict = _predict_fn(model) if rng is None else None
    rows = (RowUsage(label_space.vectors, row_usage_k or max(ks), scoring)
            if rng is None else None)
    bar = keras.utils.Progbar(None, unit_name="image") if progress else None
    seen = 0
    for batch in dataset:
        images, labels = batch[0], batch[1].numpy()
        if rng is not None:
            scores = rng.random((labels.shape[0], label_space.num_labels), dtype=np.float32)
        else:
            matrices = predict(images).numpy().astype(np.float32)
            scores = scorer.scores(matrices)
        evaluator.update_scores(scores, labels)  # (checks the scores for NaN first)
        if rows is not None:
            rows.update(matrices, scores)
        if diverse is not None:
            diverse.update(scores, labels)
        seen += labels.shape[0]
        if bar is not None:
            bar.update(seen)
    if seen == 0:
        raise ValueError("the evaluation split yielded no images")
    result = evaluator.result()
    if diverse is not None:
        result["diverse"] = diverse.result(diverse_k)
        result["diverse"]["min_labels"] = diverse_min_labels
        result["diverse"]["k"] = diverse_k
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


def _fmt3(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def row_usage_table(usage: dict) -> list[str]:
    """Markdown lines: each row's share of the top-K tags (%), then entropy and cosine."""
    m, k = usage["num_rows"], usage["k"]
    lines = [f"Row usage (which row of A wins each image's top-{k} tags, eq. 1; Figure 3):", "",
             "| Row |" + "".join(f" {i + 1} |" for i in range(m)),
             "|---|" + "---|" * m,
             "| Share of tags (%) |" + "".join(f" {100 * x:.1f} |" for x in usage["share"]),
             "",
             f"Entropy of the shares: {_fmt3(usage['entropy'])} nats "
             f"({_fmt3(usage['entropy_normalized'])} of log M); mean per-image entropy "
             f"{_fmt3(usage['mean_image_entropy'])} nats "
             f"({_fmt3(usage['mean_image_entropy_normalized'])} of log M); mean pairwise cosine "
             f"between rows {_fmt3(usage['mean_cosine'])} ({usage['num_images']} images)."]
    return lines


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


def evaluate(cfg: EvalConfig, progress: bool = True) -> dict:
    """Evaluates a trained run (or the random baseline) and writes the results.

    Writes `<prefix>metrics.json`, `<prefix>metrics.md` and `<prefix>per_label_ap.csv` into
    `cfg.output_dir` (default `<model_dir>/eval`), prefix `<split>_` (`random_<split>_` for the
    baseline), and prints the markdown tables.

    Returns:
        The JSON-able result: {"zsl", "gzsl", "diverse", "split", "method", "files", ...}.
    """
    from sdl_tf.labels.label_space import LabelSpace
    from sdl_tf.modeling.model import require_model_dir

    if cfg.baseline != "random":
        require_model_dir(cfg.model_dir, cfg.model_file)
    run_config = None
    if cfg.model_dir:
        cfg_path = os.path.join(cfg.model_dir, "config.json")
        if tf.io.gfile.exists(cfg_path):
            run_config = load_config(cfg_path)
    data_dir = cfg.data_dir or (run_config.data.data_dir if run_config else "")
    if not data_dir:
        raise ValueError("--data_dir is required (no config.json in the model dir)")
    data_lib.require_dataset(data_dir)
    ks = cfg.ks or (run_config.eval_ks if run_config else (3, 5))
    scoring = cfg.scoring or (run_config.scoring if run_config else "max")
    data_cfg = run_config.data if run_config else DataConfig()
    data_cfg = DataConfig(**{**data_cfg.__dict__, "data_dir": data_dir})

    if cfg.baseline == "random":
        model = None
        label_space = LabelSpace.load(cfg.model_dir if cfg.model_dir and tf.io.gfile.exists(
            os.path.join(cfg.model_dir, "labels.json")) else data_dir)
        image_size = 32  # images are not looked at; decode small
        method = f"Random (seed {cfg.seed})"
    else:
        from sdl_tf.modeling.model import load_model_dir

        model, label_space = load_model_dir(cfg.model_dir, cfg.model_file)
        image_size = int(model.input_shape[1])
        method = "SDL" if (run_config is None or run_config.model.num_rows > 1
                           or run_config.use_sdw or run_config.use_reg) else "Fast0Tag"
        if run_config is not None:
            method += f" (M={run_config.model.num_rows})"
    data_labels = LabelSpace.load(data_dir)
    if tuple(data_labels.names) != tuple(label_space.names):
        raise ValueError(f"label space of {data_dir} differs from the model's ({cfg.model_dir})")
    if cfg.unseen_from_data and not np.array_equal(data_labels.unseen, label_space.unseen):
        log(f"unseen labels from {data_dir} ({len(data_labels.unseen_indices)}), not the "
            f"model's ({len(label_space.unseen_indices)})")
        label_space = dataclasses.replace(label_space, unseen=data_labels.unseen.copy())
        method += " [unseen labels of the data]"
    data_lib.require_dataset(data_dir, [cfg.split])

    def images():
        return data_lib.eval_dataset(data_cfg, cfg.split, image_size=image_size,
                                     num_labels=label_space.num_labels,
                                     batch_size=cfg.batch_size, max_images=cfg.max_images)

    if (cfg.feature_cache_dir and model is not None and run_config is not None
            and not run_config.model.trainable_backbone):
        # A frozen backbone's features of this split, computed once for every run on it.
        from sdl_tf.data import feature_cache
        from sdl_tf.modeling.model import split_model

        feature_model, model = split_model(model)  # `model` now maps features -> A_i
        key = feature_cache.eval_store_key(data_dir, cfg.split, run_config.model,
                                           label_space.num_labels, cfg.max_images)
        ds = feature_cache.features_eval_dataset(*feature_cache.stored_eval_features(
            cfg.feature_cache_dir, key, feature_model, images), cfg.batch_size)
    else:
        ds = images()
    counting = _CountingDataset(ds, label_space.num_labels)
    log(f"evaluating {method} on {data_dir} split {cfg.split!r} (K = {list(ks)})")
    result = predict_and_evaluate(
        model, counting, label_space, ks=ks, scoring=scoring,
        random_seed=cfg.seed if cfg.baseline == "random" else None,
        diverse_min_labels=cfg.diverse_min_labels, diverse_k=cfg.diverse_k, progress=progress,
    )

    out_dir = cfg.output_dir or os.path.join(cfg.model_dir, "eval")
    tf.io.gfile.makedirs(out_dir)
    prefix = f"{'random_' if cfg.baseline else ''}{cfg.split}_"
    files = {name: os.path.join(out_dir, prefix + name)
             for name in ("metrics.json", "metrics.md", "per_label_ap.csv")}
    table = markdown_tables(result, ks, method)
    summary = _jsonable(result)
    summary.update({"method": method, "split": cfg.split, "data_dir": data_dir,
                    "model_dir": cfg.model_dir, "ks": list(ks), "scoring": scoring,
                    "files": files})
    if cfg.baseline:
        summary["seed"] = cfg.seed
    write = atomic_io.atomic_write_text
    write(files["per_label_ap.csv"], per_label_csv(result, label_space, counting.counts))
    write(files["metrics.md"], f"# {method} on {cfg.split}\n\n{table}")
    write(files["metrics.json"], json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(f"\n{method} on {data_dir} ({cfg.split}):\n\n{table}", flush=True)
    log(f"wrote {', '.join(files.values())}")
    return summary
