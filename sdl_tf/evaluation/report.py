"""Figure-3-style visual reports: a grid PNG and a small self-contained HTML page.

Each image is shown with its top tags; next to each tag, the row of the matrix A that gave
its score (s_c = max_m (A t_c), eq. 1; the row is the arg-max m). The paper's Figure 3 uses
these row numbers to show that different rows learn different semantic concepts.
Marks: `*` = unseen label (zero-shot), `+` = extra label added at prediction time.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from sdl_tf.utils import atomic_io, gfile_utils


@dataclasses.dataclass(frozen=True)
class Tag:
    """One predicted tag: name, score, matrix row (0-based) and origin flags."""

    name: str
    score: float
    row: int
    unseen: bool = False
    extra: bool = False

    @property
    def mark(self) -> str:
        return "+" if self.extra else ("*" if self.unseen else "")


@dataclasses.dataclass(frozen=True)
class TaggedImage:
    """An image and its top tags (empty, with `error` set, if the image could not be used)."""

    image_id: str
    path: str
    tags: tuple[Tag, ...] = ()
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def _thumbnail(source, size: int) -> Image.Image:
    """A size x size RGB thumbnail (letter-boxed); a grey X for unreadable files.

    Args:
      source: an image file path, or a uint8 (H, W, 3) RGB array (images already in memory,
        e.g. the validation images that training logs to TensorBoard).
      size: thumbnail side in pixels.
    """
    canvas = Image.new("RGB", (size, size), (235, 235, 235))
    try:
        if isinstance(source, np.ndarray):
            im = Image.fromarray(np.asarray(source, np.uint8), "RGB")
        else:
            im = Image.open(io.BytesIO(gfile_utils.read_bytes(source)))
        with im:
            # contain() also enlarges small images so tiny demo images stay visible.
            im = ImageOps.contain(im.convert("RGB"), (size, size))
            canvas.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
    except (OSError, ValueError):
        draw = ImageDraw.Draw(canvas)
        draw.line((0, 0, size, size), fill=(160, 160, 160), width=3)
        draw.line((0, size, size, 0), fill=(160, 160, 160), width=3)
    return canvas


def _row_colour(row: int) -> tuple[int, int, int]:
    palette = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
               (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
    return palette[row % len(palette)]


def tag_line(tag: Tag) -> str:
    """Text for one tag, e.g. `[3] dog* 0.412` (row numbers 1-based as in Figure 3)."""
    return f"[{tag.row + 1}] {tag.name}{tag.mark} {tag.score:.3f}"


def grid_image(items, thumb: int = 192, columns: int = 4, images=None) -> np.ndarray:
    """Renders the Figure-3-style grid: each cell is a thumbnail above its tag list, each tag
    coloured by (and prefixed with) the row of A that wins it.

    Args:
      items: sequence of `TaggedImage`.
      thumb: thumbnail side in pixels.
      columns: cells per row of the grid.
      images: optional sequence of uint8 (H, W, 3) arrays, one per item, drawn instead of
        reading `item.path`.

    Returns:
      uint8 (height, width, 3) RGB array.
    """
    return np.asarray(_render_grid(list(items), thumb, columns, images))


def write_grid_png(items, path: str, thumb: int = 192, columns: int = 4) -> str:
    """Writes the grid PNG (`grid_image` of the items' image files).

    Args:
      items: sequence of `TaggedImage`.
      path: output .png path (written atomically).
      thumb: thumbnail side in pixels.
      columns: cells per row of the grid.

    Returns:
      `path`.
    """
    grid = _render_grid(list(items), thumb, columns, None)
    buf = io.BytesIO()
    grid.save(buf, "PNG")
    gfile_utils.makedirs(os.path.dirname(path))
    atomic_io.atomic_write(path, lambda f: f.write(buf.getvalue()))
    return path


def _render_grid(items, thumb, columns, images) -> Image.Image:
    if images is not None and len(images) != len(items):
        raise ValueError(f"{len(images)} images for {len(items)} items")
    font = ImageFont.load_default()
    line_h = 13
    max_tags = max((len(it.tags) for it in items), default=0)
    text_h = line_h * (max(max_tags, 1) + 1) + 6
    cell_w, cell_h = thumb + 12, thumb + text_h + 12
    columns = max(1, min(columns, len(items) or 1))
    rows = max(1, -(-len(items) // columns))
    grid = Image.new("RGB", (columns * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(grid)
    for i, item in enumerate(items):
        x0, y0 = (i % columns) * cell_w + 6, (i // columns) * cell_h + 6
        grid.paste(_thumbnail(item.path if images is None else images[i], thumb), (x0, y0))
        y = y0 + thumb + 3
        draw.text((x0, y), item.image_id[:32], fill=(0, 0, 0), font=font)
        y += line_h
        if item.error:
            draw.text((x0, y), ("error: " + item.error)[:40], fill=(200, 0, 0), font=font)
            continue
        for tag in item.tags:
            draw.text((x0, y), tag_line(tag)[:40], fill=_row_colour(tag.row), font=font)
            y += line_h
    return grid


def write_html(items, path: str, thumb: int = 192, title: str = "SDL tags") -> str:
    """Writes a self-contained HTML page (thumbnails embedded as base64 PNG) with a table of
    each image's top tags, their scores, rows and marks. Returns `path`."""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif}.cell{display:inline-block;vertical-align:top;"
        "margin:8px;width:" + str(thumb + 40) + "px}td{padding:0 4px;font-size:12px}"
        ".unseen{font-weight:bold}.extra{font-style:italic}.err{color:#c00}</style>",
        f"</head><body><h1>{html.escape(title)}</h1>",
        "<p>[r] = row of the matrix A that scored the tag (eq. 1 arg-max, as in Figure 3); "
        "<b>*</b> unseen label; <i>+</i> extra label given at prediction time.</p>",
    ]
    for item in items:
        buf = io.BytesIO()
        _thumbnail(item.path, thumb).save(buf, "PNG")
        src = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        parts.append(f"<div class='cell'><img src='{src}' alt='{html.escape(item.image_id)}'>")
        parts.append(f"<div>{html.escape(item.image_id)}</div>")
        if item.error:
            parts.append(f"<div class='err'>error: {html.escape(item.error)}</div></div>")
            continue
        parts.append("<table>")
        for tag in item.tags:
            cls = "extra" if tag.extra else ("unseen" if tag.unseen else "")
            parts.append(
                f"<tr class='{cls}'><td>[{tag.row + 1}]</td><td>{html.escape(tag.name)}"
                f"{tag.mark}</td><td>{tag.score:.3f}</td></tr>"
            )
        parts.append("</table></div>")
    parts.append("</body></html>\n")
    text = "\n".join(parts)
    gfile_utils.makedirs(os.path.dirname(path))
    atomic_io.atomic_write_text(path, text)
    return path


def top_tags(
    scores: np.ndarray, rows: np.ndarray, names, unseen, extra, top_k: int
) -> tuple[Tag, ...]:
    """The top-K tags of one image.

    Args:
      scores: (C,) scores; rows: (C,) arg-max rows; names: C names; unseen, extra: (C,) bool.
      top_k: K (capped at C).
    """
    from sdl_tf.evaluation.metrics import top_k_indices

    k = min(int(top_k), len(names))
    # Higher score first, ties -> lower label index (as the metrics' P/R@K and tf.math.top_k).
    order = top_k_indices(np.asarray(scores)[None, :], k)[0] if k > 0 else ()
    return tuple(
        Tag(names[c], float(scores[c]), int(rows[c]), bool(unseen[c]), bool(extra[c]))
        for c in order
    )
