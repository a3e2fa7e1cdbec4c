"""Drawing the mosaics: source photos -> square tiles (decoded once each) -> 2x2 mosaic JPEGs.

A photo becomes a tile by a centre square crop and an antialiased resize (greyscale, CMYK,
palette and alpha photos made RGB); a photo that cannot be decoded is skipped with the reasons
of `data_prep.images` (it is never drawn). A mosaic is written to a temporary name and renamed,
so no half-written mosaic survives a crash.
"""

from __future__ import annotations

import dataclasses
import io
import os

import numpy as np
from PIL import Image

from data_prep import images
from data_prep.common import Progress
from data_prep.mosaic_sampling import TILES_PER_SIDE, Mosaic


def load_tile(path: str, tile: int) -> tuple[np.ndarray, str]:
    """One photo as a (tile, tile, 3) uint8 RGB tile: centre square crop, antialiased resize.

    Returns:
      (the tile, the photo's PIL mode before conversion to RGB, e.g. "L" for greyscale).

    Raises:
      images.SkipImage: missing, empty, not an image, truncated or corrupt.
    """
    data = images.read_image_bytes(path)
    with images.skip_bad_image(path):
        img = Image.open(io.BytesIO(data))
        # JPEG DCT scaling: a large photo decodes directly at >= tile size (fast).
        img.draft("RGB", (tile, tile))
        img.load()
        mode = img.mode
        img = images.to_rgb(img)  # greyscale, CMYK, palette, alpha -> RGB
        w, h = img.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        # Pillow's bicubic filter widens with the scale factor: an antialiased downscale.
        img = img.resize((tile, tile), Image.Resampling.BICUBIC,
                         box=(left, top, left + side, top + side))
        return np.asarray(img, np.uint8), mode


@dataclasses.dataclass(frozen=True)
class Tiles:
    """The photos decoded as tiles (row i = photo i)."""

    tiles: np.ndarray   # (N, tile, tile, 3) uint8; zeros where a photo was skipped
    ok: np.ndarray      # (N,) bool, False for a skipped photo
    skipped: list[dict]  # {"path", "reason", "detail"} per skipped photo
    modes: dict[str, int]  # the photos' PIL modes before conversion to RGB ("L": greyscale)


def decode_tiles(paths: list[str], tile: int, progress: bool) -> Tiles:
    """Decodes every photo of `paths` once to a tile (see `load_tile`); bad photos skipped."""
    tiles = np.zeros((len(paths), tile, tile, 3), np.uint8)
    ok = np.ones(len(paths), bool)
    skipped = []
    modes: dict[str, int] = {}
    bar = Progress(len(paths), "decode photos", unit="img", enabled=progress)
    for i, p in enumerate(paths):
        try:
            tiles[i], mode = load_tile(p, tile)
            modes[mode] = modes.get(mode, 0) + 1
        except images.SkipImage as e:
            ok[i] = False
            skipped.append({"path": p, "reason": e.reason, "detail": str(e)})
        bar.update()
    bar.close()
    return Tiles(tiles, ok, skipped, modes)


def encode_mosaic(tiles: np.ndarray, photos, tile: int) -> bytes:
    """JPEG bytes of the 2x2 mosaic of rows `photos` (row-major) of `tiles` (N, t, t, 3)."""
    canvas = np.empty((TILES_PER_SIDE * tile, TILES_PER_SIDE * tile, 3), np.uint8)
    for pos, p in enumerate(photos):
        r, c = divmod(pos, TILES_PER_SIDE)
        canvas[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = tiles[p]
    return images.encode_jpeg(Image.fromarray(canvas))


def write_images(mosaics: list[Mosaic], tiles: np.ndarray, tile: int, out_dir: str,
                 desc: str, progress: bool) -> None:
    """Draws and writes each mosaic to `<out_dir>/<mosaic.image>` (folders created)."""
    bar = Progress(len(mosaics), desc, unit="mosaic", enabled=progress)
    made: set[str] = set()
    for m in mosaics:
        path = os.path.join(out_dir, m.image)
        folder = os.path.dirname(path)
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
        data = encode_mosaic(tiles, m.photos, tile)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # no half-written mosaic survives a crash
        bar.update()
    bar.close()
