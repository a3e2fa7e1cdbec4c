r"""Tags images with an exported SavedModel or a training run directory (open vocabulary).

The library of `python -m sdl_tf.predict` (`run_predict(PredictConfig)`); also used by
`sdl_tf.serving.retrieval` and the serving client CLI (image listing, extra-label vectors).

`--model` is an export (`saved_models/<name>` or `.../<name>/<version>`) or a model directory
with `final.keras`. Each image's top-K tags are printed (`*` unseen, `+` extra); with
`--output_dir` a Figure-3-style `grid.png`, `tags.html` and `tags.json` are written.

Tags are scored as r_c = max_m (A t_c) (eq. 1; section 4.2 "for image tagging ... rank them"),
so extra tags need only a word vector: from a label-vector file ("tag<TAB>v1 ... vd" lines, or
`.npy` + names) or words looked up in `--word_vectors` (any gensim-loadable file).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import numpy as np

from sdl_tf.config_flags import field
from sdl_tf.errors import SDLError, missing_export_hint
from sdl_tf.evaluation import report
from sdl_tf.utils import atomic_io, gfile_utils

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


class PredictError(SDLError):
    """Bad arguments or inputs, with a message naming the file or label."""


def list_images(spec) -> list[str]:
    """Image paths from a folder (recursive, sorted, .jpg/.jpeg/.png), a comma-separated list
    of files and folders, or a list of those."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    paths: list[str] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        if gfile_utils.isdir(item):
            found = []
            walk = os.walk if gfile_utils.is_local(item) else gfile_utils.gfile().walk
            for root, _, files in walk(item):
                found += [os.path.join(root, f) for f in files
                          if f.lower().endswith(IMAGE_EXTENSIONS)]
            paths += sorted(found)
        elif gfile_utils.isfile(item):
            paths.append(item)
        else:
            raise PredictError(f"image path {item!r} does not exist")
    if not paths:
        raise PredictError(f"no .jpg/.jpeg/.png images found in {spec!r}")
    return paths


def image_id(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def read_bytes(path: str) -> tuple[bytes, str]:
    """(contents, "") or (b"", error message) for an unreadable file."""
    try:
        return gfile_utils.read_bytes(path), ""
    except OSError as e:
        return b"", f"cannot read {path}: {e.strerror or e}"


class Tagger:
    """Runs an SDL model (SavedModel export or Keras model) from encoded images to matrices A.

    Attributes:
      label_space: the model's LabelSpace.
      source: "export" or "keras".
    """

    def __init__(self, path: str):
        from sdl_tf.modeling import run_dir
        from sdl_tf.serving import export_lib, signatures

        self.path = path
        if export_lib.is_export(path):
            self._export = export_lib.load_export(path)
            self.label_space = self._export.label_space
            self.source = "export"
        elif gfile_utils.isdir(path):
            self._model, self.label_space = run_dir.load(path)
            self._size = signatures.model_contract(self._model)[0]
            self.source = "keras"
        else:
            raise PredictError(
                f"--model {path!r} is neither a SavedModel export nor a training run directory",
                missing_export_hint(path))

    def _run(self, data: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        import tensorflow as tf

        from sdl_tf.serving import signatures

        if self.source == "export":
            return self._export.matrices(data)
        images, ok = signatures.decode_and_resize(tf.constant(data, tf.string), self._size)
        matrices = self._model.predict_on_batch(images)
        matrices = np.where(ok.numpy()[:, None, None], np.asarray(matrices, np.float32), 0.0)
        return matrices.astype(np.float32), ok.numpy()

    def matrices(self, data: list[bytes]) -> tuple[np.ndarray, list[str]]:
        """Matrices A for encoded images.

        Args:
          data: N encoded JPEG/PNG images.

        Returns:
          matrices float32 (N, M, d) (zeros for failed images), errors: N strings ("" = ok).
        """
        import tensorflow as tf

        from sdl_tf.serving import signatures
        from sdl_tf.serving.signatures import BAD_IMAGE_ERROR

        try:
            matrices, ok = self._run(data)
            return matrices, ["" if o else BAD_IMAGE_ERROR for o in ok]
        except tf.errors.InvalidArgumentError:
            if len(data) == 1:
                raise
        # A structurally valid but corrupt image made the decoder fail the whole batch:
        # redo one by one so only that image is reported.
        outs, errors = [], []
        for one in data:
            try:
                m, ok = self._run([one])
                errors.append("" if ok[0] else BAD_IMAGE_ERROR)
            except tf.errors.InvalidArgumentError as e:
                m = None
                errors.append("corrupt image data: " + signatures.op_error_message(e))
            outs.append(m)
        shape = next((m.shape[1:] for m in outs if m is not None), None)
        if shape is None:
            return np.zeros((len(data), 0, 0), np.float32), errors
        return (
            np.concatenate([m if m is not None else np.zeros((1, *shape), np.float32)
                            for m in outs]),
            errors,
        )


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Labels to score: the model's label space plus any extra labels."""

    names: tuple[str, ...]
    unseen: np.ndarray   # (C,) bool
    extra: np.ndarray    # (C,) bool, True for labels added at prediction time
    vectors: np.ndarray  # (C, d) float32, l2-normalised


def extra_label_vectors(extra_labels: str, dim: int | None, word_vectors: str | None = None):
    """Names and l2-normalised vectors of extra labels.

    Args:
      extra_labels: a local label-vector file (see
        `sdl_tf.labels.word_vectors.read_label_vector_file`), or comma-separated words/phrases
        looked up in `word_vectors`.
      dim: the model's d (checked unless None).
      word_vectors: local gensim-loadable word-vector file (gensim reads only local files),
        needed for comma-separated words.

    Returns:
      (names list, vectors (n, d) float32).
    """
    from sdl_tf.labels import word_vectors as wv
    from sdl_tf.labels.label_space import l2_normalize

    if os.path.isfile(extra_labels):
        table = wv.read_label_vector_file(extra_labels)
        names = list(table)
        vectors = l2_normalize(np.stack([table[n] for n in names]))
        source = extra_labels
    else:
        names = [n.strip() for n in extra_labels.split(",") if n.strip()]
        if not names:
            raise PredictError(f"--extra_labels {extra_labels!r} names no label")
        if not word_vectors:
            raise PredictError(
                "--extra_labels lists words: give --word_vectors=<file> to embed them "
                "(or pass a label-vector file as --extra_labels)"
            )
        kv = wv.load_word_vectors(word_vectors)
        try:
            vectors, _ = wv.embed_labels(names, kv)
        except wv.MissingVectorsError as e:
            raise PredictError(f"extra labels without a vector in {word_vectors}: {e}") from None
        source = word_vectors
    if dim is not None and vectors.shape[1] != dim:
        raise PredictError(f"extra label vectors from {source} have d={vectors.shape[1]}, "
                           f"the model needs d={dim}")
    return names, np.asarray(vectors, np.float32)


def build_vocabulary(label_space, extra_labels: str | None = None,
                     word_vectors: str | None = None) -> Vocabulary:
    """The label space plus extra labels (an extra label equal to a known name is ignored)."""
    names = list(label_space.names)
    unseen = list(np.asarray(label_space.unseen, bool))
    extra = [False] * len(names)
    vectors = [np.asarray(label_space.vectors, np.float32)]
    if extra_labels:
        new_names, new_vectors = extra_label_vectors(extra_labels, label_space.dim, word_vectors)
        known = set(names)
        keep = [i for i, n in enumerate(new_names) if n not in known]
        names += [new_names[i] for i in keep]
        # Never trained on, so they are zero-shot labels as far as the model is concerned.
        unseen += [True] * len(keep)
        extra += [True] * len(keep)
        vectors.append(new_vectors[keep])
    return Vocabulary(tuple(names), np.array(unseen, bool), np.array(extra, bool),
                      np.concatenate(vectors).astype(np.float32))


def progress(done: int, total: int, what: str, stream=None) -> None:
    stream = stream or sys.stderr
    if stream.isatty() or done == total:
        end = "\n" if done == total else "\r"
        stream.write(f"{what}: {done}/{total}{end}")
        stream.flush()


def iterate_matrices(tagger: Tagger, paths, batch_size: int = 32, what: str = "images",
                     show_progress: bool = True):
    """Yields (paths_batch, matrices (B, M, d), errors) over `paths` in batches."""
    for start in range(0, len(paths), batch_size):
        batch = paths[start:start + batch_size]
        read = [read_bytes(p) for p in batch]
        data = [b for b, _ in read]
        matrices, errors = tagger.matrices(data)
        errors = [r_err or err for (_, r_err), err in zip(read, errors, strict=True)]
        if show_progress:
            progress(start + len(batch), len(paths), what)
        yield batch, matrices, errors


def tag_images(tagger: Tagger, paths, vocabulary: Vocabulary, top_k: int = 5,
               batch_size: int = 32, show_progress: bool = True) -> list[report.TaggedImage]:
    """Top-K tags of every image (failed images carry an `error` and no tags)."""
    from sdl_tf.modeling import scoring

    scorer = scoring.NumpyScorer(vocabulary.vectors)  # reused across batches
    results = []
    for batch, matrices, errors in iterate_matrices(tagger, paths, batch_size, "tagged",
                                                    show_progress):
        # Eq. (1) scores and their winning rows (Figure 3's numbers), (B, C) each.
        scores, rows = scorer.scores_and_rows(matrices)
        for i, path in enumerate(batch):
            if errors[i]:
                results.append(report.TaggedImage(image_id(path), path, (), errors[i]))
                continue
            tags = report.top_tags(scores[i], rows[i], vocabulary.names, vocabulary.unseen,
                                   vocabulary.extra, top_k)
            results.append(report.TaggedImage(image_id(path), path, tags))
    return results


def format_results(results) -> str:
    lines = []
    for item in results:
        if item.error:
            lines.append(f"{item.image_id}: ERROR {item.error}")
            continue
        tags = ", ".join(f"{t.name}{t.mark} {t.score:.3f} (row {t.row + 1})" for t in item.tags)
        lines.append(f"{item.image_id}: {tags}")
    return "\n".join(lines)


def write_json(results, path: str) -> None:
    data = [
        {"image_id": r.image_id, "path": r.path, "error": r.error,
         "tags": [dataclasses.asdict(t) for t in r.tags]}
        for r in results
    ]
    atomic_io.atomic_write(path, lambda f: json.dump(data, f, indent=1), mode="w")


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    """Configuration of `python -m sdl_tf.predict`."""

    model: str = field(help="Export dir (saved_models/<name>[/<version>]) or model dir.",
                       required=True)
    images: str = field(help="Image folder, or comma-separated files/folders.", required=True)
    extra_labels: str | None = field(
        None, "Label-vector file, or comma-separated words (with --word_vectors).")
    word_vectors: str | None = field(None, "Word-vector file to embed --extra_labels words.")
    top_k: int = field(5, "Tags shown per image.")
    output_dir: str | None = field(None, "Where to write grid.png, tags.html, tags.json.")
    batch_size: int = field(32, "Images per model call.")


def run_predict(config: PredictConfig, out=None) -> list[report.TaggedImage]:
    """Tags the images, prints the top-K per image and writes the report files."""
    out = out or sys.stdout
    if config.top_k < 1:
        raise PredictError(f"--top_k must be >= 1, got {config.top_k}")
    paths = list_images(config.images)
    tagger = Tagger(config.model)
    vocabulary = build_vocabulary(tagger.label_space, config.extra_labels, config.word_vectors)
    results = tag_images(tagger, paths, vocabulary, config.top_k, config.batch_size)
    print(format_results(results), file=out)
    if config.output_dir:
        gfile_utils.makedirs(config.output_dir)
        report.write_grid_png(results, os.path.join(config.output_dir, "grid.png"))
        report.write_html(results, os.path.join(config.output_dir, "tags.html"))
        write_json(results, os.path.join(config.output_dir, "tags.json"))
        print(f"wrote grid.png, tags.html, tags.json to {config.output_dir}", file=out)
    return results
