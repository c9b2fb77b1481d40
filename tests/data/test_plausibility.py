"""The training scans' spread and the margins around it (trd.data.plausibility); models saved before
the spread was recorded load and are checked as before."""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from trd.config import DataConfig
from trd.data.inputs import measure_input_stats, read_cloud
from trd.data.plausibility import (InputStats, Spread, foreground_problem, missing_limit, missing_problem,
                                   scale_band)
from trd.data.readers.depth_png import Camera
from trd.data.samples import list_samples
from trd.errors import DataError


def test_margins_follow_the_spread_with_a_floor() -> None:
    assert scale_band(Spread(0.4, 0.4)) == pytest.approx((0.2, 0.8))  # alike training scans: the floor, 2x
    assert scale_band(Spread(0.3, 0.9)) == pytest.approx((0.1, 2.7))  # a 3x range: 3x beyond it
    # a unit slip (x10, x0.1) leaves the band wherever in the training range the scan lay
    for low, high in ((0.4, 0.4), (0.38, 0.42), (0.3, 0.59)):
        band = scale_band(Spread(low, high))
        assert all(not band[0] <= z * f <= band[1] for z in np.linspace(low, high, 9) for f in (10.0, 0.1))
    assert missing_limit(Spread(0.017, 0.017)) == pytest.approx(1 - 0.983 / 1.5)  # training 1.7 %: up to 34 %
    reference = InputStats(0.4, (64, 64), Spread(0.4, 0.4), Spread(0.01, 0.02), Spread(0.2, 0.3), 8)
    assert missing_problem(0.3, reference) == "" and "60 % of its 3D points are missing" in missing_problem(0.6, reference)
    assert foreground_problem(0.06, reference) == "" and "0.0 % object" in foreground_problem(0.0, reference)


def test_stats_round_trip_through_json() -> None:
    stats = InputStats(0.4, (48, 64), Spread(0.39, 0.41), Spread(0.0, 0.05), Spread(0.2, 0.3), 18,
                       Camera(256.0, 256.0, 31.5, 31.5, 0.0001))
    assert InputStats.from_dict(json.loads(json.dumps(stats.to_dict()))) == stats
    assert InputStats.from_dict({"z_median_m": None, "image_hw": [64, 64]}) == InputStats(None, (64, 64))


def test_older_models_are_checked_as_before(synth_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(synth_root / "puck" / "test" / "good", root / "puck" / "test" / "good")
    sample = list_samples("mvtec3d", root, "puck", "test")[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tifffile.imwrite(sample.xyz, tifffile.imread(sample.xyz) * 5.0)  # 5x farther than training
    cfg = DataConfig(image_size=32)
    old = InputStats.from_dict({"z_median_m": 0.4, "image_hw": [64, 64]})  # what models of before kept
    assert old.z_range_m is None and old.limits() == {}
    assert math.isclose(float(np.median(read_cloud(sample, cfg, old)[..., 2])), 2.0, rel_tol=0.02)  # within 10x
    new = InputStats(0.4, (64, 64), Spread(0.39, 0.41), Spread(0.0, 0.02), Spread(0.2, 0.3), 18)
    with pytest.raises(DataError, match="but the training scans were at 0.39..0.41 m"):
        read_cloud(sample, cfg, new)


def test_training_scans_in_ply_are_measured_on_their_images_grid(synth_root: Path, tmp_path: Path) -> None:
    from ..cloud_writers import write_ply

    root = tmp_path / "line"
    shutil.copytree(synth_root / "puck" / "train", root / "train")
    tiffs = list_samples("folder", root, "", "train") + list_samples("folder", root, "", "validation")
    cfg = DataConfig(root=str(root), format="folder", image_size=32)
    expected = measure_input_stats(tiffs, cfg)
    for tiff in sorted(root.glob("train/good/xyz/*.tiff")):
        write_ply(tiff.with_suffix(".ply"), tifffile.imread(tiff))  # no grid in the file: the RGB image gives it
        tiff.unlink()
    plys = list_samples("folder", root, "", "train") + list_samples("folder", root, "", "validation")
    assert {s.xyz_kind for s in plys} == {"ply"}
    assert measure_input_stats(plys, cfg) == expected and expected.n_scans == 4
