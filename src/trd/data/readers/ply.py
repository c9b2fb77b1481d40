"""PLY: an ordered point cloud, one vertex per pixel in grid order (``*.ply``; Zivid, Photoneo, PCL).

``format ascii``, ``binary_little_endian`` or ``binary_big_endian``; the ``vertex`` element must
have float or double ``x``, ``y``, ``z`` (other properties and other elements, faces included, are
skipped). Zivid writes NaN for missing points, Photoneo (0, 0, 0): both are missing.

PLY has no pixel grid of its own. It is taken, in this order, from the header (``obj_info num_cols
W`` / ``num_rows H`` as PCL and range scanners write it, or ``comment width W`` / ``height H``),
from a trailing element (Photoneo's ``phoxi_frame_params`` frame_width / frame_height, PCL's
``camera`` viewportx / viewporty), or from the paired RGB image's size; it must hold exactly the
vertex count. An export that left the missing points out (unordered) cannot be put back on a grid
and is refused. Values are in ``data.xyz_unit`` like an XYZ TIFF's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import DataError
from ..io import DEFAULT_MAX_PIXELS
from .base import Reader, ReadOptions
from .cloudfile import (EXPORT_ORGANISED, check_grid, organised, parse_table, read_bytes, read_header,
                        read_text_body, xyz_columns)

_END = re.compile(rb"^end_header[ \t]*\r?\n", re.MULTILINE)
_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
          "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
          "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
_FORMATS = {"ascii": "", "binary_little_endian": "<", "binary_big_endian": ">"}
_WIDTH = re.compile(r"\b(?:width|num_cols)\b\s*[:=]?\s*(\d+)", re.IGNORECASE)
_HEIGHT = re.compile(r"\b(?:height|num_rows)\b\s*[:=]?\s*(\d+)", re.IGNORECASE)
#: Trailing elements that carry the grid: (element, width property, height property).
_GRID_ELEMENTS = (("phoxi_frame_params", "frame_width", "frame_height"), ("camera", "viewportx", "viewporty"))


@dataclass
class Element:
    """One ``element`` of the header: its name, instance count and (property, numpy type or None
    for a list property)."""

    name: str
    count: int
    properties: list[tuple[str, str | None]] = field(default_factory=list)

    def record(self, order: str) -> np.dtype | None:
        """The dtype of one instance in a binary body, None when it has a list (variable size)."""
        if any(kind is None for _, kind in self.properties):
            return None
        return np.dtype([(name, order + kind) for name, kind in self.properties])  # type: ignore[operator]


@dataclass
class PlyHeader:
    order: str  # "" (ascii), "<" or ">"
    notes: list[str]  # the text of comment and obj_info lines
    elements: list[Element]


def parse_header(path: Path, lines: list[str]) -> PlyHeader:
    """The header of a PLY file; DataError naming the first line it cannot understand."""
    if not lines or lines[0].strip() != "ply":
        raise DataError(path, "not a PLY file: it does not start with 'ply'")
    order, notes, elements = None, [], []
    for line in lines[1:]:
        words = line.split()
        if not words or words[0] == "end_header":
            continue
        if words[0] == "format":
            if len(words) < 2 or words[1] not in _FORMATS:
                raise DataError(path, f"PLY {line.strip()!r} is not supported: expected {', '.join(_FORMATS)}")
            order = _FORMATS[words[1]]
        elif words[0] in ("comment", "obj_info"):
            notes.append(" ".join(words[1:]))
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append(Element(words[1], int(words[2])))
        elif words[0] == "property" and elements and len(words) == 3 and words[1] in _TYPES:
            elements[-1].properties.append((words[2], _TYPES[words[1]]))
        elif words[0] == "property" and elements and len(words) == 5 and words[1] == "list":
            elements[-1].properties.append((words[4], None))
        else:
            raise DataError(path, f"bad PLY header line {line.strip()!r}")
    if order is None:
        raise DataError(path, "not a PLY file: its header has no format line")
    return PlyHeader(order, notes, elements)


def _vertex(path: Path, header: PlyHeader) -> int:
    """The index of the vertex element, checked to have scalar float x, y, z."""
    index = next((i for i, e in enumerate(header.elements) if e.name == "vertex"), None)
    if index is None:
        raise DataError(path, "no vertex element in the PLY header: not a point cloud")
    properties = dict(header.elements[index].properties)
    for axis in "xyz":
        if axis not in properties:
            raise DataError(path, f"the vertices have no {axis} property ({', '.join(properties)}): "
                                  "not a point cloud of x, y, z")
        if properties[axis] not in ("f4", "f8"):
            raise DataError(path, f"vertex property {axis} is {properties[axis] or 'a list'}; expected float or double")
    if None in properties.values():
        raise DataError(path, "the vertex element has a list property; only plain vertex properties are supported")
    if any(e.name == "range_grid" for e in header.elements):
        raise DataError(path, f"a range_grid PLY keeps only the valid points and indexes them: {EXPORT_ORGANISED}")
    return index


def _header_grid(notes: list[str]) -> tuple[int, int] | None:
    """(H, W) from comment / obj_info lines (``num_cols 1944``, ``width = 1944``), None if absent."""
    width = next((int(m.group(1)) for note in notes if (m := _WIDTH.search(note))), None)
    height = next((int(m.group(1)) for note in notes if (m := _HEIGHT.search(note))), None)
    return (height, width) if width and height else None


def _offsets(path: Path, header: PlyHeader, stop: int, start: int) -> int | None:
    """Byte offset of element ``stop`` in a binary body starting at ``start``; None when an element
    before it has list properties (its size is only known by walking it)."""
    offset = start
    for element in header.elements[:stop]:
        record = element.record(header.order)
        if record is None and element.count:
            return None
        offset += 0 if record is None else record.itemsize * element.count
    return offset


def _trailing_grid(path: Path, header: PlyHeader, start: int, tail: list[bytes] | None) -> tuple[tuple[int, int], str] | None:
    """(H, W) and its source from a grid element after the vertices (Photoneo, PCL), None if absent.
    ``tail``: the ASCII lines after the vertices (None for binary files)."""
    vertex = next(i for i, e in enumerate(header.elements) if e.name == "vertex")
    for name, wide, high in _GRID_ELEMENTS:
        index = next((i for i, e in enumerate(header.elements) if e.name == name and i > vertex and e.count == 1), None)
        if index is None or not {wide, high} <= dict(header.elements[index].properties).keys():
            continue
        element = header.elements[index]
        if tail is None:
            offset, record = _offsets(path, header, index, start), element.record(header.order)
            if offset is None or record is None or offset + record.itemsize > path.stat().st_size:
                continue
            values = np.frombuffer(read_bytes(path, offset, record.itemsize, f"the {name} element"), record)[0]
            w, h = float(values[wide]), float(values[high])
        else:
            row = sum(e.count for e in header.elements[vertex + 1: index])
            names = [p for p, _ in element.properties]
            words = tail[row].split() if row < len(tail) else []
            if len(words) != len(names):
                continue
            w, h = float(words[names.index(wide)]), float(words[names.index(high)])
        if w >= 1 and h >= 1 and w.is_integer() and h.is_integer():
            return (int(h), int(w)), f"its {name} element"
    return None


def _ascii_split(path: Path, text: bytes, header: PlyHeader, vertex: int) -> tuple[bytes, list[bytes]]:
    """The vertex rows of an ASCII body and the lines after them (one line per element instance)."""
    start = 0
    for _ in range(sum(e.count for e in header.elements[:vertex])):
        start = text.find(b"\n", start) + 1
        if start == 0:
            raise DataError(path, "the ascii body ends before the vertices (truncated file?)")
    end = len(text)
    while end > start and text[end - 1] in b" \t\r\n":  # not rstrip(): that would copy the body
        end -= 1
    cut = end
    for _ in range(sum(e.count for e in header.elements[vertex + 1:])):
        cut = text.rfind(b"\n", start, cut)
        if cut < 0:
            raise DataError(path, "the ascii body ends before its last elements (truncated file?)")
    if cut == end:  # nothing after the vertices: no copy of the whole body
        return (text if start == 0 else text[start:]), []
    return text[start:cut], text[cut:end].split(b"\n")[1:]


def read_ply(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, rgb_hw: tuple[int, int] | None = None) -> np.ndarray:
    """An ordered PLY cloud as float32 HxWx3, missing points (0, 0, 0), in the file's unit.

    ``rgb_hw``: the paired RGB image's (H, W), the grid when the file names none. The vertex count
    is checked against ``max_pixels`` and the file length before the vertices are read; every
    failure is a DataError naming the file.
    """
    path = Path(path)
    lines, start = read_header(path, _END, "PLY")
    header = parse_header(path, lines)
    index = _vertex(path, header)
    vertices = header.elements[index]
    n = vertices.count
    check_grid(path, 1, n, max_pixels)
    names = [p for p, _ in vertices.properties]
    if header.order:
        tail, rows = None, b""
        offset = _offsets(path, header, index, start)
        if offset is None:
            raise DataError(path, "an element with list properties comes before the vertices; not supported")
    else:
        text = read_text_body(path, start, n * len(names) + sum(e.count * 16 for e in header.elements))
        rows, tail = _ascii_split(path, text, header, index)
    found = _header_grid(header.notes)
    grid, source = (found, "its header") if found else _trailing_grid(path, header, start, tail) or (rgb_hw, "its RGB image")
    if grid is None:
        raise DataError(path, f"no pixel grid: the header names none for its {n} vertices (and no paired RGB image "
                              f"gives one); {EXPORT_ORGANISED}")
    height, width = grid
    if height * width != n or height < 2:
        raise DataError(path, f"unorganised cloud: {n} vertices do not fill the {width}x{height} grid of {source} "
                              f"(an unordered export drops the missing points); {EXPORT_ORGANISED}")
    check_grid(path, height, width, max_pixels)
    if not header.order:
        return organised(path, parse_table(path, rows, n, tuple(names.index(a) for a in "xyz"), "vertex list"),
                         height, width)
    record = vertices.record(header.order)
    assert record is not None  # checked by _vertex
    points = np.frombuffer(read_bytes(path, offset, n * record.itemsize, "the vertex data"), record)
    end = _offsets(path, header, len(header.elements), start)
    if end is not None and path.stat().st_size - end >= record.itemsize:
        raise DataError(path, f"the file is {path.stat().st_size - end} bytes longer than its header declares: it "
                              "holds more vertices than the header says (wrong header?)")
    return organised(path, xyz_columns(points), height, width)


def _read(path: Path, options: ReadOptions) -> np.ndarray:
    return read_ply(path, options.max_pixels, options.rgb_hw)


def ply_size(path: Path) -> tuple[int, int]:
    """(1, vertex count) a PLY file declares, from its header: its points (the grid may come only
    from the paired RGB image)."""
    lines, _ = read_header(path, _END, "PLY")
    header = parse_header(path, lines)
    return 1, header.elements[_vertex(path, header)].count


READER = Reader(kind="ply", folder="xyz", suffixes=(".ply",), formats=("mvtec3d", "folder"),
                description="ordered PLY point cloud", read=_read, size=ply_size)
