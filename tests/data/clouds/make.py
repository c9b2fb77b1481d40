"""Writes the small cloud files of this folder with two independent writers, pypcd4 (PCD) and plyfile
(PLY), so that tests/data/test_cloud_readers.py checks trd's readers against files other tools made.

Not part of the test run and not a dependency of trd: run it once where both are installed
(``pip install pypcd4 plyfile``; this was pypcd4 1.5.1 and plyfile 1.1.5) and commit the outputs.
"""

from pathlib import Path

import numpy as np
import plyfile
from pypcd4 import Encoding, PointCloud

HERE = Path(__file__).parent
H, W = 9, 12


def source() -> np.ndarray:
    """A tilted bumpy surface ~0.4 m away with missing points: NaN at some, (0, 0, 0) at others."""
    rows, cols = np.indices((H, W), dtype=np.float64)
    z = 0.4 + 0.002 * cols - 0.001 * rows + 0.0005 * np.sin(cols) * np.cos(rows)
    xyz = np.stack([(cols - W / 2) * z / 500, (rows - H / 2) * z / 500, z], axis=2).astype(np.float32)
    xyz[2, 3] = np.nan
    xyz[5, 7, 0] = np.nan  # one coordinate only: the whole point is missing
    xyz[8, 0] = 0.0
    return xyz


def main() -> None:
    xyz = source()
    np.save(HERE / "source.npy", xyz)
    points = xyz.reshape(-1, 3)
    for encoding, name in ((Encoding.BINARY, "pypcd4_binary"), (Encoding.BINARY_COMPRESSED, "pypcd4_compressed")):
        cloud = PointCloud.from_xyz_points(points)
        cloud.metadata.width, cloud.metadata.height = W, H
        cloud.save(HERE / f"{name}.pcd", encoding=encoding)
    vertices = np.empty(H * W, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "u1")])
    for i, axis in enumerate("xyz"):
        vertices[axis] = points[:, i]
    vertices["intensity"] = np.arange(H * W) % 256
    element = plyfile.PlyElement.describe(vertices, "vertex")
    plyfile.PlyData([element], obj_info=[f"num_cols {W}", f"num_rows {H}"]).write(HERE / "plyfile_le_grid.ply")
    plyfile.PlyData([element], byte_order=">", comments=["no grid: it comes from the RGB image"]).write(
        HERE / "plyfile_be.ply")
    plyfile.PlyData([element], text=True, comments=[f"width {W}", f"height {H}"]).write(HERE / "plyfile_ascii.ply")


if __name__ == "__main__":
    main()
