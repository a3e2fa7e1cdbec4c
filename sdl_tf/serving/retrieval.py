r"""Tag-based image retrieval over an index of per-image matrices A (paper section 4.2).

The library of `python -m sdl_tf.retrieve index|query` (`run_index`, `run_query`).

"For tag-based image retrieval, for a query tag, we compute similarly r_ij for all given images
and rank them": r_ij = max_m (A_i t_j) (eq. 1). The index stores every A_i once (float16 by
default, i.e. N * M * d * 2 bytes), the image ids and the model's label space, in one `.npz`
written with `np.savez` (no pickle). A query is one pass over the matrices with the NumPy
eq. (1) of `sdl_tf.modeling.scoring` ((N*M, d) x (d, Q) products for a batch of Q tags, in
blocks, then a max over the M rows of each image) and the top-K of
`sdl_tf.evaluation.metrics.top_k_indices`.
Query tags are label names of the index (seen or unseen), or any word/phrase with a vector in
`--word_vectors`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np

from sdl_tf.config_flags import field
from sdl_tf.errors import MissingPathError, SDLError
from sdl_tf.evaluation.metrics import top_k_indices
from sdl_tf.modeling import scoring
from sdl_tf.utils import atomic_io, gfile_utils

INDEX_VERSION = 1
# Rows of the (N*M, d) matrix per GEMM call: bounds the temporary (rows, Q) product.
_CHUNK_ROWS = 1 << 18


class RetrievalError(SDLError):
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
        gfile_utils.makedirs(os.path.dirname(path))
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
        if not gfile_utils.isfile(path):
            raise MissingPathError(
                f"index file {path} not found",
                f"build it with `python -m sdl_tf.retrieve index --model=<export or run dir> "
                f"--images=<images> --index={path}`")
        try:
            # A local copy for gs:// etc.: the .npz zip reader seeks, which GFile may not.
            with gfile_utils.local_copy(path) as local, np.load(local, allow_pickle=False) as f:
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
        _, m, d = self.matrices.shape
        vectors = np.asarray(vectors, np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != d:
            raise RetrievalError(f"query vectors must be (Q, {d}), got {vectors.shape}")
        # Blocks of whole images, ~_CHUNK_ROWS matrix rows each; float32 GEMMs (a float16 index
        # is cast block by block: NumPy float16 matmul is not BLAS).
        return scoring.numpy_scores(self.matrices, vectors, block_size=max(1, _CHUNK_ROWS // m))

    def query(self, vectors: np.ndarray, top: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top images per query.

        Returns:
          indices (Q, k) int64 into image_ids and scores (Q, k), best first, k = min(top, N).
        """
        scores = np.ascontiguousarray(self.scores(vectors).T)  # (Q, N)
        k = min(int(top), scores.shape[1])
        if k <= 0:
            return np.zeros((scores.shape[0], 0), np.int64), np.zeros((scores.shape[0], 0),
                                                                      np.float32)
        # Higher score first, ties -> the image indexed first.
        idx = top_k_indices(scores, k)
        return idx, np.take_along_axis(scores, idx, axis=1)

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
            from sdl_tf.labels import word_vectors as wv

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


def build_index(tagger, paths, batch_size: int = 32, show_progress: bool = True):
    """Runs the model over images and returns (RetrievalIndex, stats dict).

    Images that fail to decode are left out of the index and listed in stats["skipped"].
    """
    from sdl_tf.serving import tagger as tagger_lib

    kept, chunks, skipped = [], [], []
    start = time.perf_counter()
    for batch, matrices, errors in tagger_lib.iterate_matrices(tagger, paths, batch_size,
                                                            "indexed", show_progress):
        keep = [i for i, e in enumerate(errors) if not e]
        skipped += [{"path": batch[i], "error": errors[i]} for i, e in enumerate(errors) if e]
        kept += [batch[i] for i in keep]
        chunks.append(matrices[keep])
    seconds = time.perf_counter() - start
    if not kept:
        raise RetrievalError("no image could be indexed: " + "; ".join(
            f"{s['path']}: {s['error']}" for s in skipped[:5]))
    ids = [tagger_lib.image_id(p) for p in kept]
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
    """`python -m sdl_tf.retrieve index`: index images with a model."""

    model: str = field(help="index: export dir or model dir.")
    images: str = field(help="index: image folder or comma-separated files.")
    index: str = field(help="Index .npz path.")
    batch_size: int = field(32, "index: images per model call.")
    dtype: str = field("float16", "index: stored matrix dtype.", choices=("float16", "float32"))


@dataclasses.dataclass(frozen=True)
class QueryConfig:
    """`python -m sdl_tf.retrieve query`: the top images of each tag (--index as IndexConfig)."""

    index: str
    tags: tuple[str, ...]  # --tags is one comma-separated string flag (main splits it)
    word_vectors: str | None = field(None, "query: word vectors for tags not in the index.")
    top: int = field(10, "query: images returned per tag.")


def run_index(config: IndexConfig, out=None) -> dict:
    from sdl_tf.serving import tagger as tagger_lib

    out = out or sys.stdout
    if config.dtype not in ("float16", "float32"):
        raise RetrievalError(f"--dtype must be float16 or float32, got {config.dtype}")
    paths = tagger_lib.list_images(config.images)
    tagger = tagger_lib.Tagger(config.model)
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
