"""Tests for data_prep.images: image checking and conversion (passthrough, RGB conversion,
resizing, the skip reasons)."""

import io
import os

import pytest
from PIL import Image

from data_prep import images
from tests.helpers.data_prep_files import solid_jpeg, write_image_kinds


@pytest.fixture
def image_files(tmp_path):
    """One file of each kind the writer must handle."""
    return write_image_kinds(tmp_path / "img")


def test_process_image_kinds(image_files):
    data, action = images.process_image(image_files["rgb"])
    assert action == "passthrough"
    assert data == open(image_files["rgb"], "rb").read()  # byte-identical
    for kind, action_name in [("gray", "converted_grayscale"), ("cmyk", "converted_cmyk"),
                              ("png", "converted_png")]:
        data, action = images.process_image(image_files[kind])
        assert action == action_name
        img = Image.open(io.BytesIO(data))
        assert (img.format, img.mode) == ("JPEG", "RGB")
    # CMYK (0, 255, 255, 0) is red; transparent PNG pixels become white.
    r, g, b = Image.open(io.BytesIO(images.process_image(image_files["cmyk"])[0])).getpixel((5, 5))
    assert r > 200 and g < 60 and b < 60
    png = Image.open(io.BytesIO(images.process_image(image_files["png"])[0]))
    assert min(png.getpixel((2, 2))) > 245
    for kind, reason in [("empty", "empty"), ("truncated", "truncated"), ("text", "not_an_image"),
                         ("corrupt", "corrupt"), ("corrupt_png", "corrupt"),
                         ("missing", "missing")]:
        with pytest.raises(images.SkipImage) as err:
            images.process_image(image_files[kind])
        assert err.value.reason == reason, kind
        assert os.path.basename(image_files[kind]) in str(err.value)


def test_max_side_resizes_large_and_keeps_small(tmp_path):
    big = solid_jpeg(tmp_path / "big.jpg", size=(300, 120))
    small = solid_jpeg(tmp_path / "small.jpg", size=(50, 40))
    data, action = images.process_image(big, max_side=100)
    assert action == "resized"
    assert Image.open(io.BytesIO(data)).size == (100, 40)
    data, action = images.process_image(small, max_side=100)
    assert action == "passthrough" and data == open(small, "rb").read()



def test_refuses_to_run_when_pillow_fills_truncated_images(image_files, monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        images.process_image(image_files["rgb"])
