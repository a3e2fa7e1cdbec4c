"""What the data_prep commands share.

The dataset converters (coco, nus_wide, open_images): a reader returns a `Converted` (label
names, unseen flags, per-split records and selection counts); `write_converted` builds the
label space and writes every split through `data_prep.shards.write_split`; `print_result`
prints the end-of-run lines.

Every data_prep command's entry point (the converters, manifest, demo, mosaics): a module keeps
its config dataclass and its `prepare`; its `define_flags` and `main` are one call each to
`define_flags` and `main` here (flags -> frozen config -> `prepare`), and its `run` is
`sdl_tf.cli.run(main, define_flags)`. Bad inputs (`common.DataPrepError`, an
`sdl_tf.errors.SDLError`) are not caught here: `sdl_tf.cli.run` prints them as one line,
`<command>: error: <message>`, and exits with status 1.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from absl import app, flags

from data_prep import common, labels
from data_prep.common import ImageRecord
from data_prep.shards import write_split
from sdl_tf import config_flags
from sdl_tf.labels.label_space import LabelSpace

# Flags defined through `define_flags` belong to the command module calling it (absl's key
# flags, which `--help` lists), as if that module had called DEFINE_* itself.
flags.disclaim_key_flags()


@dataclasses.dataclass(frozen=True)
class Converted:
    """What a dataset reader returns (shared shape across the converters).

    Attributes:
      names: all C label names in label-space order.
      unseen: C flags, True for unseen labels.
      splits: split name -> image records (label indices into `names`).
      counts: split name (or "labels") -> {reason: count} of the selection.
      lookup_names: optional word-vector lookup name per label when it differs from the
        (unique) label name; several labels may share one lookup name.
      label_ids: optional dataset-native id per label (Open Images MIDs).
    """

    names: tuple[str, ...]
    unseen: tuple[bool, ...]
    splits: dict[str, list[ImageRecord]]
    counts: dict[str, dict[str, int]]
    lookup_names: tuple[str, ...] | None = None
    label_ids: tuple[str, ...] | None = None


def remap_records(records, old_names, new_names, counts=None):
    """Re-indexes records after labels were dropped (no vector): dropped labels disappear,
    and records left without a positive are dropped too (they carry no target; counted in
    `counts["excluded_only_dropped_labels"]`, so a reader's `selected` count = the records
    written or skipped + this count)."""
    if tuple(old_names) == tuple(new_names):
        yield from records
        return
    new_index = {n: i for i, n in enumerate(new_names)}
    old_to_new = [new_index.get(n) for n in old_names]

    def remap(indices):
        return tuple(sorted(old_to_new[i] for i in indices if old_to_new[i] is not None))

    counts = {} if counts is None else counts
    counts["excluded_only_dropped_labels"] = 0
    for r in records:
        positives = remap(r.positives)
        if positives:
            yield dataclasses.replace(r, positives=positives, negatives=remap(r.negatives))
        else:
            counts["excluded_only_dropped_labels"] += 1


def build_converted_label_space(converted: Converted, options: common.CommonOptions):
    """`labels.build_label_space` for a reader's labels, looking vectors up by
    `converted.lookup_names` when given.

    Returns:
      (LabelSpace, dropped label names).
    """
    vector_args = dict(word_vectors=options.word_vectors,
                       word_vectors_format=options.word_vectors_format,
                       label_vectors=options.label_vectors,
                       drop_missing=options.drop_missing_labels)
    if converted.lookup_names is None:
        return labels.build_label_space(converted.names, converted.unseen, **vector_args)
    lookup = converted.lookup_names
    unique = list(dict.fromkeys(lookup))
    by_lookup, _ = labels.build_label_space(unique, [False] * len(unique), **vector_args)
    vector_of = dict(zip(by_lookup.names, by_lookup.vectors, strict=True))
    keep = [i for i, name in enumerate(lookup) if name in vector_of]
    space = LabelSpace(
        names=tuple(converted.names[i] for i in keep),
        unseen=np.array([converted.unseen[i] for i in keep], bool),
        vectors=np.stack([vector_of[lookup[i]] for i in keep]), source=by_lookup.source)
    dropped = [converted.names[i] for i, name in enumerate(lookup) if name not in vector_of]
    return space, dropped


def write_converted(converted: Converted, options: common.CommonOptions, *, source: str,
                    shards: dict[str, int]) -> dict:
    """Builds + saves the label space and writes every split with `data_prep.shards.write_split`.

    Args:
      converted: the reader's output (a split's records may be a one-pass iterable).
      options: the common options (label vectors, output dir, sharding, parts).
      source: recorded in the label space and the split summaries.
      shards: split -> number of shards.

    Returns:
      {"labels": {"num_labels", "num_seen", "num_unseen", "dropped"}, "selection": counts,
       <split>: the `write_split` summary for each split}. The selection counts of a split
      are also stored under "details" in its summary JSON. Together they account for every
      input image: the reader's input count = `num_examples` + `num_skipped` + its exclusion
      counts (incl. `excluded_only_dropped_labels`); each converter's docstring states its
      identity.
    """
    space, dropped = build_converted_label_space(converted, options)
    space.save(options.output_dir)  # creates the directory (any tf.io.gfile filesystem)
    unseen = np.asarray(space.unseen, dtype=bool)
    result = {
        "labels": {"num_labels": int(unseen.size), "num_seen": int((~unseen).sum()),
                   "num_unseen": int(unseen.sum()), "dropped": list(dropped)},
        "selection": converted.counts,
    }
    for split, records in converted.splits.items():
        # `details` is the live counts dict: a streaming reader finishes filling it while
        # write_split consumes the records, before the summary is written.
        details = converted.counts.setdefault(split, {})
        if dropped:
            details["labels_dropped_without_vector"] = list(dropped)
        result[split] = write_split(
            remap_records(records, converted.names, space.names, details), options.output_dir,
            split,
            num_shards=shards[split], source=source, max_side=options.max_side,
            num_workers=options.num_workers, num_parts=options.num_parts,
            part_index=options.part_index, progress=options.progress, extra=details)
    return result


def print_result(result: dict) -> None:
    """The end-of-run lines: label counts and the selection counts per split (write_split
    already printed each split's table)."""
    space = result["labels"]
    print(f"labels: {space['num_labels']} ({space['num_seen']} seen, "
          f"{space['num_unseen']} unseen, {len(space['dropped'])} dropped without a vector)")
    for split, counts in result["selection"].items():
        shown = {k: v for k, v in counts.items() if isinstance(v, int)}
        print(f"{split}: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
        summary = result.get(split)
        if summary and "num_examples" in summary:
            print(f"{split}: {summary['num_examples']} examples written, "
                  f"{summary['num_skipped']} images skipped, shards complete "
                  f"{summary['shards_complete']}/{summary['num_shards']}")


def require_flags(*names: str) -> None:
    """UsageError naming the first missing required flag."""
    for name in names:
        if flags.FLAGS[name].value in (None, ""):
            raise app.UsageError(f"--{name} is required")


def define_flags(config_cls: type, *, common_flags: bool = False) -> None:
    """Defines a command's flags on the global absl FLAGS: one per field of `config_cls`
    (idempotent; entry points only).

    Args:
      config_cls: the command's frozen config dataclass.
      common_flags: also the common converter flags (`common.CommonOptions`), read into the
        config's `options` field (the dataset converters) or into its fields of the same names
        (manifest); those fields get no flag of their own.
    """
    exclude = set()
    if common_flags:
        common.define_common_flags()
        exclude = {"options", *(f.name for f in dataclasses.fields(common.CommonOptions))}
    own = [f.name for f in dataclasses.fields(config_cls)
           if f.name not in exclude and f.metadata.get("flag", True)]
    if own and all(name in flags.FLAGS for name in own):
        return  # defined already (a clash with another command's flag still raises)
    config_flags.define_flags(config_cls, exclude=exclude)


def main(argv: Sequence[str], config_cls: type, prepare_fn: Callable[[Any], Any], *,
         required: Sequence[str] = (), report: Callable[[Any], None] | None = None,
         **values) -> int:
    """The body of every data_prep command's `main`: flags -> frozen config -> `prepare_fn`.

    Args:
      argv: what absl left of the command line (the program name only, else a UsageError).
      config_cls: the config dataclass given to `define_flags`.
      prepare_fn: the command's library call, given the config.
      required: flags that must be given (a UsageError names the first one missing).
      report: prints `prepare_fn`'s result (the dataset converters: `print_result`).
      **values: config fields given directly instead of read from a flag of their name.

    Returns:
      0 (the exit status); a bad input raises and `sdl_tf.cli.run` reports it.
    """
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    require_flags(*required)
    # gensim logs every load at INFO, which absl shows; keep the progress output readable.
    logging.getLogger("gensim").setLevel(logging.WARNING)
    result = prepare_fn(config_flags.config_from_flags(config_cls, flags.FLAGS, **values))
    if report is not None:
        report(result)
    return 0

