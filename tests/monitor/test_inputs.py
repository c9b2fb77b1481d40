"""Input health: measured while a scan is read (no second decode), the training spread stored with the
model, older models and their records still read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from trd.config import DataConfig
from trd.data.cache import PreprocessCache
from trd.data.inputs import InputStats, ScanHealth, Spread, load_pair, measure_input_stats
from trd.data.samples import list_samples
from trd.data.transforms import resize_rgb
from trd.runtime.records import Baseline, build_record
from trd.scoring.threshold import Thresholds


def test_scan_health_is_what_the_files_hold(synth_root: Path, tmp_path: Path) -> None:
    cfg = DataConfig(root=str(synth_root), category="puck", image_size=32)
    sample = list_samples("mvtec3d", synth_root, "puck", "test")[0]
    health = load_pair(sample, cfg).health
    xyz = tifffile.imread(sample.xyz)
    rgb = resize_rgb(np.asarray(Image.open(sample.rgb).convert("RGB")), 32)
    assert health.brightness == rgb.mean()  # the image as the model sees it
    assert health.missing_3d == np.count_nonzero(xyz[..., 2] == 0) / xyz[..., 2].size > 0
    assert health.z_median_m == float(np.median(xyz[..., 2][xyz[..., 2] != 0]))
    assert set(health.to_dict()) == {"brightness", "missing_3d", "z_median_m"}
    cache = PreprocessCache(tmp_path / "cache")
    load_pair(sample, cfg, cache)
    cached = load_pair(sample, cfg, cache).health  # the 3D image from the cache: the cloud was not read
    assert cached == ScanHealth(health.brightness, None, None)


def test_training_spread_is_measured_and_older_models_load(synth_root: Path) -> None:
    cfg = DataConfig(root=str(synth_root), category="puck", image_size=64)
    samples = list_samples("mvtec3d", synth_root, "puck", "train")
    stats = measure_input_stats(samples, cfg)
    measured = [load_pair(s, cfg).health for s in samples]
    for key in ("brightness", "missing_3d", "z_median_m"):
        values = [getattr(h, key) for h in measured]
        assert stats.spread[key].n == len(samples)
        assert np.isclose(stats.spread[key].mean, np.mean(values)) and np.isclose(stats.spread[key].std, np.std(values, ddof=1))
    assert InputStats.from_dict(stats.to_dict()) == stats
    older = InputStats.from_dict({"z_median_m": 0.4, "image_hw": [64, 64]})  # a model.pt of an older trd
    assert older is not None and older.spread == {}


def test_records_without_validation_scores_or_health(synth_root: Path) -> None:
    outputs = {"score": np.array([2.0]), "share_rgb": np.array([1.0])}
    thresholds = Thresholds(1.5, 1.0, 0.01, 0.01, 99, 1, "validation")
    older = build_record(outputs, 0, name="a", rgb="a.png", xyz="a.tiff", thresholds=thresholds, model={},
                         timings_ms={})
    assert older["p_value"] is None and "input_health" not in older
    baseline = Baseline.of([3.0, 1.0, 2.0], InputStats(0.4, (64, 64), {"brightness": Spread(100.0, 5.0, 40)}))
    record = build_record(outputs, 0, name="a", rgb="a.png", xyz="a.tiff", thresholds=thresholds, model={},
                          timings_ms={}, baseline=baseline, health=ScanHealth(90.0, 0.01, 0.4))
    assert record["p_value"] == 0.75  # 2.0 and 3.0 of the three validation scores are >= 2.0: (1 + 2) / 4
    assert record["input_health"] == {"brightness": 90.0, "missing_3d": 0.01, "z_median_m": 0.4,
                                      "training": {"brightness": {"mean": 100.0, "std": 5.0, "n": 40}}}
