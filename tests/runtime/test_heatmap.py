"""`trd.runtime.heatmap.png_bytes`: the PNG pictures every record points at."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from trd.runtime.heatmap import png_bytes


@pytest.mark.parametrize("shape", [(37, 53), (37, 53, 3)])
def test_png_bytes_hold_the_pixels_and_equal_images_give_equal_bytes(shape: tuple[int, ...]) -> None:
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    encoded = png_bytes(img)
    decoded = Image.open(io.BytesIO(encoded))
    assert decoded.format == "PNG" and decoded.mode == ("L" if len(shape) == 2 else "RGB")
    assert np.array_equal(np.asarray(decoded), img)
    assert png_bytes(img.copy()) == encoded  # no time stamp or other metadata
    assert png_bytes(np.asfortranarray(img)) == encoded  # any memory layout
