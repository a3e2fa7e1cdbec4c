"""Row usage (Figure 3 / section 4.5, made measurable): which row of A wins each image's tags.

For each image's top-K tags, the row m of A_i that attains the max in eq. (1) "wins" the tag.
Aggregated over the images: the share of top-K tags won by each row, the entropy of those
shares, the mean per-image entropy, and the mean pairwise cosine between the rows of A_i. Rows
that specialise in different concepts (the paper's claim) give a high share entropy and low
cosines; a collapsed matrix (one row doing all the work, or M near-identical rows) gives entropy
~0 or cosines ~1.
"""

from __future__ import annotations

import numpy as np

from sdl_tf.evaluation.metrics import top_k_indices
from sdl_tf.modeling.scoring import numpy_scores_and_rows


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
