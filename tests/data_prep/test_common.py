"""Tests for data_prep.common: the error type, the progress display and the common flags."""

import io

import pytest

from data_prep import common
from sdl_tf.errors import SDLError


def test_data_prep_error_is_the_projects_error_type():
    # `sdl_tf.cli.run` prints every SDLError as one line; callers catching ValueError still do.
    error = common.DataPrepError("train.csv:3: bad row")
    assert isinstance(error, SDLError) and isinstance(error, ValueError)
    assert str(error) == "train.csv:3: bad row"
    with pytest.raises(ValueError, match="bad row"):
        raise error


def test_progress_line_has_rate_and_eta():
    stream = io.StringIO()
    bar = common.Progress(10, "train", stream=stream)
    bar.update(4)
    bar.close()
    text = stream.getvalue()
    assert "4/10" in text and "img/s" in text and "ETA" in text


def test_common_flags_parse_into_options(tmp_path):
    from absl import flags

    fv = flags.FlagValues()  # not the global FLAGS: --output_dir is required here only
    common.define_common_flags(fv)
    common.define_common_flags(fv)  # idempotent: several converters may call it
    flagfile = tmp_path / "f.cfg"
    flagfile.write_text("--output_dir=/tmp/x\n--num_parts=3\n--part_index=2\n--max_side=500\n")
    fv(["prog", f"--flagfile={flagfile}"])
    opts = common.common_options_from_flags(fv)
    assert (opts.output_dir, opts.num_parts, opts.part_index, opts.max_side) == (
        "/tmp/x", 3, 2, 500)
    assert opts.word_vectors_format == "auto" and opts.num_workers is None
