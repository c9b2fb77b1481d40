"""Organised PCD and ordered PLY clouds read exactly: files written by other tools (pypcd4, plyfile:
tests/data/clouds/) and every layout real writers use, NaN and (0, 0, 0) both missing. The refusals
(unorganised, cut, lying, oversized files) are in tests/robustness/test_cloud_files.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trd.data.readers import READERS, ReadOptions
from trd.data.readers.pcd import read_pcd
from trd.data.readers.ply import read_ply

from ..cloud_writers import write_pcd, write_ply

CLOUDS = Path(__file__).parent / "clouds"


@pytest.fixture(scope="module")
def source() -> np.ndarray:
    """The cloud of tests/data/clouds (9 x 12, metres): NaN at two points, (0, 0, 0) at one."""
    return np.load(CLOUDS / "source.npy")


def _missing_as_zero(xyz: np.ndarray) -> np.ndarray:
    out = xyz.copy()
    out[~np.isfinite(out).all(axis=2)] = 0.0
    return out


@pytest.mark.parametrize("name", ["pypcd4_binary.pcd", "pypcd4_compressed.pcd", "plyfile_le_grid.ply",
                                  "plyfile_ascii.ply", "plyfile_be.ply"])
def test_files_of_other_writers_read_exactly(name: str, source: np.ndarray) -> None:
    kind = "pcd" if name.endswith(".pcd") else "ply"
    got = READERS[kind].read(CLOUDS / name, ReadOptions(64_000_000, rgb_hw=source.shape[:2]))
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, _missing_as_zero(source))  # bit-identical; NaN points are (0, 0, 0)
    assert np.isnan(source).any() and (source == 0).all(axis=2).any()


PCD_LAYOUTS = {
    "ascii": {"data": "ascii"},
    "binary": {"data": "binary"},
    "binary_compressed": {"data": "binary_compressed"},
    "float64 x y z": {"data": "binary", "dtype": "<f8"},
    "rgb + normals, padding kept (binary)": {"data": "binary", "padding": True, "extra": ("rgb", "normal_x")},
    "PCL padding, left out of the compressed body": {"data": "binary_compressed", "pcl_padding": True,
                                                      "extra": ("rgb",)},
    "padding kept in the compressed body": {"data": "binary_compressed", "padding": True, "extra": ("rgb",)},
    "PCL padding, left out of the ascii rows": {"data": "ascii", "pcl_padding": True, "extra": ("rgb",)},
    "padding kept in the ascii rows": {"data": "ascii", "padding": True},
}


@pytest.mark.parametrize("layout", PCD_LAYOUTS)
def test_every_pcd_layout_reads_exactly(layout: str, source: np.ndarray, tmp_path: Path) -> None:
    options = dict(PCD_LAYOUTS[layout])
    extra = {name: np.full(source.shape[:2], 0.25, np.float32) for name in options.pop("extra", ())}
    path = write_pcd(tmp_path / "scan.pcd", source, extra=extra, **options)
    np.testing.assert_array_equal(read_pcd(path), _missing_as_zero(source))


def test_a_pcd_list_of_exactly_the_image_pixels_takes_the_image_grid(source: np.ndarray, tmp_path: Path) -> None:
    # Zivid's SDK before 2.5 saved organised scans with a HEIGHT 1 header
    path = write_pcd(tmp_path / "zivid.pcd", source, height=1)
    np.testing.assert_array_equal(read_pcd(path, rgb_hw=source.shape[:2]), _missing_as_zero(source))


PLY_LAYOUTS = {
    "binary LE, grid in obj_info": {"notes": ("obj_info num_cols 12", "obj_info num_rows 9")},
    "binary BE, grid in comments": {"fmt": "binary_big_endian", "notes": ("comment width 12", "comment height 9")},
    "ascii, grid as Width = W; Height = H": {"fmt": "ascii", "notes": ("obj_info Scanner (Width = 12; Height = 9)",)},
    "double x y z, grid from the RGB image": {"dtype": "f8"},
    "faces after the vertices": {"faces": 5},
    "Photoneo frame params (binary)": {"grid_element": "phoxi_frame_params"},
    "Photoneo frame params (ascii)": {"fmt": "ascii", "grid_element": "phoxi_frame_params"},
    "PCL camera viewport (binary)": {"grid_element": "camera"},
    "PCL camera viewport (ascii, after faces)": {"fmt": "ascii", "grid_element": "camera", "faces": 2},
}


@pytest.mark.parametrize("layout", PLY_LAYOUTS)
def test_every_ply_layout_reads_exactly(layout: str, source: np.ndarray, tmp_path: Path) -> None:
    options = PLY_LAYOUTS[layout]
    path = write_ply(tmp_path / "scan.ply", source, **options)
    header_grid = bool(options.get("notes") or options.get("grid_element"))
    rgb_hw = None if header_grid else source.shape[:2]  # a grid in the file needs no image
    np.testing.assert_array_equal(read_ply(path, rgb_hw=rgb_hw), _missing_as_zero(source))


def test_the_grid_of_the_file_wins_over_the_image_size(source: np.ndarray, tmp_path: Path) -> None:
    path = write_ply(tmp_path / "scan.ply", source, notes=("obj_info num_cols 12", "obj_info num_rows 9"))
    assert read_ply(path, rgb_hw=(12, 9)).shape == (9, 12, 3)  # the pair check then names the mismatch


def test_zero_and_nan_conventions_give_the_same_cloud(source: np.ndarray, tmp_path: Path) -> None:
    zeros = _missing_as_zero(source)  # Photoneo: (0, 0, 0) for missing points
    nans = zeros.copy()
    nans[(zeros == 0).all(axis=2)] = np.nan  # Zivid: NaN for missing points
    for fmt in ("ascii", "binary_little_endian"):
        a = read_ply(write_ply(tmp_path / f"nan-{fmt}.ply", nans, fmt), rgb_hw=source.shape[:2])
        b = read_ply(write_ply(tmp_path / f"zero-{fmt}.ply", zeros, fmt), rgb_hw=source.shape[:2])
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(read_pcd(write_pcd(tmp_path / "nan.pcd", nans)),
                                  read_pcd(write_pcd(tmp_path / "zero.pcd", zeros, "ascii")))
