"""PCD: an organised point cloud as PCL, Zivid and most 3D-camera SDKs write it (``*.pcd``).

The header (PCD v0.5-0.7) names the fields of a point (``FIELDS x y z rgb``, their ``SIZE``,
``TYPE`` F/I/U and ``COUNT``), the grid (``WIDTH`` x ``HEIGHT`` = ``POINTS``, row by row) and the
body's encoding (``DATA ascii``, ``binary``: packed records, or ``binary_compressed``: LZF of the
fields one after another). x, y and z must be float fields; the others are skipped. Padding
fields ``_`` are accepted in all three encodings, with or without their values in the body (PCL
leaves them out of ASCII and compressed bodies, other writers keep them).

A point with a NaN or infinite coordinate and the point (0, 0, 0) are missing. ``HEIGHT 1`` is an
unorganised cloud and is refused, unless its ``POINTS`` equal the paired RGB image's H x W exactly:
Zivid's SDK before 2.5 saved organised scans with a ``HEIGHT 1`` header. Values are in
``data.xyz_unit`` like an XYZ TIFF's.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import DataError
from ..io import DEFAULT_MAX_PIXELS
from .base import Reader, ReadOptions
from .cloudfile import (EXPORT_ORGANISED, check_grid, organised, parse_table, read_bytes, read_header,
                        read_text_body, xyz_columns)

_END = re.compile(rb"^[ \t]*DATA[ \t]+[^\r\n]*\r?\n", re.MULTILINE | re.IGNORECASE)
_TYPES = {("F", 4): "f4", ("F", 8): "f8", ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4", ("I", 8): "i8",
          ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8"}
_ENCODINGS = ("ascii", "binary", "binary_compressed")
_PEEK = 4096  # bytes looked at to count the values of the first ASCII row


@dataclass(frozen=True)
class PcdHeader:
    """What a PCD header declares: per field its name, size in bytes, type letter and count."""

    fields: tuple[str, ...]
    sizes: tuple[int, ...]
    types: tuple[str, ...]
    counts: tuple[int, ...]
    width: int
    height: int
    points: int
    data: str

    def record(self, padding: bool = True) -> np.dtype:
        """The packed little-endian dtype of one point (``padding``: with the ``_`` fields)."""
        parts = []
        for i, (name, size, kind, count) in enumerate(zip(self.fields, self.sizes, self.types, self.counts)):
            if name == "_" and not padding:
                continue
            code = "<" + _TYPES[(kind, size)]
            parts.append((f"_{i}" if name == "_" else name, code, (count,)) if count > 1 else
                         (f"_{i}" if name == "_" else name, code))
        return np.dtype(parts)


def _numbers(path: Path, values: dict[str, list[str]], key: str, default: list[str] | None = None) -> list[int]:
    try:
        return [int(v) for v in values.get(key, default or [])]
    except ValueError:
        raise DataError(path, f"bad PCD header: {key} {' '.join(values[key])} is not a list of integers") from None


def parse_header(path: Path, lines: list[str]) -> PcdHeader:
    """The header of a PCD file; DataError naming what is missing or inconsistent."""
    values: dict[str, list[str]] = {}
    for line in lines:
        words = line.split()
        if words and not words[0].startswith("#"):
            values[words[0].upper()] = words[1:]
    for key in ("FIELDS", "SIZE", "TYPE", "WIDTH", "HEIGHT"):
        if not values.get(key):
            raise DataError(path, f"not a PCD file: its header has no {key} line")
    fields = tuple(values["FIELDS"])
    sizes, counts = _numbers(path, values, "SIZE"), _numbers(path, values, "COUNT", ["1"] * len(fields))
    (width,), (height,) = _numbers(path, values, "WIDTH")[:1], _numbers(path, values, "HEIGHT")[:1]
    points = _numbers(path, values, "POINTS", [str(width * height)])[0]
    types = tuple(t.upper() for t in values["TYPE"])
    if not len(fields) == len(sizes) == len(types) == len(counts):
        raise DataError(path, f"bad PCD header: {len(fields)} FIELDS but {len(sizes)} SIZE, {len(types)} TYPE and "
                              f"{len(counts)} COUNT entries")
    for name, size, kind, count in zip(fields, sizes, types, counts):
        if (kind, size) not in _TYPES or count < 1:
            raise DataError(path, f"bad PCD header: field {name} has TYPE {kind}, SIZE {size}, COUNT {count}")
    if points != width * height:
        raise DataError(path, f"bad PCD header: POINTS {points} is not WIDTH {width} x HEIGHT {height}")
    data = values.get("DATA", [""])[0].lower()
    if data not in _ENCODINGS:
        raise DataError(path, f"PCD DATA {data!r} is not supported: save it as {', '.join(_ENCODINGS)}")
    return PcdHeader(fields, tuple(sizes), types, tuple(counts), width, height, points, data)


def _grid(path: Path, header: PcdHeader, rgb_hw: tuple[int, int] | None) -> tuple[int, int]:
    """The (H, W) grid of the points: the header's, or for a HEIGHT 1 header the paired image's."""
    if header.height > 1:
        return header.height, header.width
    if rgb_hw is not None and rgb_hw[0] > 1 and rgb_hw[0] * rgb_hw[1] == header.points:
        return rgb_hw
    paired = "" if rgb_hw is None else f" and its RGB image is {rgb_hw[1]}x{rgb_hw[0]} = {rgb_hw[0] * rgb_hw[1]} pixels"
    raise DataError(path, f"unorganised cloud: HEIGHT is 1 ({header.points} points in a list, no pixel grid){paired}; "
                          f"{EXPORT_ORGANISED}")


def _check_xyz(path: Path, header: PcdHeader) -> None:
    for axis in "xyz":
        if axis not in header.fields:
            raise DataError(path, f"no {axis} field (FIELDS {' '.join(header.fields)}): not a point cloud of x, y, z")
        i = header.fields.index(axis)
        if header.types[i] != "F" or header.counts[i] != 1:
            raise DataError(path, f"field {axis} is TYPE {header.types[i]} SIZE {header.sizes[i]} COUNT "
                                  f"{header.counts[i]}; expected one float (TYPE F)")


def read_pcd(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, rgb_hw: tuple[int, int] | None = None) -> np.ndarray:
    """An organised PCD cloud as float32 HxWx3, missing points (0, 0, 0), in the file's unit.

    ``rgb_hw``: the paired RGB image's (H, W), the grid of a ``HEIGHT 1`` file with exactly that
    many points. Sizes are checked against ``max_pixels`` and the file length before the body is
    read; every failure is a DataError naming the file.
    """
    path = Path(path)
    lines, start = read_header(path, _END, "PCD")
    header = parse_header(path, lines)
    check_grid(path, header.height, header.width, max_pixels)  # what the header declares, before anything else
    height, width = _grid(path, header, rgb_hw)
    _check_xyz(path, header)
    n = header.points
    if header.data == "binary":
        record = header.record()
        points = np.frombuffer(read_bytes(path, start, n * record.itemsize, "the binary body"), record)
        _refuse_extra(path, start + n * record.itemsize, record.itemsize)
        return organised(path, xyz_columns(points), height, width)
    if header.data == "binary_compressed":
        return organised(path, _decompressed_xyz(path, header, start), height, width)
    return organised(path, _ascii_xyz(path, header, start), height, width)


def _refuse_extra(path: Path, end: int, record_size: int) -> None:
    """A body with at least one more point than the header declares: the header is wrong."""
    extra = path.stat().st_size - end
    if extra >= record_size:
        raise DataError(path, f"the file is {extra} bytes longer than its header declares: it holds more points "
                              "than WIDTH x HEIGHT (wrong header?)")


def _decompressed_xyz(path: Path, header: PcdHeader, start: int) -> np.ndarray:
    """x, y, z of a ``binary_compressed`` body: two little-endian uint32 (compressed and raw size),
    then LZF of each field's values for all points, one field after another."""
    import imagecodecs  # LZF; already a dependency for compressed TIFFs

    compressed, raw = struct.unpack("<II", read_bytes(path, start, 8, "the compressed body's sizes").tobytes())
    n = header.points
    # PCL writes no values for padding fields "_", other writers do: the raw size tells which.
    layout = next((header.record(padding) for padding in (False, True) if header.record(padding).itemsize * n == raw),
                  None)
    if layout is None:
        raise DataError(path, f"the compressed body declares {raw} bytes of points, but {n} points of FIELDS "
                              f"{' '.join(header.fields)} take {header.record(False).itemsize * n} (wrong header?)")
    body = read_bytes(path, start + 8, compressed, "the compressed body")
    try:
        values = imagecodecs.lzf_decode(body, header=False, out=raw)
    except Exception as exc:  # imagecodecs.LzfError and friends
        raise DataError(path, f"cannot decompress the binary_compressed body (damaged or truncated?): {exc}") from None
    if values is None or len(values) != raw:
        raise DataError(path, f"the binary_compressed body decompresses to {0 if values is None else len(values)} of "
                              f"{raw} bytes (damaged?)")
    xyz = np.empty((n, 3), np.float32)
    offset = 0
    for name in layout.names:
        field = layout.fields[name][0]
        if name in ("x", "y", "z"):
            xyz[:, "xyz".index(name)] = np.frombuffer(values, field, count=n, offset=offset)
        offset += field.itemsize * n
    return xyz


def _ascii_xyz(path: Path, header: PcdHeader, start: int) -> np.ndarray:
    """x, y, z of a ``DATA ascii`` body: one point per line, values in field order."""
    columns = [name for name, count in zip(header.fields, header.counts) for _ in range(count)]
    text = read_text_body(path, start, header.points * len(columns))
    first = text[:_PEEK].lstrip().split(b"\n", 1)[0].split()
    without_padding = [c for c in columns if c != "_"]
    if len(first) == len(without_padding) != len(columns):  # PCL leaves the padding values out
        columns = without_padding
    return parse_table(path, text, header.points, tuple(columns.index(a) for a in "xyz"), "ascii body")


def _read(path: Path, options: ReadOptions) -> np.ndarray:
    return read_pcd(path, options.max_pixels, options.rgb_hw)


def pcd_size(path: Path) -> tuple[int, int]:
    """(HEIGHT, WIDTH) a PCD file declares, from its header (nothing else read)."""
    lines, _ = read_header(path, _END, "PCD")
    header = parse_header(path, lines)
    return header.height, header.width


READER = Reader(kind="pcd", folder="xyz", suffixes=(".pcd",), formats=("mvtec3d", "folder"),
                description="organised PCD point cloud", read=_read, size=pcd_size)
