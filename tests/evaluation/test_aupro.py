"""AU-PRO: hand-computed curves and areas, a direct re-statement of the definition, invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from trd.evaluation.aupro import au_pro, pro_curve_exact, pro_curve_thresholds, trapezoid_area


def _hand_example() -> tuple[np.ndarray, np.ndarray]:
    """4x4 image: regions A = {(0,0), (1,1)} (diagonal: one region with 8-connectivity) scored
    0.9 and 0.5, B = {(3,3)} scored 0.7; 13 OK pixels scored 0.8, 0.6 and 0.00, 0.01, ..., 0.10."""
    gt = np.zeros((1, 4, 4), dtype=bool)
    gt[0, 0, 0] = gt[0, 1, 1] = gt[0, 3, 3] = True
    maps = np.zeros((1, 4, 4), dtype=np.float32)
    maps[~gt] = [0.8, 0.6] + [0.01 * i for i in range(11)]
    maps[0, 0, 0], maps[0, 1, 1], maps[0, 3, 3] = 0.9, 0.5, 0.7
    return maps, gt


def test_hand_computed_exact_curve_and_area() -> None:
    # Descending: 0.9 (A: PRO += 1/(2*2)), 0.8 (OK: FPR += 1/13), 0.7 (B: PRO += 1/(1*2)),
    # 0.6 (OK), 0.5 (A), then the 11 OK pixels one by one.
    fpr, pro = pro_curve_exact(*_hand_example())
    np.testing.assert_allclose(fpr, [0, 0, 1 / 13, 1 / 13, 2 / 13, 2 / 13, *(np.arange(3, 14) / 13), 1])
    np.testing.assert_allclose(pro, [0, 0.25, 0.25, 0.75, 0.75, 1, *([1.0] * 11), 1])
    # @0.3: (0.25 + 0.75 + 1) / 13 + (0.3 - 3/13) * 1 = 0.3 - 1/13; / 0.3 -> 29/39
    # @0.1: 0.25/13 + (0.1 - 1/13) * 0.75 = 0.075 - 0.5/13; / 0.1 -> 19/52
    got = au_pro(*_hand_example(), limits=(0.3, 0.1))
    assert got[0.3] == pytest.approx(29 / 39, abs=1e-12)  # 0.743590
    assert got[0.1] == pytest.approx(19 / 52, abs=1e-12)  # 0.365385


def test_hand_computed_threshold_curve_and_area() -> None:
    # OK scores ascending, N = 13; positions floor(linspace(0, 12, 100)) reach 12 once (t = 0.8:
    # FPR 0, PRO (1/2 + 0)/2), 11 (t = 0.6: FPR 1/13, PRO (1/2 + 1)/2) and every lower one (PRO 1).
    fpr, pro = pro_curve_thresholds(*_hand_example())
    assert fpr.size == 101 and fpr[0] == 0 and fpr[-1] == 1 and np.all(np.diff(fpr) >= 0)
    np.testing.assert_allclose(pro[:3], [0.25, 0.75, 0.75])
    # @0.3, linear pieces: (0.25+0.75)/2/13 + (0.75+1)/2/13 + 1/13 + (0.3 - 3/13) = 0.3 - 0.625/13
    got = au_pro(*_hand_example(), limits=(0.3, 0.1), method="thresholds")
    assert got[0.3] == pytest.approx(131 / 156, abs=1e-12)  # 0.839744
    # @0.1: 0.5/13 + (0.1 - 1/13) * (0.75 + 0.825) / 2, PRO(0.1) = 0.75 + 0.25 * 0.3 = 0.825
    assert got[0.1] == pytest.approx((0.5 / 13 + (0.1 - 1 / 13) * 0.7875) / 0.1, abs=1e-12)  # 0.566346


def test_eight_connectivity_within_images_only() -> None:
    _, gt = _hand_example()
    maps = np.where(np.arange(16).reshape(1, 4, 4) == 0, 1.0, 0.0)  # only (0,0) detected
    fpr, pro = pro_curve_exact(maps, gt)
    assert (fpr[1], pro[1]) == (0.0, 0.25)  # half of A (of 2 regions); 4-connectivity gives 1/3
    # regions at the same place in two images stay separate: image 1's single pixel is 1 of 2
    gts = np.zeros((2, 3, 3), dtype=bool)
    gts[0, 0, :2] = gts[1, 0, 0] = True
    maps = np.zeros((2, 3, 3))
    maps[1, 0, 0] = 1.0
    assert pro_curve_exact(maps, gts)[1][1] == 0.5  # merged across images it would be 1/3


def test_regions_weigh_equally_whatever_their_size() -> None:
    gt = np.zeros((1, 6, 6), dtype=bool)
    gt[0, :2, :5] = True  # 10 pixels
    gt[0, 5, 5] = True  # 1 pixel
    only_big = gt & (np.arange(36).reshape(1, 6, 6) < 12)
    only_small = gt & ~only_big
    for hit in (only_big, only_small):
        # exact: (0, 0.5) then (1, 1); PRO(0.3) = 0.65 -> 0.3 * (0.5 + 0.65) / 2 / 0.3 = 0.575
        assert au_pro(hit.astype(np.float32), gt, (0.3,))[0.3] == pytest.approx(0.575, abs=1e-12)
        assert au_pro(hit.astype(np.float32), gt, (0.3,), "thresholds")[0.3] == pytest.approx(0.5, abs=1e-12)


def _random_case(seed: int, n: int = 6, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Blob defects on half of the images, smooth noisy maps that are higher inside defects."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    gts = np.zeros((n, size, size), dtype=bool)
    for i in range(n // 2):
        for _ in range(rng.integers(1, 4)):
            cy, cx, r = rng.integers(5, size - 5), rng.integers(5, size - 5), rng.integers(2, 8)
            gts[i] |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    noise = ndimage.gaussian_filter(rng.normal(size=gts.shape), (0, 2, 2)) * 5
    return (noise + 1.2 * gts).astype(np.float32), gts


def test_perfect_inverted_and_constant_detectors() -> None:
    _, gts = _random_case(0)
    perfect = gts.astype(np.float32) + 0.01 * np.random.default_rng(1).random(gts.shape, dtype=np.float32)
    for method in ("exact", "thresholds"):
        assert all(v == pytest.approx(1.0) for v in au_pro(perfect, gts, method=method).values())
        assert au_pro(1.0 - perfect, gts, (0.3,), method)[0.3] == 0.0
    const = np.full(gts.shape, 0.5, dtype=np.float32)
    # exact: one run of ties -> (0,0), (1,1): the diagonal, area 0.3^2/2 -> 0.15
    assert au_pro(const, gts, (0.3,))[0.3] == pytest.approx(0.15)
    # HEAD: PRO counts scores strictly above t, none here, until the added (1, 1) point
    assert au_pro(const, gts, (0.3,), "thresholds")[0.3] == 0.0


def _reference_exact(maps: np.ndarray, gts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The definition of method.md §6 (v1) stated directly: per-pixel increments, argsort, cumsum."""
    fp_step = (~gts).astype(np.float64) / np.count_nonzero(~gts)
    pro_step = np.zeros(gts.shape)
    n_regions = 0
    for i in range(gts.shape[0]):
        labels, k = ndimage.label(gts[i], structure=np.ones((3, 3)))
        for r in range(1, k + 1):
            pro_step[i][labels == r] = 1.0 / np.count_nonzero(labels == r)
        n_regions += k
    order = np.argsort(-maps.ravel().astype(np.float64), kind="stable")
    s = maps.ravel()[order]
    keep = np.append(s[1:] != s[:-1], True)
    fpr = np.minimum(np.cumsum(fp_step.ravel()[order])[keep], 1)
    pro = np.minimum(np.cumsum(pro_step.ravel()[order])[keep] / n_regions, 1)
    return np.concatenate(([0], fpr, [1])), np.concatenate(([0], pro, [1]))


def _reference_thresholds(maps: np.ndarray, gts: np.ndarray, num: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """The HEAD definition of method.md §6 stated directly: a loop over thresholds and regions."""
    ok = np.sort(maps[~gts])
    regions = [maps[i][lab == r] for i in range(gts.shape[0])
               for lab, k in [ndimage.label(gts[i], structure=np.ones((3, 3)))] for r in range(1, k + 1)]
    fprs, pros = [1.0], [1.0]
    for p in np.floor(np.linspace(0, ok.size - 1, num)).astype(int):
        fprs.append(1 - (p + 1) / ok.size)
        pros.append(np.mean([np.mean(reg > ok[p]) for reg in regions]))
    return np.array(fprs[::-1]), np.array(pros[::-1])


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**16), st.integers(2, 40))
def test_curves_equal_direct_definitions(seed: int, levels: int) -> None:
    maps, gts = _random_case(seed, n=3, size=12)
    maps = np.round(maps * levels / 4).astype(np.float32)  # coarse scores: many ties
    for got, expected in ((pro_curve_exact(maps, gts), _reference_exact(maps, gts)),
                          (pro_curve_thresholds(maps, gts), _reference_thresholds(maps, gts))):
        np.testing.assert_allclose(got[0], expected[0], atol=1e-12)
        np.testing.assert_allclose(got[1], expected[1], atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**16), st.sampled_from(["affine", "cube", "exp"]), st.permutations(range(4)))
def test_invariances_and_range(seed: int, transform: str, perm: list[int]) -> None:
    maps, gts = _random_case(seed, n=4, size=16)
    maps = np.round(maps * 4)  # integer scores, so every transform below stays exact in float32
    base = au_pro(maps, gts)
    assert all(0.0 <= v <= 1.0 for v in base.values())
    mapped = {"affine": 3 * maps + 7, "cube": maps**3, "exp": np.exp(maps / 4)}[transform]
    for lim, value in au_pro(mapped, gts).items():  # strictly increasing transform: same ranking
        assert value == pytest.approx(base[lim], abs=1e-12)
    for method in ("exact", "thresholds"):
        original = au_pro(maps, gts, method=method)
        for lim, value in au_pro(maps[perm], gts[perm], method=method).items():
            assert value == pytest.approx(original[lim], abs=1e-12)
            assert 0.0 <= value <= 1.0


def test_exact_and_hundred_thresholds_agree_roughly_at_30_percent() -> None:
    maps, gts = _random_case(7, n=10, size=64)
    exact = au_pro(maps, gts, (0.3,))[0.3]
    head = au_pro(maps, gts, (0.3,), "thresholds")[0.3]
    assert 0.3 < exact < 0.99 and abs(exact - head) < 0.03 * exact


def test_undefined_cases_and_validation() -> None:
    maps = np.random.default_rng(0).random((2, 8, 8))
    none = np.zeros((2, 8, 8), dtype=bool)
    assert all(math.isnan(v) for v in au_pro(maps, none).values())
    assert all(math.isnan(v) for v in au_pro(maps, ~none, method="thresholds").values())
    with pytest.raises(ValueError, match="region"):
        pro_curve_exact(maps, none)
    with pytest.raises(ValueError, match="method"):
        au_pro(maps, ~none, method="fast")
    with pytest.raises(ValueError, match="limits"):
        au_pro(maps, ~none, limits=(0.0,))
    with pytest.raises(ValueError, match="NaN"):
        au_pro(np.full((1, 2, 2), np.nan), np.ones((1, 2, 2), dtype=bool))


def test_trapezoid_area() -> None:
    x, y = np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.5, 1.0])
    assert trapezoid_area(x, y, 0.3) == pytest.approx(0.045)  # partial piece to an interpolated 0.3
    assert trapezoid_area(x, y, 0.5) == pytest.approx(0.125)  # x_max is a sample: no extra piece
    assert trapezoid_area([0.0, np.nan, 1.0], [0.0, 5.0, 1.0], 1.0) == pytest.approx(0.5)  # NaN dropped
    assert trapezoid_area([0.0, 0.2], [1.0, 1.0], 0.3) == pytest.approx(0.2)  # no extrapolation
    assert trapezoid_area([0.0, 0.0, 0.1], [0.0, 1.0, 1.0], 0.05) == pytest.approx(0.05)  # vertical step
    with pytest.raises(ValueError, match="sorted"):
        trapezoid_area([0.5, 0.0], [0.0, 1.0], 0.3)
