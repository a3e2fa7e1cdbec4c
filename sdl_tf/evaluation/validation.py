"""Per-epoch validation of a training run: scalars, the Figure-3 grid, the per-label AP table.

Training (`sdl_tf.training.loop`) calls these once per epoch on the validation images (the val
split, or a hashed part of the training split; never the test split): ZSL/GZSL mAP and F1@K,
the row usage of Figure 3 (`rows/*` scalars: which row of A wins each image's top-K tags),
per-label AP (histograms and a text table) and a Figure-3 grid image of the first 8 validation
images, all written to TensorBoard.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from sdl_tf import errors
from sdl_tf.config import TrainConfig
from sdl_tf.data import feature_cache
from sdl_tf.data import pipeline as data_lib
from sdl_tf.evaluation import evaluator, report
from sdl_tf.modeling.scoring import numpy_scores_and_rows

# Figure 3 (section 4.5) shows the top-10 tags of each image; 8 images keep the extra forward
# pass and the PNG small.
FIGURE3_IMAGES = 8
FIGURE3_TOP_K = 10


def validation_source(config: TrainConfig):
    """("split", name) for val shards, ("carve", None) for a hashed train part, or None."""
    if data_lib.has_split(config.data.data_dir, config.data.val_split):
        return ("split", config.data.val_split)
    if config.data.val_fraction > 0:
        return ("carve", None)
    return None


def _validation_images(config: TrainConfig, source, num_labels: int, batch_size: int,
                       max_images: int | None, with_ids: bool = False) -> tf.data.Dataset:
    """`data_lib.eval_dataset` over the validation images of `source` (never the test split)."""
    kind, split = source
    return data_lib.eval_dataset(
        config.data, split or config.data.train_split, image_size=config.model.image_size,
        num_labels=num_labels, batch_size=batch_size, max_images=max_images,
        carve_from_train=(kind == "carve"), with_ids=with_ids,
    )


def validation_dataset(config: TrainConfig, label_space, source) -> tf.data.Dataset:
    """The validation images (never the test split): (images uint8, labels (B, C)) batches."""
    return _validation_images(config, source, label_space.num_labels, config.eval_batch_size,
                              config.max_eval_images)


def validation_result(model, config: TrainConfig, label_space, source, dataset=None) -> dict:
    """`sdl_tf.evaluation.evaluator.predict_and_evaluate` on the validation images (never the test
    split): ZSL/GZSL metrics with per-label AP, and the row usage at K = max(eval_ks).

    `dataset` replaces the validation images, e.g. by their cached backbone features
    (`feature_cache.eval_features`) for the model's head."""
    ds = dataset if dataset is not None else validation_dataset(config, label_space, source)
    return evaluator.predict_and_evaluate(model, ds, label_space, ks=config.eval_ks,
                                          scoring=config.scoring)


def validation_scalars(result: dict, eval_ks) -> dict[str, float]:
    """The per-epoch scalars of a `validation_result`: `zsl|gzsl/mAP`, `zsl|gzsl/F1@K`, and the
    row usage (Figure 3 made measurable): `rows/share_<m>` (m = 1..M, as Figure 3 numbers the
    rows), `rows/entropy` (nats), `rows/mean_image_entropy` and `rows/mean_cosine` (M > 1)."""
    out = {}
    for task in ("zsl", "gzsl"):
        r = result[task]
        out[f"{task}/mAP"] = float(r["mAP"])
        for k in eval_ks:
            out[f"{task}/F1@{k}"] = float(r[f"F1@{k}"])
    usage = result.get("row_usage")
    if usage and usage["num_images"]:
        for m, share in enumerate(usage["share"]):
            out[f"rows/share_{m + 1}"] = share
        out["rows/entropy"] = usage["entropy"]
        out["rows/mean_image_entropy"] = usage["mean_image_entropy"]
        if usage["mean_cosine"] is not None:
            out["rows/mean_cosine"] = usage["mean_cosine"]
    return out


def figure3_images(config: TrainConfig, source, num_labels: int,
                   num_images: int = FIGURE3_IMAGES):
    """The first `num_images` validation images, read once per run for the per-epoch grid.

    Returns:
        (images uint8 (n, H, W, 3), labels float32 (n, C) multi-hot, ids: list of n str).
    """
    ds = _validation_images(config, source, num_labels, num_images, num_images, with_ids=True)
    for images, labels, ids in ds.take(1):
        return images.numpy(), labels.numpy(), [i.decode("utf-8", "replace") for i in
                                                ids.numpy()]
    raise errors.SDLError(f"the validation split of {config.data.data_dir} yielded no images")


def figure3_grid(model, images, ids, label_space, scoring: str = "max",
                 top_k: int = FIGURE3_TOP_K, thumb: int = 128) -> np.ndarray:
    """The Figure-3 grid of a few images: each image's top-K tags (all labels, GZSL ranking),
    each coloured by and prefixed with the row of A that wins it (arg-max of eq. 1); `*` marks
    unseen labels.

    Args:
        model: the SDL model (uint8 (n, H, W, 3) -> (n, M, d)).
        images: uint8 (n, H, W, 3); ids: n captions.
        label_space: the run's `LabelSpace`.

    Returns:
        uint8 (height, width, 3) RGB grid (`sdl_tf.evaluation.report.grid_image`).
    """
    predict = evaluator.predict_fn(model)
    matrices = predict(tf.constant(images)).numpy().astype(np.float32)  # (n, M, d)
    # (n, C) scores (eq. 1) and winning rows; n is small.
    scores, rows = numpy_scores_and_rows(matrices, label_space.vectors, scoring)
    no_extra = np.zeros(label_space.num_labels, bool)
    items = [report.TaggedImage(image_id, "", report.top_tags(
        scores[i], rows[i], label_space.names, label_space.unseen, no_extra, top_k))
        for i, image_id in enumerate(ids)]
    return report.grid_image(items, thumb=thumb, columns=4, images=list(images))


def per_label_ap_table(result: dict, label_space, max_rows: int = 200) -> str:
    """Markdown table of the validation AP of each label (percent), best GZSL AP first; seen
    and unseen marked. With more than `max_rows` labels, the best and worst halves are shown."""
    # per_label_ap is in [0, 1]; percent like the mAP scalars.
    zsl = 100.0 * np.asarray(result["zsl"]["per_label_ap"], np.float64)
    gzsl = 100.0 * np.asarray(result["gzsl"]["per_label_ap"], np.float64)
    order = np.argsort(-np.nan_to_num(gzsl, nan=-1.0), kind="stable")
    fmt = lambda v: "-" if np.isnan(v) else f"{v:.1f}"  # noqa: E731
    lines = ["| label | set | GZSL AP | ZSL AP |", "|---|---|---|---|"]
    shown = order if len(order) <= max_rows else np.concatenate(
        [order[: max_rows // 2], order[-(max_rows // 2):]])
    for n, c in enumerate(shown):
        if len(order) > max_rows and n == max_rows // 2:
            lines.append(f"| ... {len(order) - max_rows} labels ... | | | |")
        lines.append(f"| {label_space.names[c]} | {'unseen' if label_space.unseen[c] else 'seen'}"
                     f" | {fmt(gzsl[c])} | {fmt(zsl[c])} |")
    return "\n".join(lines)


def write_validation_pictures(result: dict, label_space, grid: np.ndarray | None) -> None:
    """Writes to the default summary writer: the per-label AP histograms in percent
    (`per_label_ap/gzsl`, `per_label_ap/zsl_unseen`), the per-label AP table (`per_label_ap`,
    text) and the Figure-3 grid image (`figure3_grid`) if given."""
    for task, name in (("gzsl", "per_label_ap/gzsl"), ("zsl", "per_label_ap/zsl_unseen")):
        ap = 100.0 * np.asarray(result[task]["per_label_ap"], np.float64)  # percent
        ap = ap[np.isfinite(ap)]  # labels without a positive have no AP
        if ap.size:
            tf.summary.histogram(name, ap)
    tf.summary.text("per_label_ap", per_label_ap_table(result, label_space))
    if grid is not None:
        tf.summary.image("figure3_grid", grid[None], max_outputs=1)


class Validator:
    """The per-epoch validation of one training run.

    Args:
        config: the run's `TrainConfig`.
        label_space: the run's `LabelSpace`.
        source: `validation_source(config)` (not None).
        pictures: also write the per-label AP histograms and table and the Figure-3 grid of
            the first `FIGURE3_IMAGES` validation images (read once, here); the chief only.
        features: None, or (features, labels) of the validation images computed once by the
            frozen backbone (`feature_cache`): the model's head is then evaluated on them.
    """

    def __init__(self, config: TrainConfig, label_space, source, pictures: bool,
                 features=None):
        self.config = config
        self.label_space = label_space
        self.source = source
        self.figure3 = (figure3_images(config, source, label_space.num_labels)
                        if pictures else None)
        self.features = (feature_cache.features_eval_dataset(*features, config.eval_batch_size)
                         if features is not None else None)

    def run(self, model, head=None) -> dict[str, float]:
        """Evaluates `model` (or `head` on the cached features) and writes the scalars (and
        the pictures) to the default summary writer.

        Returns:
            `validation_scalars` of the result.
        """
        if self.features is not None:  # the head on the cached features
            result = validation_result(head, self.config, self.label_space, self.source,
                                       self.features)
        else:
            result = validation_result(model, self.config, self.label_space, self.source)
        scalars = validation_scalars(result, self.config.eval_ks)
        for key, value in scalars.items():
            tf.summary.scalar(key, value)
        if self.figure3 is not None:
            images, _, ids = self.figure3
            grid = figure3_grid(model, images, ids, self.label_space, self.config.scoring)
            write_validation_pictures(result, self.label_space, grid)
        return scalars
