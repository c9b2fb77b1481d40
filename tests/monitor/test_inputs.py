"""Input health: measured on the arrays read for scoring (no second decode), the training moments stored
with the model, older models and their records still read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from trd.config import Config, DataConfig
from trd.data.inputs import InputStats, Moments, ScanHealth, measure_input_stats
from trd.data.samples import list_samples
from trd.data.transforms import resize_rgb
from trd.runtime.batches import load_batch
from trd.runtime.findings import find
from trd.runtime.records import Baseline, build_record
from trd.scoring.threshold import Thresholds


def test_scan_health_is_what_the_files_hold(synth_root: Path) -> None:
    cfg = DataConfig(root=str(synth_root), category="puck", image_size=32)
    sample = list_samples("mvtec3d", synth_root, "puck", "test")[0]
    health = load_batch([sample], range(1), cfg).health[0]  # measured on the arrays read for scoring
    xyz = tifffile.imread(sample.xyz)
    rgb = resize_rgb(np.asarray(Image.open(sample.rgb).convert("RGB")), 32)
    assert health.brightness == rgb.mean()  # the image as the model sees it
    assert health.missing_3d == np.count_nonzero(xyz[..., 2] == 0) / xyz[..., 2].size > 0
    assert health.z_median_m == float(np.median(xyz[..., 2][xyz[..., 2] != 0]))
    assert set(health.to_dict()) == {"brightness", "missing_3d", "z_median_m"}


def test_training_moments_are_measured_and_older_models_load(synth_root: Path) -> None:
    cfg = DataConfig(root=str(synth_root), category="puck", image_size=64)
    samples = list_samples("mvtec3d", synth_root, "puck", "train")
    stats = measure_input_stats(samples, cfg)
    measured = load_batch(samples, range(len(samples)), cfg).health
    for key in ("brightness", "missing_3d", "z_median_m"):
        values = [getattr(h, key) for h in measured]
        assert stats.health[key].n == len(samples)
        assert np.isclose(stats.health[key].mean, np.mean(values)) and np.isclose(stats.health[key].std, np.std(values, ddof=1))
    assert InputStats.from_dict(stats.to_dict()) == stats
    older = InputStats.from_dict({"z_median_m": 0.4, "image_hw": [64, 64]})  # a model.pt of an older trd
    assert older is not None and older.health == {}


def test_records_without_validation_scores_or_health(synth_root: Path) -> None:
    outputs = {"score": np.array([2.0]), "share_rgb": np.array([1.0])}
    thresholds = Thresholds(1.5, 1.0, 0.01, 0.01, 99, 1, "validation")
    found = find(np.zeros((8, 8), np.float32), 2.0, (8, 8), None, Config(), thresholds)
    older = build_record(outputs, 0, name="a", key="0" * 64, rgb="a.png", xyz="a.tiff", thresholds=thresholds,
                         findings=found, model={}, timings_ms={})
    assert older["p_value"] is None and "input_health" not in older
    baseline = Baseline.of([3.0, 1.0, 2.0], InputStats(0.4, (64, 64), health={"brightness": Moments(100.0, 5.0, 40)}))
    record = build_record(outputs, 0, name="a", key="0" * 64, rgb="a.png", xyz="a.tiff", thresholds=thresholds,
                          findings=found, model={}, timings_ms={}, baseline=baseline, health=ScanHealth(90.0, 0.01, 0.4))
    assert record["p_value"] == 0.75  # 2.0 and 3.0 of the three validation scores are >= 2.0: (1 + 2) / 4
    assert record["input_health"] == {"brightness": 90.0, "missing_3d": 0.01, "z_median_m": 0.4,
                                      "training": {"brightness": {"mean": 100.0, "std": 5.0, "n": 40}}}
