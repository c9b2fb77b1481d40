"""3D preprocessing (method.md §2.3-§2.6) checked on analytic surfaces and hand-made arrays."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage

from trd.data.geometry import (
    PlaneFallback,
    close_mask,
    corner_plane,
    depth_image,
    fill_holes,
    foreground_mask,
    normal_image,
    preprocess_3d,
    ransac_plane,
    resize_bilinear,
    resize_nearest,
    sobel_kernels,
    sobel_xy,
)

PITCH = 0.0005  # metres per pixel of the synthetic clouds


def grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixel rows/cols and metric x/y centred on the image."""
    r, c = np.mgrid[:h, :w].astype(np.float64)
    return r, c, (c - w / 2) * PITCH, (r - h / 2) * PITCH


def background(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A tilted table plane, 0.5 m away."""
    return 0.5 + 0.2 * x + 0.1 * y


def box_scene(h: int = 120, w: int = 160, rows=slice(40, 80), cols=slice(50, 110)) -> tuple[np.ndarray, np.ndarray]:
    """Cloud of a box (top 20 mm closer than the table, itself tilted) on a tilted table; and its mask."""
    _, _, x, y = grid(h, w)
    obj = np.zeros((h, w), bool)
    obj[rows, cols] = True
    z = np.where(obj, background(x, y) - 0.02 + 0.05 * x - 0.08 * y, background(x, y))
    return np.stack([x, y, z], -1).astype(np.float32), obj


# --- Sobel -----------------------------------------------------------------------------------


def test_sobel_kernels_are_opencvs() -> None:
    np.testing.assert_array_equal(sobel_kernels(3)[0], [1, 2, 1])
    np.testing.assert_array_equal(sobel_kernels(3)[1], [-1, 0, 1])
    np.testing.assert_array_equal(sobel_kernels(5)[0], [1, 4, 6, 4, 1])
    np.testing.assert_array_equal(sobel_kernels(5)[1], [-1, -2, 0, 2, 1])
    np.testing.assert_array_equal(sobel_kernels(7)[0], [1, 6, 15, 20, 15, 6, 1])
    np.testing.assert_array_equal(sobel_kernels(7)[1], [-1, -4, -5, 0, 5, 4, 1])
    for bad in (0, 2, 4, 33, -3, 3.0, True):
        with pytest.raises(ValueError, match="odd integer"):
            sobel_kernels(bad)


@pytest.mark.parametrize(("k", "gain"), [(1, 2), (3, 8), (5, 128), (7, 2048)])
def test_sobel_unit_ramp_gain_and_sign(k: int, gain: int) -> None:
    r, c = np.mgrid[:30, :40].astype(np.float32)
    inner = (slice(k, -k), slice(k, -k))
    gx, gy = sobel_xy(c, k)  # rises along columns: gx = d/dx
    assert gx.dtype == np.float64
    np.testing.assert_array_equal(gx[inner], gain)
    np.testing.assert_array_equal(gy, 0)
    np.testing.assert_array_equal(gx[:, 0], 0)  # reflect-101 mirrors around the edge pixel
    gx, gy = sobel_xy(r, k)  # rises along rows: gy = d/dy
    np.testing.assert_array_equal(gy[inner], gain)
    np.testing.assert_array_equal(gx, 0)


def test_sobel_5_equals_direct_2d_correlation_with_reflect101_borders() -> None:
    kx = np.array(
        [[-1, -2, 0, 2, 1], [-4, -8, 0, 8, 4], [-6, -12, 0, 12, 6], [-4, -8, 0, 8, 4], [-1, -2, 0, 2, 1]],
        dtype=np.float64,
    )  # OpenCV getDerivKernels(1, 0, 5) as a 2-D kernel
    img = np.random.default_rng(0).random((9, 11)).astype(np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(img.astype(np.float64), 2, mode="reflect"), (5, 5))
    gx, gy = sobel_xy(img, 5)
    np.testing.assert_allclose(gx, np.einsum("ijkl,kl->ij", windows, kx), atol=1e-12)
    np.testing.assert_allclose(gy, np.einsum("ijkl,kl->ij", windows, kx.T), atol=1e-12)


# --- hole filling ----------------------------------------------------------------------------


def test_fill_holes_exact_values() -> None:
    img = np.array([[0, 0, 0], [0, 4, 0], [0, 0, 2]], dtype=np.float64)
    np.testing.assert_array_equal(fill_holes(img, 1), [[4, 4, 4], [4, 4, 3], [4, 3, 2]])
    # passes read the previous pass only; negative values are neither averaged nor changed
    row = np.array([[2, 0, 4, 0, 0, 0, -1, 0, 3]], dtype=np.float32)
    once = fill_holes(row, 1)
    np.testing.assert_array_equal(once, [[2, 3, 4, 4, 0, 0, -1, 3, 3]])
    np.testing.assert_array_equal(fill_holes(row), [[2, 3, 4, 4, 4, 0, -1, 3, 3]])
    assert fill_holes(row).dtype == np.float32
    rgb = np.zeros((3, 3, 2), np.float32)
    rgb[1, 1] = (1, 5)
    rgb[0, 0, 1] = 3
    out = fill_holes(rgb, 1)
    np.testing.assert_array_equal(out[..., 0], 1)  # per channel
    np.testing.assert_array_equal(out[..., 1], [[3, 4, 5], [4, 5, 5], [5, 5, 5]])


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 12), st.integers(1, 12)),
        elements=st.sampled_from([0.0, 0.0, 0.25, 1.0, 3.5, -2.0]),
    )
)
def test_fill_holes_never_changes_nonzero_pixels(img: np.ndarray) -> None:
    out = fill_holes(img)
    nonzero = img != 0
    np.testing.assert_array_equal(out[nonzero], img[nonzero])
    positive = img[img > 0]
    filled = out[~nonzero & (out != 0)]
    if positive.size:
        assert np.all((filled >= positive.min() - 1e-6) & (filled <= positive.max() + 1e-6))
        # after one pass, a zero with a positive 8-neighbour is filled
        has_neighbour = ndimage.maximum_filter((img > 0).view(np.uint8), 3, mode="constant") > 0
        assert np.all(fill_holes(img, 1)[~nonzero & has_neighbour] > 0)
    else:
        assert filled.size == 0


# --- closing ---------------------------------------------------------------------------------


def opencv_close_reference(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Iterated 3x3 dilation then erosion; outside pixels count as 0 when dilating, 1 when eroding."""
    out = mask.copy()
    for pad_value, reduce in ((False, np.any), (True, np.all)):
        for _ in range(iterations):
            padded = np.pad(out, 1, constant_values=pad_value)
            out = reduce(np.lib.stride_tricks.sliding_window_view(padded, (3, 3)), axis=(2, 3))
    return out


def test_closing_keeps_the_border_like_opencv() -> None:
    ones = np.ones((10, 12), bool)
    assert close_mask(ones, 3).all()
    assert not ndimage.binary_closing(ones, np.ones((3, 3)), iterations=3).all()  # what we avoid
    edge = np.zeros((12, 12), bool)
    edge[:, :2] = True
    edge[5, :2] = False  # a notch at the border is closed; nothing else changes
    closed = close_mask(edge, 3)
    expected = np.zeros_like(edge)
    expected[:, :2] = True
    np.testing.assert_array_equal(closed, expected)
    np.testing.assert_array_equal(close_mask(edge, 0), edge)


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_closing_matches_iterated_opencv_semantics(iterations: int) -> None:
    rng = np.random.default_rng(iterations)
    for _ in range(5):
        mask = rng.random((23, 17)) < rng.uniform(0.2, 0.8)
        np.testing.assert_array_equal(close_mask(mask, iterations), opencv_close_reference(mask, iterations))


# --- plane masks -----------------------------------------------------------------------------


def test_corner_plane_is_the_table() -> None:
    xyz, _ = box_scene()
    normal, d = corner_plane(xyz)
    analytic = np.array([0.2, 0.1, -1.0]) / np.linalg.norm([0.2, 0.1, -1.0])
    assert abs(abs(normal @ analytic) - 1) < 1e-6
    table = xyz[:5, :5].reshape(-1, 3).astype(np.float64)
    assert np.abs(table @ normal - d).max() < 1e-6


def test_corner_mean_divides_by_valid_count_with_zeros_summed_in() -> None:
    xyz, _ = box_scene()
    xyz[0, :2, 2] = 0  # two top-left pixels lose z but keep x, y (the reference still sums them)
    p = [
        xyz[:3, :3].reshape(-1, 3).sum(0) / 7,
        xyz[:3, -3:].reshape(-1, 3).mean(0),
        xyz[-3:, :3].reshape(-1, 3).mean(0),
    ]
    n = np.cross(p[2] - p[0], p[1] - p[0])
    normal, d = corner_plane(xyz)
    np.testing.assert_allclose(normal, n / np.linalg.norm(n), atol=1e-6)
    assert d == pytest.approx(float(n @ p[2]) / np.linalg.norm(n), abs=1e-6)


@pytest.mark.parametrize("method", ["corners", "ransac"])
def test_object_above_tilted_plane_is_found(method: str) -> None:
    xyz, obj = box_scene()
    xyz[70, 60] = 0  # a missing point inside the object is closed over
    np.testing.assert_array_equal(foreground_mask(xyz, method), obj)


def test_ransac_handles_an_occluded_corner_where_corners_fails() -> None:
    xyz, obj = box_scene(rows=slice(0, 60), cols=slice(0, 70))  # the object covers the top-left corner
    wrong = foreground_mask(xyz, "corners")
    assert (wrong != obj).mean() > 0.2
    np.testing.assert_array_equal(foreground_mask(xyz, "ransac"), obj)
    noisy = xyz.copy()
    noisy[..., 2] += np.random.default_rng(1).normal(0, 0.0005, obj.shape).astype(np.float32)
    assert (foreground_mask(noisy, "ransac") != obj).mean() < 0.01


def test_missing_corner_widens_its_patch_then_falls_back_to_ransac() -> None:
    # A few missing points in one corner patch must not make a sample unusable (issue: it aborted
    # whole runs): the patch grows until it holds valid points, with a warning.
    xyz, obj = box_scene()
    xyz[-3:, :3] = 0
    with pytest.warns(PlaneFallback, match=r"widened \(bottom-left 5x5\)"):
        np.testing.assert_array_equal(foreground_mask(xyz, "corners"), obj)
    np.testing.assert_array_equal(foreground_mask(xyz, "ransac"), obj)
    # A corner empty beyond a quarter of the image: the plane comes from RANSAC, also with a warning.
    xyz[-40:, :40] = 0
    with pytest.warns(PlaneFallback, match="bottom-left corner has no valid 3D points.*RANSAC"):
        found = foreground_mask(xyz, "corners")
    expected = obj & (xyz[..., 2] != 0)
    assert (found != close_mask(expected, 3)).mean() < 0.01


def test_collinear_corners_fall_back_to_ransac() -> None:
    xyz, obj = box_scene()
    xyz[:3, -3:] = xyz[:3, :3]  # top-right = top-left: no plane through the three points
    with pytest.warns(PlaneFallback, match="collinear"):
        np.testing.assert_array_equal(foreground_mask(xyz, "corners"), obj)


def test_ransac_is_deterministic_for_a_seed() -> None:
    xyz, _ = box_scene()
    xyz[..., 2] += np.random.default_rng(2).normal(0, 0.001, xyz.shape[:2]).astype(np.float32)
    a, b = ransac_plane(xyz, 0.005, seed=3), ransac_plane(xyz, 0.005, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1] and a[0][2] >= 0


def test_plane_none_and_unknown() -> None:
    xyz, _ = box_scene()
    xyz[10:12, 20:22] = 0
    np.testing.assert_array_equal(foreground_mask(xyz, "none", closing_iterations=0), xyz[..., 2] != 0)
    assert foreground_mask(xyz, "none").all()
    with pytest.raises(ValueError, match="unknown plane method"):
        foreground_mask(xyz, "table")


# --- depth and normal images -----------------------------------------------------------------


def test_depth_image_range() -> None:
    xyz, obj = box_scene()
    depth = depth_image(xyz, obj)
    assert depth.dtype == np.float32 and depth.shape == obj.shape
    assert depth[obj].min() == pytest.approx(0.1) and depth[obj].max() == pytest.approx(0.9)
    assert np.all((depth[obj] >= 0.1) & (depth[obj] <= 0.9))
    grown = ndimage.binary_dilation(obj, np.ones((3, 3)), iterations=2)
    assert np.all(depth[~grown] == 0) and np.all(depth[grown] > 0)  # holes filled 2 px outward


@pytest.mark.parametrize(("k", "gain"), [(3, 8), (5, 128), (7, 2048)])
def test_tilted_plane_gives_its_analytic_normal(k: int, gain: int) -> None:
    xyz, obj = box_scene()
    z = xyz[..., 2].astype(np.float64)
    span = z[obj].max() - z[obj].min()
    # z on the box = c + (0.25 x + 0.02 y) (table tilt + box tilt): slopes per pixel of normalised z
    slope_c, slope_r = 0.25 * PITCH / span, 0.02 * PITCH / span
    expected = np.array([-gain * slope_c, -gain * slope_r, 1.0])
    expected /= np.linalg.norm(expected)
    normals = normal_image(xyz, obj, k)
    inner = normals[40 + k : 80 - k, 50 + k : 110 - k].reshape(-1, 3) * 2 - 1
    np.testing.assert_allclose(inner, np.broadcast_to(expected, inner.shape), atol=2e-5)
    np.testing.assert_array_equal(normals[~obj], 0)


def test_sphere_cap_normals_point_radially() -> None:
    h = w = 200
    pitch, radius, cap = 0.001, 0.15, 0.08
    r, c = np.mgrid[:h, :w].astype(np.float64)
    x, y = (c - 100) * pitch, (r - 100) * pitch
    rho2 = x * x + y * y
    mask = rho2 < cap**2
    z = np.where(mask, 0.6 - np.sqrt(np.clip(radius**2 - rho2, 0, None)), 0.7)
    xyz = np.stack([x, y, z], -1).astype(np.float32)
    span = z[mask].max() - z[mask].min()
    root = np.sqrt(radius**2 - np.minimum(rho2, cap**2))
    inner = rho2 < (cap - 8 * pitch) ** 2
    off_centre = inner & (rho2 > (10 * pitch) ** 2)
    for k, gain, max_deg in ((3, 8, 0.1), (5, 128, 0.5), (7, 2048, 2.0)):
        n = normal_image(xyz, mask, k).astype(np.float64) * 2 - 1
        expected = np.stack([-gain * x / root * pitch / span, -gain * y / root * pitch / span, np.ones_like(x)], -1)
        expected /= np.linalg.norm(expected, axis=-1, keepdims=True)
        angle = np.degrees(np.arccos(np.clip((n * expected).sum(-1), -1, 1)))[inner]
        assert angle.max() < max_deg and angle.mean() < 0.02
        # the in-plane part points at the cap's centre (the normal faces away from the camera)
        heading = np.angle((n[..., 0] + 1j * n[..., 1])[off_centre] / (-x - 1j * y)[off_centre])
        assert np.degrees(np.abs(heading)).max() < 0.05


@settings(max_examples=25, deadline=None)
@given(
    hnp.arrays(np.float32, (10, 12), elements=st.floats(0.25, 0.75, width=32)),
    hnp.arrays(np.bool_, (10, 12)),
    st.sampled_from([1, 3, 5, 7]),
)
def test_normal_image_is_unit_length_on_the_mask(z: np.ndarray, mask: np.ndarray, k: int) -> None:
    _, _, x, y = grid(10, 12)
    out = normal_image(np.stack([x, y, z], -1).astype(np.float32), mask, k)
    assert out.dtype == np.float32 and out.shape == (10, 12, 3)
    assert np.all((out >= 0) & (out <= 1))
    np.testing.assert_array_equal(out[~mask], 0)
    lengths = np.linalg.norm(out[mask].astype(np.float64) * 2 - 1, axis=-1)
    np.testing.assert_allclose(lengths, 1, atol=1e-5)


# --- resizing --------------------------------------------------------------------------------


@pytest.mark.parametrize(("src", "dst"), [((800, 800), (256, 256)), ((37, 53), (64, 20))])
def test_resizes_match_torch(src: tuple[int, int], dst: tuple[int, int]) -> None:
    arr = np.random.default_rng(0).random((*src, 3)).astype(np.float32)
    chw = torch.from_numpy(arr.transpose(2, 0, 1))[None]
    near = F.interpolate(chw, size=dst, mode="nearest")[0].numpy().transpose(1, 2, 0)
    np.testing.assert_array_equal(resize_nearest(arr, dst), near)
    lin = F.interpolate(chw, size=dst, mode="bilinear", align_corners=False, antialias=False)[0]
    out = resize_bilinear(arr, dst)
    assert out.dtype == np.float32
    # torch derives source coordinates in float32 arithmetic, OpenCV in float64 rounded to float32
    np.testing.assert_allclose(out, lin.numpy().transpose(1, 2, 0), atol=1e-5)
    np.testing.assert_allclose(resize_bilinear(arr[..., 0], dst), out[..., 0], atol=1e-7)


def test_nearest_index_is_floor_of_dst_times_ratio() -> None:
    rows = resize_nearest(np.arange(800)[:, None], (256, 1))[:, 0]
    np.testing.assert_array_equal(rows[:5], [0, 3, 6, 9, 12])
    np.testing.assert_array_equal(rows, np.floor(np.arange(256) * 3.125).astype(int))


# --- the whole pipeline ----------------------------------------------------------------------


def test_preprocess_composes_the_steps_in_the_specified_order() -> None:
    xyz, _ = box_scene()
    depth = preprocess_3d(xyz, modality="depth", size=64)
    small = resize_nearest(xyz, 64)
    expected = depth_image(small, foreground_mask(small))
    assert depth.shape == (3, 64, 64) and depth.dtype == np.float32 and depth.flags.c_contiguous
    for channel in depth:
        np.testing.assert_array_equal(channel, expected)
    normals = preprocess_3d(xyz, modality="normals", size=64, sobel_k=3)
    full = normal_image(xyz, foreground_mask(xyz), 3)
    assert normals.shape == (3, 64, 64) and normals.dtype == np.float32 and normals.flags.c_contiguous
    np.testing.assert_array_equal(normals, resize_bilinear(full, 64).transpose(2, 0, 1))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"modality": "rgb"}, "unknown 3D modality"), ({"plane": "floor"}, "unknown plane"), ({"sobel_k": 4}, "odd")],
)
def test_preprocess_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        preprocess_3d(box_scene()[0], **kwargs)
    with pytest.raises(ValueError, match="HxWx3"):
        preprocess_3d(np.zeros((4, 4)))


def test_preprocess_800x800_is_fast() -> None:
    h = w = 800
    r, c, x, y = grid(h, w)
    obj = (r - 400) ** 2 + (c - 400) ** 2 < 250**2
    z = np.where(
        obj,
        background(x, y) - 0.02 - 0.01 * np.sqrt(np.clip(1 - ((r - 400) ** 2 + (c - 400) ** 2) / 250**2, 0, 1)),
        background(x, y),
    )
    xyz = np.stack([x, y, z], -1).astype(np.float32)
    xyz[np.random.default_rng(0).random((h, w)) < 0.01] = 0
    for modality in ("normals", "depth"):
        start = time.perf_counter()
        out = preprocess_3d(xyz, modality=modality)
        elapsed = time.perf_counter() - start
        assert out.shape == (3, 256, 256) and out.min() >= 0 and out.max() <= 1
        assert elapsed < 2.0, f"{modality}: {elapsed:.2f} s"
