"""Tests for data_prep.converters: record remapping after dropped labels, the end-of-run lines
and the shared entry point (`main`)."""

import dataclasses

import pytest
from absl import app

from data_prep import converters
from data_prep.common import DataPrepError, ImageRecord


def test_remap_records_drops_labels_and_counts_records_left_without_positives():
    records = [ImageRecord("a", "a.jpg", (0, 2), (1,)), ImageRecord("b", "b.jpg", (1,))]
    counts = {}
    out = list(converters.remap_records(records, ("x", "y", "z"), ("x", "z"), counts))
    assert out == [ImageRecord("a", "a.jpg", (0, 1), ())]
    assert counts == {"excluded_only_dropped_labels": 1}
    # Nothing dropped: the records pass through unchanged and nothing is counted.
    assert list(converters.remap_records(records, ("x", "y"), ("x", "y"), counts)) == records


def test_print_result_lines(capsys):
    converters.print_result({
        "labels": {"num_labels": 3, "num_seen": 2, "num_unseen": 1, "dropped": ["w"]},
        "selection": {"train": {"selected": 2, "excluded_no_label": 1, "names": ["skip me"]}},
        "train": {"num_examples": 1, "num_skipped": 1, "shards_complete": 1, "num_shards": 2},
    })
    assert capsys.readouterr().out.splitlines() == [
        "labels: 3 (2 seen, 1 unseen, 1 dropped without a vector)",
        "train: selected=2, excluded_no_label=1",
        "train: 1 examples written, 1 images skipped, shards complete 1/2",
    ]


@dataclasses.dataclass(frozen=True)
class _NoFlags:
    """A config without flags: `main` builds it from nothing."""


def test_main_calls_prepare_reports_and_lets_bad_inputs_through():
    reported = []
    assert converters.main(["prog"], _NoFlags, lambda config: {"config": config},
                           report=reported.append) == 0
    assert reported == [{"config": _NoFlags()}]

    def bad(config):
        raise DataPrepError("x.csv:3: bad row")

    # Bad inputs propagate: `sdl_tf.cli.run` prints them as one line and exits with status 1.
    with pytest.raises(DataPrepError, match="x.csv:3"):
        converters.main(["prog"], _NoFlags, bad)
    with pytest.raises(app.UsageError, match="unexpected arguments: \\['stray'\\]"):
        converters.main(["prog", "stray"], _NoFlags, bad)
