"""File readers: conversions they promise, and a DataError naming the file for every bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from trd.data.io import DEFAULT_MAX_PIXELS, check_pair, read_mask, read_rgb, staged_dir
from trd.data.readers import ReadOptions, reader
from trd.data.readers.depth_png import Camera, read_depth_png
from trd.data.readers.xyz_tiff import read_xyz


def _png(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(arr, mode=mode).save(path) if mode else Image.fromarray(arr).save(path)
    return path


def _tiff(path: Path, arr: np.ndarray) -> Path:
    tifffile.imwrite(path, arr, photometric="rgb" if arr.ndim == 3 and arr.shape[2] == 3 else "minisblack")
    return path


def _cloud(h: int = 6, w: int = 5) -> np.ndarray:
    xyz = np.zeros((h, w, 3), np.float32)
    xyz[..., 2] = 0.4
    return xyz



def test_read_rgb_converts_modes(tmp_path: Path) -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = read_rgb(_png(tmp_path / "l.png", grey))
    assert out.dtype == np.uint8 and out.shape == (3, 4, 3) and np.all(out == grey[..., None])
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # fully transparent: alpha is dropped, not composited
    assert np.all(read_rgb(_png(tmp_path / "rgba.png", rgba))[..., 0] == 200)
    la = np.stack([grey, np.full_like(grey, 7)], axis=2)
    assert np.all(read_rgb(_png(tmp_path / "la.png", la, "LA")) == grey[..., None])
    pal = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), mode="P")
    pal.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
    pal.save(tmp_path / "p.png")
    assert read_rgb(tmp_path / "p.png")[0, 1].tolist() == [40, 50, 60]
    deep = np.array([[0, 65535], [257, 32896]], np.uint16)
    assert read_rgb(_png(tmp_path / "i16.png", deep))[..., 1].tolist() == [[0, 255], [1, 128]]
    assert reader("normals_png").read(tmp_path / "i16.png", ReadOptions(DEFAULT_MAX_PIXELS)).max() == 255


def test_read_rgb_refuses_corrupt_truncated_and_missing_files(tmp_path: Path, data_error: Callable) -> None:
    good = _png(tmp_path / "good.png", np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    data = good.read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    with data_error(tmp_path / "trunc.png", "corrupt or truncated"):
        read_rgb(tmp_path / "trunc.png")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a png at all")
    with data_error(tmp_path / "junk.png", "cannot decode"):
        read_rgb(tmp_path / "junk.png")
    flipped = bytearray(data)
    flipped[60:80] = bytes(20)  # damage the compressed pixel data
    (tmp_path / "flip.png").write_bytes(bytes(flipped))
    with data_error(tmp_path / "flip.png", "cannot decode"):
        read_rgb(tmp_path / "flip.png")
    with data_error(tmp_path / "none.png", "file not found"):
        read_rgb(tmp_path / "none.png")
    with data_error(tmp_path / "f32.tiff", "unsupported image mode F"):
        read_rgb(_tiff(tmp_path / "f32.tiff", np.zeros((4, 4), np.float32)))


def test_read_xyz_accepts_float_and_integer_clouds(tmp_path: Path) -> None:
    xyz = _cloud()
    xyz[1, 2] = 0.0  # a missing point is fine
    out = read_xyz(_tiff(tmp_path / "f.tiff", xyz))
    assert out.dtype == np.float32 and np.array_equal(out, xyz)
    ints = read_xyz(_tiff(tmp_path / "i.tiff", np.full((4, 4, 3), 400, np.uint16)))
    assert ints.dtype == np.float32 and np.all(ints == 400.0)
    assert read_xyz(_tiff(tmp_path / "d.tiff", xyz.astype(np.float64))).dtype == np.float32


def test_read_xyz_refuses_bad_clouds(tmp_path: Path, data_error: Callable) -> None:
    (tmp_path / "bad.tiff").write_bytes(b"II*\x00" + bytes(40))
    with data_error(tmp_path / "bad.tiff", "cannot read TIFF"):
        read_xyz(tmp_path / "bad.tiff")
    data = _tiff(tmp_path / "ok.tiff", _cloud(30, 30)).read_bytes()
    (tmp_path / "cut.tiff").write_bytes(data[:200])
    with data_error(tmp_path / "cut.tiff", "cannot read TIFF"):
        read_xyz(tmp_path / "cut.tiff")
    with data_error(tmp_path / "flat.tiff", r"HxWx3", r"\(6, 5\)"):
        read_xyz(_tiff(tmp_path / "flat.tiff", np.ones((6, 5), np.float32)))
    with data_error(tmp_path / "four.tiff", r"\(6, 5, 4\)"):
        read_xyz(_tiff(tmp_path / "four.tiff", np.ones((6, 5, 4), np.float32)))
    nan = _cloud()
    nan[0, 0, 0], nan[2, 2, 2], nan[3, 3, 1] = np.nan, np.inf, -np.inf
    with data_error(tmp_path / "nan.tiff", "3 NaN or inf"):
        read_xyz(_tiff(tmp_path / "nan.tiff", nan))
    zero = _cloud()
    zero[..., 2] = 0.0
    zero[..., 0] = 1.0
    with data_error(tmp_path / "zero.tiff", "no valid points"):
        read_xyz(_tiff(tmp_path / "zero.tiff", zero))
    with data_error(tmp_path / "cplx.tiff", "unsupported point cloud dtype"):
        read_xyz(_tiff(tmp_path / "cplx.tiff", np.ones((4, 4, 3), np.complex64)))
    with data_error(tmp_path / "gone.tiff", "file not found"):
        read_xyz(tmp_path / "gone.tiff")


def test_read_mask_formats_and_size(tmp_path: Path, data_error: Callable) -> None:
    m = np.zeros((4, 6), np.uint8)
    m[1, 2] = 255
    expected = m > 0
    assert np.array_equal(read_mask(_png(tmp_path / "l.png", m), (4, 6)), expected)
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[1, 2, 2] = 1
    assert np.array_equal(read_mask(_png(tmp_path / "rgb.png", rgb)), expected)
    assert np.array_equal(read_mask(_png(tmp_path / "16.png", m.astype(np.uint16) * 3)), expected)
    assert np.array_equal(read_mask(_png(tmp_path / "bin.png", m > 0)), expected)
    with data_error(tmp_path / "l.png", "4x6", "8x8"):
        read_mask(tmp_path / "l.png", (8, 8))


def test_read_depth_png_back_projects(tmp_path: Path, data_error: Callable) -> None:
    depth = np.zeros((4, 5), np.uint16)
    depth[2, 3], depth[0, 0] = 400, 500
    cam = Camera(fx=100.0, fy=200.0, cx=2.0, cy=1.0)
    xyz = read_depth_png(_png(tmp_path / "d.png", depth), cam)
    assert xyz.dtype == np.float32 and xyz.shape == (4, 5, 3)
    np.testing.assert_allclose(xyz[2, 3], [0.4 * 1 / 100, 0.4 * 1 / 200, 0.4], rtol=1e-6)
    np.testing.assert_allclose(xyz[0, 0], [-0.5 * 2 / 100, -0.5 / 200, 0.5], rtol=1e-6)
    assert np.count_nonzero(xyz.any(axis=2)) == 2  # missing pixels stay (0, 0, 0)
    with data_error(tmp_path / "8.png", "16-bit", "mode L"):
        read_depth_png(_png(tmp_path / "8.png", depth.astype(np.uint8)), cam)
    with data_error(tmp_path / "0.png", "no valid depth"):
        read_depth_png(_png(tmp_path / "0.png", np.zeros((4, 5), np.uint16)), cam)


def test_camera_from_json(tmp_path: Path, data_error: Callable) -> None:
    path = tmp_path / "camera.json"
    path.write_text(json.dumps({"fx": 500, "fy": 510.5, "cx": 320, "cy": 240}))
    assert Camera.from_json(path) == Camera(500.0, 510.5, 320.0, 240.0, 0.001)
    cases = [
        ({"fx": 1, "fy": 1, "cx": 0}, "missing camera keys", "cy"),
        ({"fx": 1, "fy": 1, "cx": 0, "cy": 0, "f": 3}, "unknown camera keys", "f"),
        ({"fx": -1, "fy": 1, "cx": 0, "cy": 0}, "fx=-1", "> 0"),
        ({"fx": 1, "fy": 1, "cx": "0", "cy": 0}, "cx=", "not a finite number"),
        ({"fx": 1, "fy": 1, "cx": 0, "cy": 0, "depth_scale": 0}, "depth_scale=0", "> 0"),
        ([1, 2], "JSON object", "fx"),
        ({"fx": 1, "fy": 1, "cx": 0, "cy": 0, "depth_unit": "0.1 inch"}, "depth_unit '0.1 inch' is not a length"),
        ({"fx": 1, "fy": 1, "cx": 0, "cy": 0, "depth_unit": 0.1}, "depth_unit 0.1 is not a length", "0.1 mm"),
        ({"fx": 1, "fy": 1, "cx": 0, "cy": 0, "depth_unit": "1 mm", "depth_scale": 0.001}, "give the depth step once"),
    ]
    for unit, metres in (("1 mm", 1e-3), ("0.1 mm", 1e-4), ("1 um", 1e-6), ("2 µm", 2e-6), ("mm", 1e-3)):
        path.write_text(json.dumps({"fx": 1, "fy": 1, "cx": 0, "cy": 0, "depth_unit": unit}))
        assert Camera.from_json(path).depth_scale == pytest.approx(metres), unit
    for raw, *words in cases:
        path.write_text(json.dumps(raw))
        with data_error(path, *words):
            Camera.from_json(path)
    path.write_text("{fx: 1")
    with data_error(path, "not valid JSON"):
        Camera.from_json(path)
    with data_error(tmp_path / "none.json", "camera file not found"):
        Camera.from_json(tmp_path / "none.json")
    with pytest.raises(ValueError, match="fy=0"):
        Camera(1.0, 0.0, 0.0, 0.0)


def test_check_pair_names_both_files(tmp_path: Path, data_error: Callable) -> None:
    rgb_path = _png(tmp_path / "007.png", np.zeros((8, 6, 3), np.uint8))
    xyz_path = _tiff(tmp_path / "007.tiff", _cloud(8, 5))
    rgb, xyz = read_rgb(rgb_path), read_xyz(xyz_path)
    with data_error(rgb_path, "007.tiff", "8x6", "8x5"):
        check_pair(rgb_path, rgb.shape, xyz_path, xyz.shape)
    check_pair(rgb_path, rgb.shape, xyz_path, _cloud(8, 6).shape)


def test_staged_dir_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "cat"
    with staged_dir(target) as tmp:
        (tmp / "a.txt").write_text("one")
    assert [p.name for p in target.iterdir()] == ["a.txt"]
    with pytest.raises(RuntimeError), staged_dir(target) as tmp:
        (tmp / "b.txt").write_text("two")
        raise RuntimeError("interrupted")
    assert [p.name for p in tmp_path.iterdir()] == ["cat"]
    assert [p.name for p in target.iterdir()] == ["a.txt"]
    with staged_dir(target) as tmp:
        (tmp / "c.txt").write_text("three")
    assert [p.name for p in tmp_path.iterdir()] == ["cat"]
    assert [p.name for p in target.iterdir()] == ["c.txt"]
