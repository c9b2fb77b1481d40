"""The numpy filters of trd.data.geometry give bit for bit what the scipy.ndimage filters it used before gave.

The references below are the previous implementations (scipy.ndimage, whole images), kept here only
to pin the results; docs/METHOD.md §2 and tests/data/test_geometry.py pin what they mean.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from trd.data import geometry
from trd.data.geometry import (
    close_mask,
    fill_holes,
    foreground_mask,
    normal_image,
    preprocess_3d,
    resize_bilinear,
    sobel_kernels,
    sobel_xy,
)


def ref_fill_holes(img: np.ndarray, iterations: int = 2) -> np.ndarray:
    def neighbour_sum(a: np.ndarray) -> np.ndarray:
        out = ndimage.correlate1d(a, np.ones(3, a.dtype), axis=0, mode="constant")
        return ndimage.correlate1d(out, np.ones(3, a.dtype), axis=1, mode="constant")

    work = img.astype(np.result_type(img.dtype, np.float32), copy=True)
    for _ in range(iterations):
        positive = work > 0
        sums = neighbour_sum(np.where(positive, work, 0))
        counts = neighbour_sum(positive.astype(work.dtype))
        fill = (work == 0) & (counts > 0)
        work[fill] = sums[fill] / counts[fill]
    return work.astype(img.dtype, copy=False)


def ref_sobel_xy(img: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    smoothing, derivative = sobel_kernels(k)

    def separable(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        out = ndimage.correlate1d(img, rows, axis=0, output=np.float64, mode="mirror")
        return ndimage.correlate1d(out, cols, axis=1, mode="mirror")

    return separable(smoothing, derivative), separable(derivative, smoothing)


def ref_close_mask(mask: np.ndarray, iterations: int) -> np.ndarray:
    if iterations <= 0:
        return mask.copy()
    size = 2 * iterations + 1
    grown = ndimage.maximum_filter(mask.view(np.uint8), size=size, mode="constant", cval=0)
    return ndimage.minimum_filter(grown, size=size, mode="constant", cval=1).astype(bool)


def ref_normal_image(xyz: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    z = xyz[..., 2] * mask
    nonzero = z != 0
    unit = np.zeros(z.shape, np.float32)
    if nonzero.any():
        values = z[nonzero].astype(np.float64)
        span = values.max() - values.min()
        unit[nonzero] = (values - values.min()) / span if span > 0 else 0.0
    gx, gy = ref_sobel_xy(ref_fill_holes(unit), k)
    scale = 1.0 / (np.sqrt(gx * gx + gy * gy + 1.0) + 1e-8)
    weight = np.asarray(mask, dtype=np.float64) * 0.5
    out = np.empty((*gx.shape, 3), np.float32)
    out[..., 0] = (1.0 - gx * scale) * weight
    out[..., 1] = (1.0 - gy * scale) * weight
    out[..., 2] = (1.0 + scale) * weight
    return out


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal dtype, shape and bytes (so +0.0 and -0.0 differ, unlike np.array_equal)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _scene(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A tilted table with a dome on it, sensor noise and 1 % missing points (a scan's statistics)."""
    r, c = np.mgrid[:h, :w].astype(np.float64)
    x, y = (c - w / 2) * 5e-4, (r - h / 2) * 5e-4
    dome = np.clip(1 - ((r - h * 0.45) ** 2 + (c - w * 0.55) ** 2) / (0.3 * min(h, w)) ** 2, 0, None)
    z = 0.5 + 0.2 * x + 0.1 * y - 0.02 * np.sqrt(dome) + rng.normal(0, 2e-4, (h, w))
    xyz = np.stack([x, y, z], -1).astype(np.float32)
    xyz[rng.random((h, w)) < 0.01] = 0
    return xyz


def test_filters_match_scipy_bit_for_bit_on_random_images() -> None:
    rng = np.random.default_rng(0)
    values = np.array([0, 0, 0, 1e-30, 1e-9, 0.3, 1.0, 3.7, -2.0, 123456.7])
    for case in range(150):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        dtype = (np.float32, np.float64)[case % 2]
        img = (rng.choice(values, (h, w)) * rng.random((h, w))).astype(dtype)
        for iterations in (1, 2, 3):
            assert same_bits(fill_holes(img, iterations), ref_fill_holes(img, iterations)), (case, iterations)
        k = int(rng.choice([1, 3, 5, 7, 9, 31]))
        for mine, ref in zip(sobel_xy(img, k), ref_sobel_xy(img, k), strict=True):
            assert same_bits(mine, ref), (case, k)
        mask = rng.random((h, w)) < rng.random()
        for iterations in (0, 1, 3, 5):
            assert same_bits(close_mask(mask, iterations), ref_close_mask(mask, iterations)), (case, iterations)
        if min(h, w) >= 3:
            xyz = np.stack([rng.random((h, w)), rng.random((h, w)), img.astype(np.float32)], -1).astype(np.float32)
            assert same_bits(normal_image(xyz, mask, k), ref_normal_image(xyz, mask, k)), (case, k)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64])
def test_fill_holes_of_integer_and_multichannel_images_match(dtype: type) -> None:
    rng = np.random.default_rng(1)
    img = (rng.random((25, 31, 3)) * 200).astype(dtype)
    img[rng.random(img.shape) < 0.6] = 0
    assert same_bits(fill_holes(img), ref_fill_holes(img))
    assert same_bits(fill_holes(img[..., 0]), ref_fill_holes(img[..., 0]))


def test_preprocessing_of_a_scan_is_unchanged() -> None:
    """A 400 x 400 scan through the whole 3D preprocessing, every plane method and aperture."""
    xyz = _scene(400, 400, np.random.default_rng(2))
    for plane in ("corners", "ransac", "none"):
        mask = foreground_mask(xyz, plane)
        assert 0.05 < mask.mean() < 0.95 or plane == "none"
        for k in (3, 5, 7):
            assert same_bits(normal_image(xyz, mask, k), ref_normal_image(xyz, mask, k)), (plane, k)
    depth = preprocess_3d(xyz, modality="depth", size=128)
    small = xyz[np.arange(128) * 400 // 128][:, np.arange(128) * 400 // 128]
    small_mask = ref_close_mask(foreground_mask(small, closing_iterations=0), 3)
    z = small[..., 2] * small_mask
    expected = np.zeros(z.shape, np.float32)
    values = z[z != 0].astype(np.float64)
    expected[z != 0] = (values - values.min()) / (values.max() - values.min()) * 0.8 + 0.1
    assert same_bits(depth[0], ref_fill_holes(expected))


def test_the_plane_test_by_blocks_of_rows_matches_the_whole_cloud() -> None:
    """`_beyond_plane` (blocks of rows, a float64 block at a time) against the distance of the whole
    cloud at once, at widths that divide the block and widths that leave a short last block."""
    rng = np.random.default_rng(4)
    for h, w in ((400, 400), (37, 801), (1, 5), (129, 128), (3, geometry._PLANE_BLOCK + 7)):
        xyz = _scene(h, w, rng)
        normal, d = geometry.corner_plane(xyz) if min(h, w) >= 12 else (np.array([0.0, 0.6, 0.8]), 0.4)
        distance = np.abs(xyz.astype(np.float64) @ normal - d)
        for threshold in (0.005, float(np.median(distance))):
            assert same_bits(geometry._beyond_plane(xyz, normal, d, threshold), distance > threshold), (h, w)


def test_a_resize_that_skips_the_zero_border_gives_the_same_bytes() -> None:
    """`resize_bilinear` with ``nonzero`` (the object's window) against the whole-image resize."""
    rng = np.random.default_rng(3)
    for _ in range(100):
        h, w = (int(v) for v in rng.integers(2, 60, 2))
        size = tuple(int(v) for v in rng.integers(1, 70, 2))
        arr = np.zeros((h, w, 3), np.float32)
        (r0, r1), (c0, c1) = sorted(rng.integers(0, h + 1, 2)), sorted(rng.integers(0, w + 1, 2))
        arr[r0:r1, c0:c1] = rng.random((r1 - r0, c1 - c0, 3))
        assert same_bits(resize_bilinear(arr, size, (slice(r0, r1), slice(c0, c1))), resize_bilinear(arr, size))


def test_scoring_processes_do_not_import_scipy() -> None:
    """Reading and preprocessing a scan needs numpy only: scipy's import is a start-up cost (issue 24)."""
    import subprocess
    import sys

    code = ("import sys, trd.workflows.predict, trd.runtime.batches, trd.data.geometry; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'scipy', 'torch', 'onnx'}))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
