"""Writers of organised point clouds as PCD and PLY files, following the formats' specifications, for
the reader tests (tests/data, tests/robustness). Independent writers made the files of
tests/data/clouds/ (pypcd4, plyfile); these add the layouts those do not write (padding fields, PCL's
compressed and ASCII layouts, Photoneo's and PCL's grid elements, faces after the vertices)."""

from __future__ import annotations

import struct
from pathlib import Path

import imagecodecs
import numpy as np


def _text(points: np.ndarray) -> bytes:
    """One row per point, float32-exact ("%.9g"; NaN as "nan")."""
    return "".join(" ".join(f"{v:.9g}" for v in row) + "\n" for row in points.tolist()).encode()


def write_pcd(path: Path, xyz: np.ndarray, data: str = "binary", *, extra: dict[str, np.ndarray] | None = None,
              padding: bool = False, pcl_padding: bool = False, dtype: str = "<f4", height: int | None = None,
              header: dict[str, str] | None = None) -> Path:
    """``xyz`` (HxWx3) as a PCD file: DATA ascii, binary or binary_compressed.

    ``extra``: more float32 fields after z (name -> HxW values); ``padding``: a 4-byte ``_`` field
    between z and the extra fields, with its bytes in the body, or (``pcl_padding``) declared in the
    header but left out of ASCII and compressed bodies, as PCL does; ``height``: the HEIGHT written
    (1: a list of points); ``header``: lines to replace (e.g. {"POINTS": "7"}).
    """
    h, w = xyz.shape[:2]
    n = h * w
    columns = [(name, xyz[..., i].reshape(n).astype(dtype)) for i, name in enumerate("xyz")]
    if padding or pcl_padding:
        columns.append(("_", np.zeros(n, "<u4")))
    for name, values in (extra or {}).items():
        columns.append((name, values.reshape(n).astype("<f4")))
    kinds = {"f": "F", "u": "U", "i": "I"}
    lines = {"VERSION": "0.7", "FIELDS": " ".join(c for c, _ in columns),
             "SIZE": " ".join(str(v.dtype.itemsize) for _, v in columns),
             "TYPE": " ".join(kinds[v.dtype.kind] for _, v in columns), "COUNT": " ".join("1" for _ in columns),
             "WIDTH": str(n if height == 1 else w), "HEIGHT": str(height or h), "VIEWPOINT": "0 0 0 1 0 0 0",
             "POINTS": str(n), "DATA": data}
    lines.update(header or {})
    head = "# .PCD v0.7 - Point Cloud Data file format\n" + "".join(f"{k} {v}\n" for k, v in lines.items())
    body_columns = [(c, v) for c, v in columns if not (pcl_padding and c == "_" and data != "binary")]
    if data == "binary":
        record = np.empty(n, [(f"f{i}", v.dtype) for i, (_, v) in enumerate(body_columns)])
        for i, (_, values) in enumerate(body_columns):
            record[f"f{i}"] = values
        body = record.tobytes()
    elif data == "binary_compressed":
        raw = b"".join(v.tobytes() for _, v in body_columns)
        packed = imagecodecs.lzf_encode(raw, header=False)
        body = struct.pack("<II", len(packed), len(raw)) + packed
    else:
        body = _text(np.stack([v.astype(np.float64) for _, v in body_columns], axis=1))
    path.write_bytes(head.encode() + body)
    return path


def write_ply(path: Path, xyz: np.ndarray, fmt: str = "binary_little_endian", *, notes: tuple[str, ...] = (),
              dtype: str = "f4", grid_element: str = "", faces: int = 0, vertices: int | None = None) -> Path:
    """``xyz`` (HxWx3) as a PLY file of format ``fmt`` with its vertices in grid order.

    ``notes``: header lines ("comment width 12", "obj_info num_cols 12"); ``grid_element``:
    "phoxi_frame_params" (Photoneo) or "camera" (PCL) after the vertices, holding the grid;
    ``faces``: a face element with list properties after the vertices; ``vertices``: keep only the
    first so many points (an unordered export).
    """
    h, w = xyz.shape[:2]
    points = xyz.reshape(-1, 3)[:vertices]
    order = ">" if fmt == "binary_big_endian" else "<"
    kind = {"f4": "float", "f8": "double"}[dtype]
    head = ["ply", f"format {fmt} 1.0", *notes, f"element vertex {len(points)}",
            *(f"property {kind} {a}" for a in "xyz"), "property uchar red"]
    trailing = []
    if faces:
        head += [f"element face {faces}", "property list uchar int vertex_indices"]
    if grid_element == "phoxi_frame_params":
        head += ["element phoxi_frame_params 1", "property uint32 frame_width", "property uint32 frame_height",
                 "property uint32 frame_index"]
        trailing = [("u4", w), ("u4", h), ("u4", 7)]
    elif grid_element == "camera":
        head += ["element camera 1", *(f"property float {p}" for p in ("view_px", "view_py", "view_pz")),
                 "property int viewportx", "property int viewporty"]
        trailing = [("f4", 0.0), ("f4", 0.0), ("f4", 0.0), ("i4", w), ("i4", h)]
    head.append("end_header")
    record = np.empty(len(points), [("x", order + dtype), ("y", order + dtype), ("z", order + dtype), ("red", "u1")])
    for i, axis in enumerate("xyz"):
        record[axis] = points[:, i]
    record["red"] = np.arange(len(points)) % 256
    if fmt == "ascii":
        rows = _text(np.stack([record[a].astype(np.float64) for a in ("x", "y", "z", "red")], axis=1))
        rows += b"".join(b"3 0 1 2\n" for _ in range(faces))
        rows += (" ".join(str(v) for _, v in trailing) + "\n").encode() if trailing else b""
    else:
        rows = record.tobytes() + b"".join(struct.pack(order + "Biii", 3, 0, 1, 2) for _ in range(faces))
        rows += b"".join(np.array([v], order + t).tobytes() for t, v in trailing)
    path.write_bytes(("\n".join(head) + "\n").encode() + rows)
    return path
