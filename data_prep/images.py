"""Image checking and conversion: one input file -> RGB JPEG bytes for a TFRecord, or a reason
to skip it.

`process_image` guarantees what `data_prep.shards.write_split` promises about images:
grayscale / CMYK / PNG (any non-JPEG PIL can read) inputs become RGB JPEGs; valid RGB JPEGs
pass through byte-identical unless `max_side` asks for smaller images; missing, empty,
non-image, truncated or corrupt files raise `SkipImage` with a short reason, so one bad file
never stops a run. The mosaic builder decodes its photos through the same checks
(`read_image_bytes`, `skip_bad_image`).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

from PIL import Image, ImageFile, UnidentifiedImageError

from sdl_tf.utils import gfile_utils

JPEG_QUALITY = 95


class SkipImage(Exception):
    """An input image that cannot be used; `.reason` is a short category, str() the detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def encode_jpeg(img: Image.Image) -> bytes:
    """JPEG bytes of an RGB image at the project's quality (`JPEG_QUALITY`)."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def to_rgb(img: Image.Image) -> Image.Image:
    """`img` as RGB; transparent pixels (RGBA, LA, PA, P with transparency) become white."""
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


def read_image_bytes(path: str) -> bytes:
    """The bytes of an image file (any tf.io.gfile path).

    Raises:
      SkipImage: missing, unreadable or empty.
      RuntimeError: Pillow's global `LOAD_TRUNCATED_IMAGES` is on (it would hide truncation).
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
    return data


@contextlib.contextmanager
def skip_bad_image(path: str) -> Iterator[None]:
    """Turns what PIL raises for a bad image file (while decoding `path`) into `SkipImage`."""
    try:
        yield
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
    data = read_image_bytes(path)
    with skip_bad_image(path):
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
        return encode_jpeg(to_rgb(img)), _action(fmt, mode, too_big)


def _action(fmt: str | None, mode: str, resized: bool) -> str:
    """What `process_image` did to an image that does not pass through."""
    if resized:
        return "resized"
    if fmt == "JPEG":
        return {"L": "converted_grayscale", "CMYK": "converted_cmyk"}.get(
            mode, f"converted_{mode.lower()}")
    return f"converted_{(fmt or 'unknown').lower()}"
