"""The atomic sharded writer of a split and its summary (`write_split`).

A converter builds its `ImageRecord`s and calls `write_split` once per split, which
guarantees:
  - every image goes through `data_prep.images.process_image` (converted to RGB JPEG where
    needed; unusable files skipped and listed with the reason in `<split>-summary.json`);
  - a shard is written to a hidden temporary name and renamed when complete, so a crash never
    leaves a half-written `<split>-NNNNN-of-NNNNN.tfrecord`;
  - record j goes to shard j % num_shards and shard i belongs to part i % num_parts, so N
    machines can each run `--part_index` of `--num_parts`; a rerun skips finished shards (and
    refuses to mix shards written from different inputs).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import sys

import tensorflow as tf

from data_prep import images
from data_prep.common import DataPrepError, ImageRecord, Progress
from sdl_tf.data import tfrecord_schema
from sdl_tf.utils import atomic_io

SUMMARY_VERSION = 1


def format_summary_table(summary: dict) -> str:
    """A human-readable table of one split summary (printed at the end of a run)."""
    actions = summary.get("image_actions", {})
    converted = sum(v for k, v in actions.items() if k.startswith("converted"))
    rows = [
        ("split", summary["split"]),
        ("source", summary.get("source", "")),
        ("shards complete", f"{summary['shards_complete']}/{summary['num_shards']}"),
        ("shards this run", f"written {summary.get('shards_written_this_run', 0)}, "
                            f"already done {summary.get('shards_resumed_this_run', 0)}"),
        ("records", summary["num_records"]),
        ("examples written", summary["num_examples"]),
        ("passed through", actions.get("passthrough", 0)),
        ("converted to RGB JPEG", converted),
        ("resized", actions.get("resized", 0)),
        ("skipped", summary["num_skipped"]),
    ]
    for reason, count in sorted(summary.get("skipped_by_reason", {}).items()):
        rows.append((f"  skipped: {reason}", count))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    skipped = summary.get("skipped", [])
    for entry in skipped[:10]:
        lines.append(f"  - {entry['image_id']}: {entry['reason']}: {entry['detail']}")
    if len(skipped) > 10:
        lines.append(f"  ... {len(skipped) - 10} more in {summary.get('summary_file', 'summary')}")
    rule = "-" * max(len(line) for line in lines)
    return "\n".join([rule, *lines, rule])


# ------------------------------------------------------------------------------------------
# Sharded writer
# ------------------------------------------------------------------------------------------
def _fingerprint(records: list[ImageRecord], max_side: int | None) -> str:
    h = hashlib.sha256(f"v{SUMMARY_VERSION} max_side={max_side}\n".encode())
    for r in records:
        # Paths are left out on purpose: moving the image folder must not invalidate shards.
        h.update(json.dumps([r.image_id, list(r.positives), list(r.negatives)]).encode())
        h.update(b"\n")
    return h.hexdigest()


def _stats_path(out_dir: str, shard: str) -> str:
    # Hidden, so `list_shards` and users see only shards; written before the shard's rename.
    return os.path.join(out_dir, f".{shard}.stats.json")


def _check_record(record: ImageRecord) -> None:
    if not isinstance(record, ImageRecord):
        raise DataPrepError(f"write_split expects ImageRecord items, got {type(record).__name__}")
    bad = [v for v in (*record.positives, *record.negatives) if int(v) < 0]
    if bad:
        raise DataPrepError(
            f"image {record.image_id!r} ({record.path}): negative label indices {bad}"
        )
    both = set(record.positives) & set(record.negatives)
    if both:
        raise DataPrepError(
            f"image {record.image_id!r} ({record.path}): labels {sorted(both)} are both positive "
            "and verified negative"
        )


def _write_shard(records, tmp_path, executor, max_side, window, progress):
    """Processes `records` with the pool and writes examples to `tmp_path`; returns stats."""
    skipped, actions, positive_counts = [], collections.Counter(), collections.Counter()
    num_examples = 0
    pending: collections.deque = collections.deque()
    it = iter(records)
    with tf.io.TFRecordWriter(tmp_path) as writer:
        def drain_one():
            nonlocal num_examples
            record, future = pending.popleft()
            try:
                data, action = future.result()
            except images.SkipImage as e:
                skipped.append({"image_id": record.image_id, "path": record.path,
                                "reason": e.reason, "detail": str(e)})
            else:
                writer.write(tfrecord_schema.serialize_example(
                    record.image_id, data, record.positives, record.negatives))
                actions[action] += 1
                positive_counts.update(int(p) for p in record.positives)
                num_examples += 1
            progress.update(1)

        for record in it:
            pending.append((record, executor.submit(images.process_image, record.path, max_side)))
            if len(pending) >= window:
                drain_one()
        while pending:
            drain_one()
    return {
        "num_records": len(records),
        "num_examples": num_examples,
        "skipped": skipped,
        "image_actions": dict(actions),
        "positive_counts": {str(k): v for k, v in sorted(positive_counts.items())},
    }



def _existing_totals(out_dir: str, split: str) -> set[int]:
    totals = set()
    for name in tf.io.gfile.listdir(out_dir):
        m = tfrecord_schema._SHARD_RE.match(name)
        if m and m.group("split") == split:
            totals.add(int(m.group("total")))
    return totals


def merge_summary(out_dir: str, split: str, num_shards: int, source: str,
                  max_side: int | None = None, extra: dict | None = None) -> dict:
    """Builds `<split>-summary.json` from the per-shard stats present in `out_dir` and writes it
    atomically. Any part can call it; the summary says how many shards are complete."""
    totals = collections.Counter()
    actions, reasons, positive_counts = (collections.Counter() for _ in range(3))
    skipped, complete = [], 0
    for i in range(num_shards):
        name = tfrecord_schema.shard_name(split, i, num_shards)
        stats_file = _stats_path(out_dir, name)
        if not (tf.io.gfile.exists(os.path.join(out_dir, name))
                and tf.io.gfile.exists(stats_file)):
            continue
        with tf.io.gfile.GFile(stats_file) as f:
            stats = json.load(f)
        complete += 1
        totals["num_records"] += stats["num_records"]
        totals["num_examples"] += stats["num_examples"]
        actions.update(stats["image_actions"])
        positive_counts.update(stats["positive_counts"])
        skipped.extend(stats["skipped"])
        reasons.update(s["reason"] for s in stats["skipped"])
    summary = {
        "schema_version": tfrecord_schema.SCHEMA_VERSION,
        "split": split,
        "source": source,
        "num_shards": num_shards,
        "shards_complete": complete,
        "complete": complete == num_shards,
        "num_records": totals["num_records"],
        "num_examples": totals["num_examples"],
        "num_skipped": len(skipped),
        "skipped_by_reason": dict(sorted(reasons.items())),
        "image_actions": dict(sorted(actions.items())),
        "max_side": max_side,
        "positive_counts": dict(sorted(positive_counts.items(), key=lambda kv: int(kv[0]))),
        "skipped": sorted(skipped, key=lambda s: s["image_id"]),
    }
    path = tfrecord_schema.summary_path(out_dir, split)
    if extra:
        summary["details"] = extra
    elif tf.io.gfile.exists(path):
        # Keep converter details recorded by an earlier part.
        try:
            with tf.io.gfile.GFile(path) as f:
                old = json.load(f)
            if "details" in old:
                summary["details"] = old["details"]
        except (OSError, tf.errors.OpError, json.JSONDecodeError):
            pass
    atomic_io.atomic_write_text(path, json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    return summary


@dataclasses.dataclass(frozen=True)
class _Shard:
    """A shard this run writes."""

    name: str
    final: str       # its path
    stats_file: str  # its hidden per-shard stats (written before the rename)
    fingerprint: str
    records: list[ImageRecord]


def _check_arguments(split: str, num_shards: int, num_parts: int, part_index: int) -> None:
    if num_shards < 1:
        raise DataPrepError(f"num_shards must be >= 1, got {num_shards}")
    if num_parts < 1 or not 0 <= part_index < num_parts:
        raise DataPrepError(f"part_index {part_index} must be in [0, num_parts={num_parts})")
    if not split or os.sep in split or split.startswith("."):
        raise DataPrepError(f"invalid split name {split!r}")


def _records_of_part(records, num_shards: int, num_parts: int,
                     part_index: int) -> dict[int, list[ImageRecord]]:
    """{shard index: its records} of the shards this part writes (record j -> shard j % n)."""
    mine: dict[int, list[ImageRecord]] = {
        i: [] for i in range(num_shards) if i % num_parts == part_index
    }
    for j, record in enumerate(records):
        shard = j % num_shards
        if shard in mine:
            _check_record(record)
            mine[shard].append(record)
    return mine


def _plan(mine: dict[int, list[ImageRecord]], out_dir: str, split: str, num_shards: int,
          max_side: int | None) -> tuple[list[_Shard], int]:
    """(the shards still to write, how many are complete from an earlier run)."""
    todo, resumed = [], 0
    for i, recs in mine.items():
        name = tfrecord_schema.shard_name(split, i, num_shards)
        final, stats_file = os.path.join(out_dir, name), _stats_path(out_dir, name)
        fingerprint = _fingerprint(recs, max_side)
        for stale in tf.io.gfile.listdir(out_dir):
            if stale.startswith(f".{name}.tmp-"):
                tf.io.gfile.remove(os.path.join(out_dir, stale))  # left by a crashed run
        if tf.io.gfile.exists(final) and tf.io.gfile.exists(stats_file):
            with tf.io.gfile.GFile(stats_file) as f:
                old = json.load(f).get("fingerprint")
            if old != fingerprint:
                raise DataPrepError(
                    f"{final} exists but was written from different records or options; "
                    "delete the old output or choose another --output_dir"
                )
            resumed += 1
            continue
        todo.append(_Shard(name, final, stats_file, fingerprint, recs))
    return todo, resumed


def _write_planned(todo: list[_Shard], out_dir: str, max_side: int | None, workers: int,
                   bar: Progress) -> None:
    """Writes each shard to a temporary name, then its stats, then renames it (atomic)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as executor:
        for shard in todo:
            tmp = os.path.join(out_dir, f".{shard.name}.tmp-{os.getpid()}")
            try:
                stats = _write_shard(shard.records, tmp, executor, max_side, 4 * workers, bar)
                stats.update(shard=shard.name, fingerprint=shard.fingerprint)
                atomic_io.atomic_write_text(shard.stats_file,
                                            json.dumps(stats, ensure_ascii=False) + "\n")
                # The commit point: the shard now exists, complete (rename(2) locally).
                tf.io.gfile.rename(tmp, shard.final, overwrite=True)
            finally:
                if tf.io.gfile.exists(tmp):
                    tf.io.gfile.remove(tmp)


def write_split(records, out_dir: str, split: str, *, num_shards: int, source: str,
                max_side: int | None = None, num_workers: int | None = None, num_parts: int = 1,
                part_index: int = 0, progress: bool = True, extra: dict | None = None) -> dict:
    """Checks/converts the images of `records` and writes this part's shards of a split.

    Args:
      records: iterable of ImageRecord (streamed; only this part's records are kept).
      out_dir: the prepared dataset directory.
      split: "train", "val", "test", ...
      num_shards: number of shards of the split (>= 1).
      source: free text recorded in the summary (e.g. "coco instances_train2014.json").
      max_side: downscale images whose longer side exceeds this (re-encodes them).
      num_workers: image threads (PIL releases the GIL while decoding/encoding); default: cores.
      num_parts, part_index: run only shards i with i % num_parts == part_index.
      progress: show a progress bar and the summary table on stderr.
      extra: converter details stored under "details" in the summary.

    Returns:
      The merged split summary (also written to `<out_dir>/<split>-summary.json`), plus
      "shards_written_this_run" / "shards_resumed_this_run".

    Raises:
      DataPrepError: bad arguments, malformed records, or existing shards written from
        different inputs or with a different shard count.
    """
    _check_arguments(split, num_shards, num_parts, part_index)
    tf.io.gfile.makedirs(out_dir)
    other_totals = _existing_totals(out_dir, split) - {num_shards}
    if other_totals:
        raise DataPrepError(
            f"{out_dir!r} already has '{split}' shards of a {sorted(other_totals)}-shard set; "
            f"remove them or use --num_shards={sorted(other_totals)[0]}"
        )
    mine = _records_of_part(records, num_shards, num_parts, part_index)
    todo, resumed = _plan(mine, out_dir, split, num_shards, max_side)
    total = sum(len(shard.records) for shard in todo)
    desc = f"{split} (part {part_index + 1}/{num_parts})" if num_parts > 1 else split
    bar = Progress(total, desc, enabled=progress)
    _write_planned(todo, out_dir, max_side, num_workers or os.cpu_count() or 1, bar)
    if total:
        bar.close()
    summary = merge_summary(out_dir, split, num_shards, source, max_side, extra)
    summary["shards_written_this_run"] = len(todo)
    summary["shards_resumed_this_run"] = resumed
    summary["summary_file"] = tfrecord_schema.summary_path(out_dir, split)
    if progress:
        sys.stderr.write(format_summary_table(summary) + "\n")
    return summary
