"""XYZ TIFF: an organised point cloud as an HxWx3 image of x, y, z (MVTec 3D-AD's ``xyz/*.tiff``).

Float or integer samples, uncompressed or compressed with anything imagecodecs decodes (LZW,
deflate, ...), as OpenCV and vendor SDKs write them. A missing point is (0, 0, 0); the values are in
``data.xyz_unit`` (metres by default).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile

from ...errors import DataError
from ..io import DEFAULT_MAX_PIXELS, check_size, reading
from .base import Reader, ReadOptions


class _Collect(logging.Handler):
    """Keeps the messages of the log records it receives."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # tifffile prefixes the repr of its object ("<tifffile.TiffPages @8> invalid offset ..."): drop it
        text = re.sub(r"^<[^>]*>\s*", "", record.getMessage()).strip()
        self.messages.append(text.splitlines()[0] if text else record.levelname)


@contextlib.contextmanager
def _tifffile_log() -> Iterator[list[str]]:
    """Collect tifffile's log warnings instead of letting them reach stderr.

    Without a configured logging handler Python prints them on stderr, which broke the CLI's
    one-line error for a corrupt TIFF; `read_xyz` puts the first one in its DataError instead.
    """
    log = logging.getLogger("tifffile")
    handler, propagate = _Collect(), log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        yield handler.messages
    finally:
        log.removeHandler(handler)
        log.propagate = propagate


def read_xyz(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an organised point cloud TIFF as float32 HxWx3 (any TIFF compression imagecodecs reads).

    Integer clouds are converted to float32. NaN/inf values, a shape other than HxWx3, a declared
    size over ``max_pixels`` and a cloud without a single point (z == 0 everywhere) are refused.
    """
    path = Path(path)
    # tifffile raises TiffFileError, ValueError, struct.error, ...
    with reading(path, "a TIFF file", "cannot read TIFF (corrupt or truncated?)"), _tifffile_log() as logged:
        with tifffile.TiffFile(path) as tif:
            shape = tif.series[0].shape if tif.series else ()
            if len(shape) >= 2:
                check_size(path, int(shape[0]), int(shape[1]), max_pixels)
            arr = tif.asarray()
    if not isinstance(arr, np.ndarray) or arr.size == 0:
        why = f" ({logged[0]})" if logged else ""
        raise DataError(path, f"cannot read TIFF: no image data (empty or corrupt file){why}")
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise DataError(path, f"expected an HxWx3 point cloud, found shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise DataError(path, f"unsupported point cloud dtype {arr.dtype}, expected float or integer")
    xyz = arr.astype(np.float32)
    bad = int(np.count_nonzero(~np.isfinite(xyz)))
    if bad:
        raise DataError(path, f"{bad} NaN or inf values in the point cloud; store missing points as 0")
    if not np.any(xyz[:, :, 2]):
        raise DataError(path, "no valid points: z is 0 everywhere")
    return xyz


def tiff_size(path: Path) -> tuple[int, int]:
    """(height, width) of the cloud a TIFF declares, from its header (nothing decoded)."""
    with reading(path, "a TIFF file", "cannot read TIFF (corrupt or truncated?)"), _tifffile_log():
        with tifffile.TiffFile(path) as tif:
            shape = tif.series[0].shape if tif.series else ()
    if len(shape) < 2:
        raise DataError(path, "cannot read TIFF: no image data (empty or corrupt file)")
    return int(shape[0]), int(shape[1])


READER = Reader(kind="xyz_tiff", folder="xyz", suffixes=(".tiff", ".tif"), formats=("mvtec3d", "folder"),
                description="XYZ TIFF", read=lambda path, options: read_xyz(path, options.max_pixels), size=tiff_size)
