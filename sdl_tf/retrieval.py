r"""Tag-based image retrieval over an index of per-image matrices A (paper section 4.2).

    python -m sdl_tf.retrieval index --model=saved_models/sdl --images=photos/ --index=idx.npz
    python -m sdl_tf.retrieval query --index=idx.npz --tags="red circle,dog" [--word_vectors=...] \
        [--top=10]

"For tag-based image retrieval, for a query tag, we compute similarly r_ij for all given images
and rank them": r_ij = max_m (A_i t_j) (eq. 1). The index stores every A_i once (float16 by
default, i.e. N * M * d * 2 bytes), the image ids and the model's label space, in one `.npz`
written with `np.savez` (no pickle). A query is one pass over the matrices: an
(N*M, d) x (d, Q) product for a batch of Q tags, then a max over the M rows of each image.
Query tags are label names of the index (seen or unseen), or any word/phrase with a vector in
`--word_vectors`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np

from sdl_tf import atomic_io

INDEX_VERSION = 1
# Rows of the (N*M, d) matrix per GEMM call: bounds the temporary (rows, Q) product.
_CHUNK_ROWS = 1 << 18


class RetrievalError(Exception):
    """Bad index file or query, with a message naming the file or tag."""


@dataclasses.dataclass
class RetrievalIndex:
    """In-memory index.

    Attributes:
      image_ids: (N,) str.
      matrices: (N, M, d) float32, C-contiguous (kept float32 so queries run as BLAS GEMM).
      label_names: (C,) str; label_unseen: (C,) bool; label_vectors: (C, d) float32.
    """

    image_ids: np.ndarray
    matrices: np.ndarray
    label_names: np.ndarray
    label_unseen: np.ndarray
    label_vectors: np.ndarray

    @property
    def num_images(self) -> int:
        return int(self.matrices.shape[0])

    def save(self, path: str, dtype: str = "float16") -> None:
        """Writes the index atomically with `np.savez` (no pickle: fixed-width str arrays)."""
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        atomic_io.atomic_write(
            path,
            lambda f: np.savez(
                f,
                version=np.int64(INDEX_VERSION),
                image_ids=np.asarray(self.image_ids, dtype=str),
                matrices=self.matrices.astype(dtype),
                label_names=np.asarray(self.label_names, dtype=str),
                label_unseen=np.asarray(self.label_unseen, bool),
                label_vectors=np.asarray(self.label_vectors, np.float32),
            ),
        )

    @classmethod
    def load(cls, path: str) -> RetrievalIndex:
        if not os.path.isfile(path):
            raise RetrievalError(f"index file {path} not found")
        try:
            with np.load(path, allow_pickle=False) as f:
                if int(f["version"]) != INDEX_VERSION:
                    raise RetrievalError(f"{path}: index version {int(f['version'])}, "
                                         f"expected {INDEX_VERSION}")
                arrays = {k: f[k] for k in ("image_ids", "matrices", "label_names",
                                            "label_unseen", "label_vectors")}
        except (KeyError, ValueError, OSError) as e:
            raise RetrievalError(f"{path} is not a retrieval index: {e}") from None
        matrices = np.ascontiguousarray(arrays.pop("matrices"), dtype=np.float32)
        if matrices.ndim != 3 or matrices.shape[0] != arrays["image_ids"].shape[0]:
            raise RetrievalError(f"{path}: matrices {matrices.shape} do not match "
                                 f"{arrays['image_ids'].shape[0]} image ids")
        return cls(matrices=matrices, **arrays)

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """r = max_m (A_i t_q) for all images and a batch of query vectors.

        Args:
          vectors: (Q, d) float32 query vectors (l2-normalised).

        Returns:
          (N, Q) float32.
        """
        return score_matrices(self.matrices, vectors)

    def query(self, vectors: np.ndarray, top: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top images per query.

        Returns:
          indices (Q, k) int64 into image_ids and scores (Q, k), best first, k = min(top, N).
        """
        scores = self.scores(vectors)  # (N, Q)
        return top_indices(scores.T, top)

    def tag_vectors(self, tags, word_vectors: str | None = None) -> np.ndarray:
        """(Q, d) vectors for query tags: index labels by name, other tags via `word_vectors`."""
        names = {str(n): i for i, n in enumerate(self.label_names)}
        found = {t: self.label_vectors[names[t]] for t in tags if t in names}
        others = [t for t in tags if t not in names]
        if others:
            if not word_vectors:
                raise RetrievalError(
                    f"tags {others} are not labels of the index; give --word_vectors to embed them"
                )
            from sdl_tf import word_vectors as wv

            kv = wv.load_word_vectors(word_vectors)
            try:
                vecs, _ = wv.embed_labels(others, kv)
            except wv.MissingVectorsError as e:
                raise RetrievalError(f"query tags without a vector in {word_vectors}: {e}") \
                    from None
            if vecs.shape[1] != self.label_vectors.shape[1]:
                raise RetrievalError(f"{word_vectors} has d={vecs.shape[1]}, the index has "
                                     f"d={self.label_vectors.shape[1]}")
            found.update(zip(others, vecs, strict=True))
        return np.stack([found[t] for t in tags]).astype(np.float32)


def score_matrices(matrices: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Eq. (1) over an index: (N, M, d) x (Q, d) -> (N, Q), one pass over `matrices`.

    The (N*M, d) view is multiplied in row chunks so the temporary product stays small;
    float32 keeps the product on the BLAS path (NumPy float16 matmul is not BLAS).
    """
    n, m, d = matrices.shape
    vectors = np.asarray(vectors, np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != d:
        raise RetrievalError(f"query vectors must be (Q, {d}), got {vectors.shape}")
    flat = matrices.reshape(n * m, d)
    out = np.empty((n, vectors.shape[0]), np.float32)
    rows_per_chunk = max(m, (_CHUNK_ROWS // m) * m)
    vt = np.ascontiguousarray(vectors.T)
    for start in range(0, n * m, rows_per_chunk):
        stop = min(start + rows_per_chunk, n * m)
        prod = flat[start:stop] @ vt
        np.max(prod.reshape(-1, m, vt.shape[1]), axis=1, out=out[start // m:stop // m])
    return out


def top_indices(scores: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of scores (Q, N): indices and values of the `top` largest, best first."""
    q, n = scores.shape
    k = min(int(top), n)
    if k <= 0:
        return np.zeros((q, 0), np.int64), np.zeros((q, 0), np.float32)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < n else \
        np.tile(np.arange(n), (q, 1))
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1).astype(np.int64)
    return idx, np.take_along_axis(scores, idx, axis=1)


def build_index(tagger, paths, batch_size: int = 32, show_progress: bool = True):
    """Runs the model over images and returns (RetrievalIndex, stats dict).

    Images that fail to decode are left out of the index and listed in stats["skipped"].
    """
    from sdl_tf import predict

    kept, chunks, skipped = [], [], []
    start = time.perf_counter()
    for batch, matrices, errors in predict.iterate_matrices(tagger, paths, batch_size,
                                                            "indexed", show_progress):
        keep = [i for i, e in enumerate(errors) if not e]
        skipped += [{"path": batch[i], "error": errors[i]} for i, e in enumerate(errors) if e]
        kept += [batch[i] for i in keep]
        chunks.append(matrices[keep])
    seconds = time.perf_counter() - start
    if not kept:
        raise RetrievalError("no image could be indexed: " + "; ".join(
            f"{s['path']}: {s['error']}" for s in skipped[:5]))
    ids = [predict.image_id(p) for p in kept]
    if len(set(ids)) != len(ids):  # file stems clash (sub-folders): use the paths as ids
        ids = kept
    ls = tagger.label_space
    index = RetrievalIndex(
        image_ids=np.asarray(ids, dtype=str),
        matrices=np.concatenate(chunks).astype(np.float32),
        label_names=np.asarray(ls.names, dtype=str),
        label_unseen=np.asarray(ls.unseen, bool),
        label_vectors=np.asarray(ls.vectors, np.float32),
    )
    stats = {"indexed": len(kept), "skipped": skipped, "seconds": seconds,
             "images_per_second": len(paths) / seconds if seconds > 0 else float("inf")}
    return index, stats


@dataclasses.dataclass(frozen=True)
class IndexConfig:
    model: str
    images: str
    index: str
    batch_size: int = 32
    dtype: str = "float16"


@dataclasses.dataclass(frozen=True)
class QueryConfig:
    index: str
    tags: tuple[str, ...]
    word_vectors: str | None = None
    top: int = 10


def run_index(config: IndexConfig, out=None) -> dict:
    from sdl_tf import predict

    out = out or sys.stdout
    if config.dtype not in ("float16", "float32"):
        raise RetrievalError(f"--dtype must be float16 or float32, got {config.dtype}")
    paths = predict.list_images(config.images)
    tagger = predict.Tagger(config.model)
    index, stats = build_index(tagger, paths, config.batch_size)
    index.save(config.index, config.dtype)
    for s in stats["skipped"]:
        print(f"skipped {s['path']}: {s['error']}", file=out)
    print(f"indexed {stats['indexed']} images ({len(stats['skipped'])} skipped) in "
          f"{stats['seconds']:.2f} s = {stats['images_per_second']:.1f} images/s -> "
          f"{config.index}", file=out)
    return stats


def run_query(config: QueryConfig, out=None) -> list[list[tuple[str, float]]]:
    out = out or sys.stdout
    if not config.tags:
        raise RetrievalError("--tags names no tag")
    index = RetrievalIndex.load(config.index)
    vectors = index.tag_vectors(list(config.tags), config.word_vectors)
    start = time.perf_counter()
    idx, scores = index.query(vectors, config.top)
    ms = (time.perf_counter() - start) * 1e3
    results = []
    for q, tag in enumerate(config.tags):
        hits = [(str(index.image_ids[i]), float(s)) for i, s in zip(idx[q], scores[q],
                                                                     strict=True)]
        results.append(hits)
        print(f"{tag}: " + ", ".join(f"{i} {s:.3f}" for i, s in hits), file=out)
    print(f"{len(config.tags)} queries over {index.num_images} images in {ms:.1f} ms", file=out)
    return results


def main(argv):
    from absl import logging

    # TF/gensim INFO lines (signature renames, vector loading) drown the results.
    logging.set_verbosity(logging.WARNING)
    from absl import app, flags

    f = flags.FLAGS
    if len(argv) != 2 or argv[1] not in ("index", "query"):
        raise app.UsageError("usage: python -m sdl_tf.retrieval index|query [flags]")
    try:
        if argv[1] == "index":
            for name in ("model", "images", "index"):
                if not getattr(f, name):
                    raise app.UsageError(f"index needs --{name}")
            run_index(IndexConfig(f.model, f.images, f.index, f.batch_size, f.dtype))
        else:
            for name in ("index", "tags"):
                if not getattr(f, name):
                    raise app.UsageError(f"query needs --{name}")
            tags = tuple(t.strip() for t in f.tags.split(",") if t.strip())
            run_query(QueryConfig(f.index, tags, f.word_vectors, f.top))
    except RetrievalError as e:
        raise SystemExit(f"retrieval failed: {e}") from None


def _define_flags():
    from absl import flags

    flags.DEFINE_string("model", None, "index: export dir or model dir.")
    flags.DEFINE_string("images", None, "index: image folder or comma-separated files.")
    flags.DEFINE_string("index", None, "Index .npz path.")
    flags.DEFINE_integer("batch_size", 32, "index: images per model call.")
    flags.DEFINE_enum("dtype", "float16", ["float16", "float32"], "index: stored matrix dtype.")
    flags.DEFINE_string("tags", None, "query: comma-separated query tags.")
    flags.DEFINE_string("word_vectors", None, "query: word vectors for tags not in the index.")
    flags.DEFINE_integer("top", 10, "query: images returned per tag.")


if __name__ == "__main__":
    from sdl_tf import cli

    _define_flags()
    cli.run(main)
