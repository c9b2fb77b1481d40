"""Defect regions (trd.scoring.regions): hand-made clouds with known areas and depths, and the
synthetic generator's own defects, whose true size and depth it reports (issue 20, acceptance a)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from trd.config import DataConfig
from trd.data.inputs import read_cloud
from trd.data.samples import list_samples
from trd.data.synth import DEFECTS_FILE, generate, render_with_truth
from trd.scoring.decision import Rules, decide
from trd.scoring.regions import MAX_REGIONS, find_regions, full_resolution, object_pixels
from trd.scoring.threshold import Thresholds


def _plane_cloud(h: int, w: int, pitch: float, z0: float = 0.4, tilt: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """An organised cloud of a plane z = z0 + tilt . (x, y) seen by a camera at the origin, pixels
    ``pitch`` metres apart on the plane."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    x, y = (xx - w / 2) * pitch, (yy - h / 2) * pitch
    z = z0 + tilt[0] * x + tilt[1] * y
    return np.stack([x, y, z], axis=2)


def test_flat_square_on_a_tilted_plane_has_its_area_and_no_depth() -> None:
    pitch = 0.0005  # 0.5 mm pixels
    xyz = _plane_cloud(80, 100, pitch, tilt=(0.3, -0.2))
    amap = np.zeros((80, 100))
    amap[30:50, 40:60] = 5.0  # 20 x 20 px
    regions, omitted = find_regions(amap, 1.0, xyz=xyz)
    assert omitted == 0 and len(regions) == 1
    r = regions[0]
    # on the tilted plane each pixel covers pitch^2 * sqrt(1 + 0.3^2 + 0.2^2) of surface
    assert r.area_mm2 == pytest.approx(400 * 0.25 * math.sqrt(1 + 0.09 + 0.04), rel=1e-6)
    assert r.depth_mm == pytest.approx(0.0, abs=1e-9) and r.pixels == 400
    assert r.box == (40, 30, 20, 20) and r.centre_px == (50.0, 40.0)
    # the mean point: column 49.5 and row 39.5, 0.25 mm left of and above the image centre
    assert r.centre_mm == pytest.approx((-0.25, -0.25, 400 - 0.3 * 0.25 + 0.2 * 0.25))
    # the outline follows the square's pixel edges (image coordinates 40..60, 30..50)
    ring = np.array(r.outline[0])
    assert ring[:, 0].min() == pytest.approx(40, abs=0.5) and ring[:, 0].max() == pytest.approx(60, abs=0.5)
    assert ring[:, 1].min() == pytest.approx(30, abs=0.5) and ring[:, 1].max() == pytest.approx(50, abs=0.5)


def test_a_step_and_a_bump_have_their_height_with_its_sign() -> None:
    pitch = 0.0005
    xyz = _plane_cloud(90, 90, pitch, z0=0.3)
    yy, xx = np.mgrid[0:90, 0:90]
    dent = (yy - 30) ** 2 + (xx - 30) ** 2 <= 8**2  # a flat-bottomed pit 1.5 mm deep
    bump = (yy - 60) ** 2 + (xx - 62) ** 2 <= 6**2  # a plateau 0.8 mm high
    xyz[..., 2] += 0.0015 * dent - 0.0008 * bump  # z grows away from the camera
    amap = (dent * 3.0 + bump * 2.0).astype(float)
    regions, _ = find_regions(amap, 1.0, xyz=xyz)
    assert [r.pixels for r in regions] == [int(dent.sum()), int(bump.sum())]  # highest score first
    pit, plateau = regions
    assert pit.depth_mm == pytest.approx(1.5, abs=0.02) and pit.height_mm < 0 and "deep" in pit.size_text()
    assert plateau.depth_mm == pytest.approx(0.8, abs=0.02) and plateau.height_mm > 0 and "high" in plateau.size_text()


def test_missing_points_regions_without_a_cloud_and_many_regions() -> None:
    xyz = _plane_cloud(60, 60, 0.001)
    amap = np.zeros((60, 60))
    amap[20:30, 20:30] = 4.0
    xyz[24:26, 24:26] = 0.0  # points lost inside the defect: their patches take the region's median
    regions, _ = find_regions(amap, 1.0, xyz=xyz, on_object=object_pixels(xyz))
    assert regions[0].area_mm2 == pytest.approx(100.0, rel=1e-6) and regions[0].pixels == 100
    xyz[..., 2] = 0.0  # no points at all: the object mask leaves nothing to flag
    assert find_regions(amap, 1.0, xyz=xyz, on_object=object_pixels(xyz)) == ([], 0)
    plain, _ = find_regions(amap, 1.0)  # normal maps: regions in pixels only
    assert plain[0].area_mm2 is None and plain[0].size_text() == "100 px" and plain[0].to_dict()["centre_mm"] is None
    dots = np.zeros((60, 60))
    dots[::3, ::3] = np.arange(400).reshape(20, 20) + 2.0  # 400 separate one-pixel regions
    many, omitted = find_regions(dots, 1.0)
    assert len(many) == MAX_REGIONS and omitted == 400 - MAX_REGIONS and many[0].peak == 401.0
    assert find_regions(np.full((8, 8), np.nan), 1.0) == ([], 0)


def test_pixels_are_compared_with_the_threshold_in_float64_and_nan_is_never_flagged() -> None:
    """A float32 map against a threshold float32 cannot hold: float32(0.1) lies above 0.1 and is flagged,
    NaN is not, +inf is; the peak is the map's own value."""
    amap = np.zeros((20, 20), np.float32)
    amap[2:4, 2:4] = np.float32(0.1)
    amap[10:12, 10:12] = np.nan
    amap[15, 15] = np.inf
    regions, omitted = find_regions(amap, 0.1)
    assert omitted == 0 and sorted(r.pixels for r in regions) == [1, 4]
    assert regions[0].peak == math.inf and regions[1].peak == float(np.float32(0.1))
    assert find_regions(amap.astype(np.float64), 0.1)[0] == regions


def test_map_back_to_the_original_resolution() -> None:
    small = np.zeros((4, 4), np.float32)
    small[1:3, 1:3] = 1.0
    big = full_resolution(small, (8, 12))
    assert big.shape == (8, 12) and big.max() == pytest.approx(1.0) and big[0, 0] == 0.0
    assert full_resolution(small, (4, 4)) is not None and np.array_equal(full_resolution(small, (4, 4)), small)


def _errors(size: int, seeds: range) -> list[tuple[str, int, float, float, float, float]]:
    """(category/defect, pixels, true and measured area, true and measured depth) of synthetic
    defects, their ground-truth mask taken as the flagged map."""
    rows = []
    for category in ("puck", "tile"):
        for seed in seeds:
            _, xyz, mask, truth = render_with_truth(np.random.default_rng(seed), size, category, "dent")
            regions, _ = find_regions(mask.astype(float), 0.5, xyz=xyz, on_object=object_pixels(xyz))
            assert len(regions) == 1
            r = regions[0]
            assert np.sign(r.height_mm) == np.sign(truth.height_mm)
            assert r.centre_px == pytest.approx((truth.centre_x + 0.5, truth.centre_y + 0.5))
            rows.append((category, truth.pixels, truth.area_mm2, r.area_mm2, truth.depth_mm, r.depth_mm))
    return rows


def test_synthetic_dents_within_15_percent_and_a_tenth_of_a_millimetre() -> None:
    """Issue 20 (a) at the unit level: 16 synthetic dents and bumps (2-4 mm, 250-700 px at 256 px,
    0.2 mm sensor noise) on both shapes: area within 15 %, depth within 0.1 mm of the truth."""
    for category, pixels, area, measured_area, depth, measured_depth in _errors(256, range(8)):
        assert pixels >= 30
        assert abs(measured_area / area - 1) <= 0.15, (category, area, measured_area)
        assert abs(measured_depth - depth) <= 0.1, (category, depth, measured_depth)


def test_synthetic_scans_end_to_end_in_millimetre_files(tmp_path: Path) -> None:
    """Issue 20 (a) end to end: the generator writes scans and their truth (defects.json); the
    clouds are read back through trd's reader, stored in metres and again in millimetres, and the
    regions of each defect's ground-truth mask match the truth either way."""
    generate(tmp_path / "m", ["puck"], size=256, n_train=1, n_validation=0, n_test_good=0, n_test_per_defect=3, seed=3)
    truth = json.loads((tmp_path / "m" / "puck" / DEFECTS_FILE).read_text())
    assert set(truth) == {f"test/{d}/{i:03d}" for d in ("color", "crack", "dent") for i in range(3)}
    assert all(t["depth_mm"] == 0.0 for k, t in truth.items() if "/color/" in k)  # a stain has no depth
    samples = [s for s in list_samples("mvtec3d", tmp_path / "m", "puck", "test") if s.defect == "dent"]
    mm_folder = tmp_path / "mm"
    mm_folder.mkdir()
    for sample in samples:
        mask = np.asarray(Image.open(sample.mask)) > 127
        expected = truth[f"test/dent/{sample.rgb.stem}"]
        metres = read_cloud(sample, DataConfig())
        tifffile.imwrite(mm_folder / sample.xyz.name, metres * 1000.0, photometric="rgb")
        millimetres = read_cloud(dataclasses.replace(sample, xyz=mm_folder / sample.xyz.name), DataConfig(xyz_unit="mm"))
        for cloud in (metres, millimetres):
            (r,), _ = find_regions(mask.astype(float), 0.5, xyz=cloud, on_object=object_pixels(cloud))
            assert r.pixels == expected["pixels"] >= 30
            assert abs(r.area_mm2 / expected["area_mm2"] - 1) <= 0.15
            assert abs(r.depth_mm - expected["depth_mm"]) <= 0.1


def test_reject_rules_only_narrow_the_decision() -> None:
    th = Thresholds(2.0, 1.0, 0.01, 0.01, 99, 1)
    xyz = _plane_cloud(40, 40, 0.001)
    amap = np.zeros((40, 40))
    amap[10:14, 10:14] = 3.0  # 16 mm^2, flat
    regions, _ = find_regions(amap, 1.0, xyz=xyz)
    assert decide(3.0, th, regions, Rules()).anomalous
    plain = decide(3.0, th, regions, Rules())
    assert plain.reason == "image score 3.0000 is above the threshold 2.0000; region 1 (16 mm², 0 mm deep) holds its " \
                           "highest score: anomalous"
    small = decide(3.0, th, regions, Rules(min_area_mm2=20))
    assert not small.anomalous and small.above_threshold and "region 1 16 mm² is under 20 mm²: good" in small.reason
    shallow = decide(3.0, th, regions, Rules(min_depth_mm=0.2))
    assert not shallow.anomalous and "0 mm deep is under 0.2 mm" in shallow.reason
    kept = decide(3.0, th, regions, Rules(min_area_mm2=10))
    assert kept.anomalous and kept.reason.endswith("region 1 (16 mm², 0 mm deep) passes the rules (at least 10 mm²): "
                                                    "anomalous")
    assert not decide(3.0, th, [], Rules(min_area_mm2=1)).anomalous  # nothing on the object to check
    for rules in (Rules(), Rules(min_area_mm2=1), Rules(min_depth_mm=5)):  # below the threshold: good, whatever the rules
        below = decide(1.5, th, regions, rules)
        assert not below.anomalous and not below.above_threshold
