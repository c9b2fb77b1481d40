"""Property-based tests of 3D preprocessing and metrics, beyond those in tests/data/test_geometry.py and
tests/evaluation/ (which already cover: fill_holes on 2-D float32 images, normal length, AU-PRO
equal to its direct definition, AU-PRO under affine/cube/exp transforms and image permutations)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from trd.data.geometry import corner_plane, fill_holes, foreground_mask, preprocess_3d
from trd.evaluation import au_pro, binary_metrics

FAST = settings(max_examples=30, deadline=None)


# --- 3D preprocessing ----------------------------------------------------------------------------


@FAST
@given(
    hnp.arrays(
        st.sampled_from([np.float64, np.int32, np.uint8]),
        st.tuples(st.integers(1, 10), st.integers(1, 10), st.integers(1, 4)),
        elements=st.integers(0, 5) | st.just(0),
    ),
    st.integers(0, 4),
)
def test_fill_holes_multichannel_any_dtype(img: np.ndarray, iterations: int) -> None:
    """HxWxC, integer and float64 inputs: non-zero pixels kept, dtype kept, holes only ever shrink."""
    out = fill_holes(img, iterations)
    assert out.dtype == img.dtype and out.shape == img.shape
    nonzero = img != 0
    np.testing.assert_array_equal(out[nonzero], img[nonzero])
    once_more = fill_holes(img, iterations + 1)
    assert np.all((out != 0) <= (once_more != 0))  # a filled pixel stays filled with more passes
    for c in range(img.shape[2]):  # channels are independent
        np.testing.assert_array_equal(out[..., c], fill_holes(img[..., c], iterations))


@st.composite
def clouds(draw: st.DrawFn, corners_valid: bool = True) -> np.ndarray:
    """An organised cloud: a tilted plane (random scale and offset) with a random object and holes."""
    h, w = draw(st.integers(6, 40)), draw(st.integers(6, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1e-3, 0.1, 1.0, 50.0]))
    z0 = draw(st.floats(1.0, 5.0)) * scale
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    tilt = draw(st.floats(-0.005, 0.005)) * scale
    z = z0 + tilt * rows + draw(st.floats(-0.005, 0.005)) * scale * cols  # z > 0.4 * scale everywhere
    bump = (rows - h / 2) ** 2 + (cols - w / 2) ** 2 < (min(h, w) / 4) ** 2
    z = z - bump * draw(st.floats(0.0, 0.2)) * scale + rng.normal(0, 1e-4 * scale, (h, w))
    xyz = np.stack([(cols - w / 2) * 0.01 * scale, (rows - h / 2) * 0.01 * scale, z], axis=2)
    holes = rng.random((h, w)) < draw(st.floats(0.0, 0.4))
    if corners_valid:  # each corner patch keeps one valid point (the plane fit needs one; holes beside it)
        for r, c in ((0, 0), (0, w - 3), (h - 3, 0)):
            holes[r + draw(st.integers(0, 2)), c + draw(st.integers(0, 2))] = False
    xyz[holes] = 0.0
    return xyz.astype(np.float32)


@FAST
@given(clouds(), st.sampled_from(["normals", "depth"]), st.sampled_from(["corners", "ransac", "none"]),
       st.integers(4, 48), st.sampled_from([1, 3, 5, 7]))
def test_preprocess_3d_output_is_finite_in_unit_range(xyz: np.ndarray, modality: str, plane: str, size: int,
                                                      sobel_k: int) -> None:
    threshold = float(np.ptp(xyz[..., 2][xyz[..., 2] > 0])) / 4 + 1e-6  # a threshold that fits the scale
    try:
        out = preprocess_3d(xyz, modality=modality, size=size, sobel_k=sobel_k, plane=plane,
                            plane_threshold=threshold)
    except ValueError as exc:  # "depth" resizes first: a small image's corner patch may hit only holes
        assert modality == "depth" and plane == "corners" and "corner has no valid 3D points" in str(exc)
        assume(False)
    assert out.shape == (3, size, size) and out.dtype == np.float32
    assert np.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 1.0


@FAST
@given(clouds(), st.floats(-0.3, 3.0), st.sampled_from([0, 1, 3]))
def test_corner_foreground_mask_ignores_a_z_translation(xyz: np.ndarray, shift: float, closing: int) -> None:
    """Moving the whole scene along z (missing points stay missing) moves the corner plane with it."""
    valid = xyz[..., 2] != 0
    z_valid = xyz[..., 2][valid].astype(np.float64)
    shift *= float(z_valid.max())
    assume(z_valid.min() + shift > 0.05 * z_valid.max())  # every valid point stays valid (z > 0)
    threshold = float(np.ptp(z_valid)) / 5 + 1e-6
    # no pixel within float32 rounding (of z + shift) of the threshold
    normal, d = corner_plane(xyz)
    dist = np.abs(xyz.astype(np.float64) @ normal - d)
    assume(not np.any(valid & (np.abs(dist - threshold) < 1e-4 * (z_valid.max() + abs(shift)))))
    moved = xyz.copy()
    moved[..., 2][valid] = (z_valid + shift).astype(np.float32)
    np.testing.assert_array_equal(foreground_mask(moved, "corners", threshold, closing),
                                  foreground_mask(xyz, "corners", threshold, closing))


# --- metrics -------------------------------------------------------------------------------------


@st.composite
def scored_labels(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(0, 60))
    levels = draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    labels = rng.random(n) < draw(st.floats(0.0, 1.0))
    scores = rng.integers(0, levels, n) + labels * draw(st.floats(0.0, 3.0))  # ties and overlap
    return scores.astype(np.float64), labels


def _strictly_increasing_map(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Replace the k-th smallest distinct score by the k-th of a random strictly increasing sequence."""
    distinct, rank = np.unique(scores, return_inverse=True)
    values = np.cumsum(rng.uniform(1e-3, 10.0, distinct.size)) - rng.uniform(-100, 100)
    return values[rank]


def _same(a: dict, b: dict) -> bool:
    return all((math.isnan(a[k]) and math.isnan(b[k])) or a[k] == pytest.approx(b[k], abs=1e-12) for k in a)


@settings(max_examples=60, deadline=None)
@given(scored_labels(), st.integers(0, 2**32 - 1))
def test_image_metrics_range_monotone_and_permutation_invariance(case: tuple[np.ndarray, np.ndarray], seed: int) -> None:
    scores, labels = case
    rng = np.random.default_rng(seed)
    base = binary_metrics(scores, labels)
    defined = labels.any() and (~labels).any()
    for value in base.values():
        assert math.isnan(value) if not defined else 0.0 <= value <= 1.0
    assert _same(binary_metrics(_strictly_increasing_map(scores, rng), labels), base)
    perm = rng.permutation(scores.size)
    assert _same(binary_metrics(scores[perm], labels[perm]), base)
    if defined:  # reversing the ranking mirrors the ROC curve
        assert binary_metrics(-scores, labels)["auroc"] == pytest.approx(1.0 - base["auroc"], abs=1e-12)


@st.composite
def maps_and_masks(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n, h, w = draw(st.integers(1, 4)), draw(st.integers(2, 12)), draw(st.integers(2, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    gts = rng.random((n, h, w)) < draw(st.floats(0.0, 0.6))
    maps = rng.integers(0, draw(st.integers(1, 20)), (n, h, w)).astype(np.float32)
    return maps, gts


@FAST
@given(maps_and_masks(), st.sampled_from(["exact", "thresholds"]))
def test_au_pro_in_unit_range_or_nan(case: tuple[np.ndarray, np.ndarray], method: str) -> None:
    maps, gts = case
    values = au_pro(maps, gts, method=method)
    defined = gts.any() and (~gts).any()
    for value in values.values():
        assert math.isnan(value) if not defined else 0.0 <= value <= 1.0 + 1e-12


@FAST
@given(maps_and_masks(), st.sampled_from(["exact", "thresholds"]), st.integers(0, 2**32 - 1))
def test_au_pro_of_a_perfect_map_is_one(case: tuple[np.ndarray, np.ndarray], method: str, seed: int) -> None:
    """Any map that ranks every defect pixel above every OK pixel, whatever its values, scores 1."""
    noise, gts = case
    assume(gts.any() and (~gts).any())
    gap = np.random.default_rng(seed).uniform(0.5, 100.0)
    perfect = noise + (noise.max() + gap) * gts  # defect pixels all above the largest OK pixel
    for value in au_pro(perfect, gts, method=method).values():
        assert value == pytest.approx(1.0, abs=1e-9)


@FAST
@given(maps_and_masks(), st.integers(0, 7))
def test_au_pro_and_pixel_metrics_ignore_rotations_and_flips(case: tuple[np.ndarray, np.ndarray], k: int) -> None:
    """Regions are 8-connected, so turning or mirroring every image keeps every region and every score."""
    maps, gts = case

    def turn(a: np.ndarray) -> np.ndarray:
        a = np.rot90(a, k % 4, axes=(1, 2))
        return np.ascontiguousarray(a[:, :, ::-1] if k >= 4 else a)

    for method in ("exact", "thresholds"):
        base, turned = au_pro(maps, gts, method=method), au_pro(turn(maps), turn(gts), method=method)
        assert _same(turned, base)
    assert _same(binary_metrics(turn(maps), turn(gts)), binary_metrics(maps, gts))
