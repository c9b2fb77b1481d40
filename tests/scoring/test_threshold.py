"""Validation-split thresholds at a target false-positive rate."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trd.errors import ConfigError, TRDError
from trd.scoring.threshold import Thresholds, fpr_threshold


def test_hand_computed_thresholds() -> None:
    scores = np.arange(1.0, 11.0)  # 1..10
    assert fpr_threshold(scores, 0.2) == 8.0  # 9 and 10 above: 2/10; any lower value lets 8 through
    assert fpr_threshold(scores, 0.0) == 10.0  # nothing strictly above the maximum
    assert fpr_threshold(scores, 0.15) == 9.0  # floor(1.5) = 1 score may exceed
    assert fpr_threshold(np.linspace(0, 1, 100), 0.29) == pytest.approx(70 / 99)  # 29 above, not 28
    # ties stay below the threshold: with [1, 2, 2, 2, 3] at 20% only the 3 may exceed
    assert fpr_threshold(np.array([2.0, 1.0, 3.0, 2.0, 2.0]), 0.2) == 2.0


def test_pixel_maps_any_shape_and_dtype() -> None:
    maps = np.random.default_rng(0).random((4, 16, 16), dtype=np.float32)
    t = fpr_threshold(maps, 0.01)
    assert np.count_nonzero(maps > t) == 10  # floor(0.01 * 1024); values are distinct
    assert t in maps


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 20), min_size=1, max_size=60), st.floats(0.0, 0.99))
def test_threshold_is_the_smallest_valid_one(values: list[int], target: float) -> None:
    s = np.asarray(values, dtype=np.float64)
    t = fpr_threshold(s, target)
    allowed = np.floor(target * s.size + 1e-6)
    assert np.count_nonzero(s > t) <= allowed
    assert np.count_nonzero(s >= t) > allowed  # t is a score: anything lower admits too many


def test_invalid_inputs() -> None:
    with pytest.raises(ConfigError):
        fpr_threshold(np.ones(3), 1.0)
    with pytest.raises(ConfigError):
        fpr_threshold(np.ones(3), -0.1)
    with pytest.raises(TRDError, match="empty"):
        fpr_threshold(np.array([]), 0.1)
    with pytest.raises(TRDError, match="NaN"):
        fpr_threshold(np.array([1.0, np.nan]), 0.1)


def test_thresholds_record() -> None:
    rng = np.random.default_rng(1)
    scores, pixels = rng.random(50), rng.random((5, 8, 8))
    th = Thresholds(fpr_threshold(scores, 0.1), fpr_threshold(pixels, 0.02), 0.1, 0.02)
    assert th.target_fpr == 0.1 and th.pixel_fpr == 0.02
    assert Thresholds.from_dict(th.to_dict()) == th
    with pytest.raises(TRDError, match="pixel"):
        Thresholds.from_dict({"image": 1.0, "target_fpr": 0.1, "pixel_fpr": 0.1})
