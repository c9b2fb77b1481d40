"""What a 3D file reader is: the kind of file, where the dataset layouts keep it, how it is read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np


if TYPE_CHECKING:
    from .depth_png import Camera


@dataclass(frozen=True)
class ReadOptions:
    """What a reader may need besides the file: the pixel limit (`data.max_image_pixels`), for
    depth images the camera (intrinsics and depth scale), and the paired RGB image's (H, W): the
    grid of a point-cloud file whose header has none (PLY, a ``HEIGHT 1`` PCD)."""

    max_pixels: int
    camera: Camera | None = None
    rgb_hw: tuple[int, int] | None = None


@dataclass(frozen=True)
class Reader:
    """One kind of 3D file.

    ``read(path, options)`` returns float32 HxWx3: an organised point cloud (x, y, z per pixel,
    missing points (0, 0, 0)) when ``cloud``, else a normal-map image (uint8 HxWx3, handled like an
    RGB image). Every failure is a `trd.errors.DataError` naming the file.

    ``kind`` is what a `trd.data.samples.Sample` records (``xyz_kind``); ``folder`` the 3D folder
    of a sample in the dataset layouts (``<defect>/xyz/``); ``suffixes`` the file endings it
    accepts (lower case, matched in any case; the usual one first); ``formats`` the dataset formats
    (``data.format``) whose 3D files it reads; ``unit`` where the unit of the values is stated:
    "xyz_unit" (the values are in ``data.xyz_unit``) or "camera" (``depth_scale`` in camera.json:
    the reader returns metres); ``camera``: needs camera.json. ``size(path)`` is the (height, width)
    the file declares in its header, read without decoding it (what `trd serve` charges a request
    against its pixel budget before reading it): every kind states its own, since a point-cloud
    file is no image (`trd.data.io.image_size` for the image formats).
    """

    kind: str
    folder: str
    suffixes: tuple[str, ...]
    formats: tuple[str, ...]
    description: str
    read: Callable[[Path, ReadOptions], np.ndarray]
    size: Callable[[Path], tuple[int, int]]
    cloud: bool = True
    unit: str = "xyz_unit"
    camera: bool = False
