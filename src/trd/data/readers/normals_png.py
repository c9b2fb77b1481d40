"""Normal-map PNG: Eyecandies' own surface normals as an RGB image, the 3D input as it is
(docs/METHOD.md §2.8); it goes through the RGB image's transform."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import image_size, read_rgb
from .base import Reader, ReadOptions


def _read(path: Path, options: ReadOptions) -> np.ndarray:
    return read_rgb(path, options.max_pixels)


READER = Reader(kind="normals_png", folder="normals", suffixes=(".png",), formats=("eyecandies",),
                description="normal-map PNG", read=_read, size=image_size, cloud=False, unit="none")
