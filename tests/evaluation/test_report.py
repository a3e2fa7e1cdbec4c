"""Figure-3-style grid PNG and HTML page."""

import numpy as np
from PIL import Image

from sdl_tf.evaluation import report


def _items(tmp_path):
    red = np.zeros((20, 30, 3), np.uint8)
    red[..., 0] = 255
    Image.fromarray(red).save(tmp_path / "red.png")
    tags = (report.Tag("dog", 0.91, 2, unseen=True), report.Tag("<b>cat</b>", 0.5, 0),
            report.Tag("kite", 0.25, 6, unseen=True, extra=True))
    return [report.TaggedImage("red", str(tmp_path / "red.png"), tags),
            report.TaggedImage("gone", str(tmp_path / "missing.jpg"), (), "cannot read it")]


def test_top_tags_order_rows_and_marks():
    scores = np.array([0.2, 0.9, -0.1, 0.5])
    rows = np.array([0, 3, 1, 6])
    tags = report.top_tags(scores, rows, ["a", "b", "c", "d"], [False, True, False, True],
                           [False, False, False, True], top_k=3)
    assert [(t.name, t.row, t.mark) for t in tags] == [("b", 3, "*"), ("d", 6, "+"), ("a", 0, "")]
    # Rows print 1-based, like the numbers in the paper's Figure 3.
    assert report.tag_line(tags[0]) == "[4] b* 0.900"
    assert len(report.top_tags(scores, rows, list("abcd"), [0] * 4, [0] * 4, top_k=10)) == 4


def test_grid_png(tmp_path):
    items = _items(tmp_path)
    path = report.write_grid_png(items, str(tmp_path / "out" / "grid.png"), thumb=64, columns=4)
    grid = np.asarray(Image.open(path).convert("RGB"))
    # Two cells in one row: width 2 * (64 + 12); height = thumb + text + margins.
    assert grid.shape[1] == 2 * 76 and grid.shape[0] > 64
    # The red image is letter-boxed into the first thumbnail (enlarged to 64 px wide).
    assert (grid[6 + 32, 6 + 32] == [255, 0, 0]).all()
    # Tag text is drawn in the row's colour under the thumbnail; the error in red.
    text_area = grid[6 + 64:, :76]
    assert (text_area != 255).any(axis=-1).sum() > 50
    assert not (grid[6 + 32, 76 + 6 + 32] == [255, 0, 0]).all()  # missing file: grey X cell


def test_html_is_self_contained_and_escaped(tmp_path):
    path = report.write_html(_items(tmp_path), str(tmp_path / "tags.html"), thumb=32)
    text = open(path, encoding="utf-8").read()
    assert text.count("data:image/png;base64,") == 2
    assert "&lt;b&gt;cat&lt;/b&gt;" in text and "<b>cat</b>" not in text
    assert "[3]</td><td>dog*" in text and "[7]</td><td>kite+" in text
    assert "error: cannot read it" in text
