"""Tests for data_prep.mosaic_drawing: photos -> tiles -> mosaic JPEGs."""

import io

import numpy as np
from PIL import Image

from data_prep import mosaic_drawing


def test_tiles_are_centre_crops_and_bad_photos_are_skipped(tmp_path):
    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, 20:40] = (250, 10, 10)  # the centre square is red, the sides black
    Image.fromarray(wide).save(tmp_path / "wide.png")
    Image.new("L", (16, 16), 90).save(tmp_path / "grey.jpg", quality=95)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8no")
    paths = [str(tmp_path / n) for n in ("wide.png", "grey.jpg", "broken.jpg")]
    tiles = mosaic_drawing.decode_tiles(paths, 8, progress=False)
    assert tiles.tiles.shape == (3, 8, 8, 3) and tiles.ok.tolist() == [True, True, False]
    assert (tiles.tiles[0, :, :, 0] > 200).all() and (tiles.tiles[0, :, :, 1:] < 40).all()
    assert abs(int(tiles.tiles[1].mean()) - 90) <= 2
    assert tiles.modes == {"RGB": 1, "L": 1}
    assert [s["reason"] for s in tiles.skipped] == ["not_an_image"]


def test_mosaic_puts_tiles_row_major(tmp_path):
    tiles = np.stack([np.full((8, 8, 3), v, np.uint8) for v in (0, 80, 160, 240)])
    image = Image.open(io.BytesIO(mosaic_drawing.encode_mosaic(tiles, (3, 2, 1, 0), 8)))
    assert (image.format, image.size) == ("JPEG", (16, 16))
    pixels = np.asarray(image, np.int64)
    assert [round(pixels[r, c].mean(), -1) for r, c in ((4, 4), (4, 12), (12, 4), (12, 12))] == [
        240, 160, 80, 0]
