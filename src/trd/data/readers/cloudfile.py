"""What the point-cloud file readers (`pcd`, `ply`) share: the text header, exact reads of the body,
ASCII tables and the organised grid.

Both formats are a short text header followed by the points, one record per point in grid order
(row after row). The readers parse the header themselves, check every size it declares against
``data.max_image_pixels`` and against the file's length before a byte of the body is read, then
view the body with numpy. Hand-written rather than pypcd4 / plyfile: measured faster on every
variant, no new dependency (LZF comes from imagecodecs, already needed for TIFFs), and the checks
that make a lying or cut file fail here would have to wrap either library anyway
(benchmarks/README.md, "Point-cloud readers").
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path

import numpy as np
from numpy.lib.recfunctions import structured_to_unstructured

from ...errors import DataError
from ..io import check_size, reading

#: A header longer than this is not a header (both formats keep theirs to a few hundred bytes).
HEADER_LIMIT = 1 << 16
#: The advice every refusal of a cloud without a pixel grid ends with.
EXPORT_ORGANISED = ("trd needs one point per pixel of the RGB image, in rows: export the scan as an organised "
                    "cloud (PCD with HEIGHT > 1, PLY with all points in grid order, missing ones as NaN or 0) "
                    "or as an XYZ TIFF")
#: Longest plausible ASCII text of one value ("-1.23456789e-05" and a separator, with room to spare).
_MAX_BYTES_PER_VALUE = 64


def read_header(path: Path, end: re.Pattern[bytes], kind: str) -> tuple[list[str], int]:
    """The header lines of ``path`` up to and including the line ``end`` matches, and the offset of
    the body; DataError when the file is missing or has no such line in its first 64 KiB."""
    with reading(path, f"a {kind} file", f"cannot read {kind} file"):
        with path.open("rb") as fh:
            head = fh.read(HEADER_LIMIT)
    found = end.search(head)
    if found is None:
        raise DataError(path, f"not a {kind} file: no end of header in its first {HEADER_LIMIT // 1024} KiB")
    return head[: found.end()].decode("latin-1").splitlines(), found.end()


def check_grid(path: Path, height: int, width: int, max_pixels: int) -> None:
    """Refuse a declared grid that is empty or over ``data.max_image_pixels`` (before any body read)."""
    if height < 1 or width < 1:
        raise DataError(path, f"declares an empty grid ({width}x{height} points)")
    check_size(path, height, width, max_pixels)


def read_bytes(path: Path, offset: int, size: int, what: str) -> np.ndarray:
    """Exactly ``size`` bytes of ``path`` from ``offset`` (uint8); DataError when the file is shorter.

    The file's length is checked first, so a cut file is refused without reading it, and the buffer
    is not zero-filled before the read (``np.empty``, not ``bytearray``).
    """
    with reading(path, "a point-cloud file", "cannot read point-cloud file"):
        available = os.path.getsize(path) - offset
        if available < size:
            raise DataError(path, f"{what} ends early: {max(available, 0)} of {size} bytes (truncated file?)")
        buf = np.empty(size, np.uint8)
        with path.open("rb") as fh:
            fh.seek(offset)
            got = fh.readinto(memoryview(buf))
    if got != size:
        raise DataError(path, f"{what} ends early: {got} of {size} bytes (truncated file?)")
    return buf


def read_text_body(path: Path, offset: int, values: int) -> bytes:
    """The ASCII body of ``path`` from ``offset``, refused when it is far longer than ``values``
    numbers can be (a header that lies about its size, or something else appended)."""
    with reading(path, "a point-cloud file", "cannot read point-cloud file"):
        size = os.path.getsize(path) - offset
        if size > values * _MAX_BYTES_PER_VALUE + HEADER_LIMIT:
            raise DataError(path, f"the ascii body has {size} bytes, far more than its declared {values} values "
                                  "can take (wrong header?)")
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read()


def parse_table(path: Path, text: bytes, rows: int, columns: tuple[int, int, int], what: str) -> np.ndarray:
    """x, y, z (float32 rows x 3) from the columns ``columns`` of a whitespace-separated table.

    Exactly ``rows`` rows are expected; a bad token or a row count other than the header's is a
    DataError naming the row. ("nan" and "inf" are read as such: they mark missing points.)
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # numpy warns about an empty input: counted below
            table = np.loadtxt(io.BytesIO(text), dtype=np.float32, comments=None, usecols=columns, ndmin=2)
    except ValueError as exc:  # "could not convert string 'a' to float32 at row 7, column 2." and the like
        detail = " ".join(str(exc).split())
        raise DataError(path, f"cannot parse the {what}: {detail} (truncated or damaged file?)") from None
    if table.shape[0] != rows:
        cut = " (truncated file?)" if table.shape[0] < rows else ""
        raise DataError(path, f"the {what} has {table.shape[0]} rows but the header declares {rows}{cut}")
    return table


def xyz_columns(points: np.ndarray) -> np.ndarray:
    """The x, y, z fields of structured point records as float32 (N, 3), in one copy."""
    return structured_to_unstructured(points[["x", "y", "z"]], dtype=np.float32)


def organised(path: Path, xyz: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, 3) coordinates in grid order -> float32 HxWx3 with every point that has a NaN or infinite
    coordinate set to (0, 0, 0), the missing-point convention of every 3D input; DataError when no
    point is left (z == 0 everywhere)."""
    cloud = np.ascontiguousarray(xyz, dtype=np.float32).reshape(height, width, 3)
    # per coordinate: 5x faster than np.isfinite(cloud).all(axis=2), which reduces over a 3-long axis
    broken = ~(np.isfinite(cloud[..., 0]) & np.isfinite(cloud[..., 1]) & np.isfinite(cloud[..., 2]))
    if broken.any():
        cloud[broken] = 0.0
    if not np.any(cloud[:, :, 2]):
        raise DataError(path, "no valid points: every point is missing (NaN or z = 0)")
    return cloud
