"""The drift monitor's statistics (`trd.runtime.monitor`), in simulation: each check keeps its false-alarm
level on scans exchangeable with the validation (training) scans, and raises its alarm on a drift.

Scores are drawn from a continuous distribution and turned into decisions and p-values by the
toolkit's own rule (`order_statistic_threshold`, `conformal_p_value`), so the score checks are tested
against first principles, not against the beta-binomial they use.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from trd.data.inputs import Moments
from trd.errors import ConfigError
from trd.runtime.monitor import (
    Monitor,
    MonitorSettings,
    flag_rate_check,
    health_check,
    p_text,
    p_values_check,
)
from trd.scoring.threshold import conformal_p_value, order_statistic_threshold

ALPHA = 0.05  # large enough to measure a rejection rate in a few thousand windows


def _window(rng: np.random.Generator, n: int, target: float, m: int, shift: float = 0.0) -> tuple[int, list[float], int]:
    """A fresh validation set of n scores and a window of m new scores (shifted by ``shift``): the
    flag count, the p-values of the scans decided good, and the threshold's rank k."""
    validation = rng.standard_normal(n)
    threshold, k = order_statistic_threshold(validation, target)
    ordered = np.sort(validation)
    scores = rng.standard_normal(m) + shift
    good = [conformal_p_value(ordered, s) for s in scores[scores <= threshold]]
    return int(np.count_nonzero(scores > threshold)), good, k


def test_p_value_is_the_rank_against_the_validation_scores_and_matches_the_decision() -> None:
    validation = np.array([3.0, 1.0, 2.0, 5.0, 4.0])
    ordered = np.sort(validation)
    assert conformal_p_value(ordered, 4.5) == 2 / 6  # one of five >= 4.5, plus the scan itself
    assert conformal_p_value(ordered, 5.0) == 2 / 6  # ties count as >= (the scan is no rarer than them)
    assert conformal_p_value(ordered, 0.0) == 1.0 and conformal_p_value(ordered, 9.0) == 1 / 6
    threshold, k = order_statistic_threshold(validation, 0.2)  # k = 1: the maximum, promise 1/6
    for score in np.linspace(0.0, 6.0, 61):
        assert (score > threshold) == (conformal_p_value(ordered, score) <= k / 6 + 1e-12)


@pytest.mark.parametrize("n, target", [(19, 0.05), (99, 0.01)])
def test_score_checks_keep_their_false_alarm_level_over_validation_sets(n: int, target: float) -> None:
    """Each window with its own validation set: the alarm rate is at most alpha (and not far below:
    the checks are exact up to the discreteness of counts), while a binomial test at the promised
    rate, which forgets that the threshold was drawn from n scores, alarms far too often."""
    rng = np.random.default_rng(1)
    reps, m = 1500, 200
    flags = low = naive = 0
    for _ in range(reps):
        flagged, good, k = _window(rng, n, target, m)
        flags += flag_rate_check(flagged, m, k, n, ALPHA).alarm
        low += p_values_check(good, k, n, 0.2, ALPHA).alarm
        naive += binom.sf(flagged - 1, m, k / (n + 1)) < ALPHA
    tolerance = 3 * math.sqrt(ALPHA * (1 - ALPHA) / reps)
    assert flags / reps <= ALPHA + tolerance and low / reps <= ALPHA + tolerance
    assert flags / reps >= ALPHA / 3 and low / reps >= ALPHA / 3  # not a test that never fires
    assert naive / reps > 1.8 * ALPHA  # why the flag count is tested against the beta-binomial


def test_score_checks_raise_their_alarm_on_a_drift() -> None:
    rng = np.random.default_rng(2)
    flagged, good, k = _window(rng, 199, 0.01, 200, shift=1.5)  # every score 1.5 standard deviations up
    flag, low = flag_rate_check(flagged, 200, k, 199, 1e-3), p_values_check(good, k, 199, 0.2, 1e-3)
    assert flag.alarm and low.alarm, (flag.reason, low.reason)
    assert flag.reason.startswith(f"flag rate {flagged} of 200 (") and "against a promised <= 1 %: p = " in flag.reason


def test_a_defect_rate_of_10_percent_raises_the_flag_rate_alarm_within_the_documented_window(documented) -> None:
    """docs/MONITOR.md's row: n = 199 validation scores (promise 1 %), a model that flags ~90 % of the
    defects (defect scores shifted so), a full window of good scans, then 10 % defects."""
    check, limit = documented["a defect rate of 10 %"]
    assert check == "flag_rate"
    rng = np.random.default_rng(4)
    n, window = 199, MonitorSettings().window
    validation = rng.standard_normal(n)
    threshold, k = order_statistic_threshold(validation, 0.01)
    ordered, watch = np.sort(validation), Monitor()
    scores = rng.standard_normal(window + limit)
    defects = (np.arange(scores.size) >= window) & (rng.random(scores.size) < 0.1)
    shift = threshold + 1.2816  # P(defect score > threshold) = 0.9
    scores[defects] += shift
    for s in scores:
        watch.add({"anomalous": bool(s > threshold), "p_value": conformal_p_value(ordered, s), "model": {"sha256": "m"},
                   "threshold": {"validation_samples": n, "guaranteed_fpr": k / (n + 1)}})
    assert window < watch.first_alarm.get("flag_rate", 10**9) <= window + limit, watch.first_alarm
    assert all(at > window for at in watch.first_alarm.values())


def test_health_check_keeps_its_level_and_sees_a_shift() -> None:
    rng = np.random.default_rng(3)
    reps, alarms = 1500, 0
    for _ in range(reps):
        training = rng.normal(120.0, 6.0, 40)
        spread = Moments.of(list(training))
        alarms += health_check("brightness", list(rng.normal(120.0, 6.0, 200)), spread, ALPHA, 10).alarm
    assert alarms / reps <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / reps)
    spread = Moments.of(list(rng.normal(120.0, 6.0, 40)))
    darker = health_check("brightness", list(rng.normal(96.0, 5.0, 10)), spread, 1e-3, 10)  # x 0.8
    assert darker.alarm and darker.reason.startswith("RGB brightness: mean 9") and "in training (n = 40)" in darker.reason


def test_a_sensor_without_missing_points_in_training_tolerates_one_missing_pixel() -> None:
    """The standard-deviation floor: zero spread in training must not turn a trace into an alarm."""
    never = Moments(0.0, 0.0, 40)
    assert not health_check("missing_3d", [0.0] * 49 + [1e-5], never, 1e-3, 10).alarm
    assert health_check("missing_3d", [0.3] * 50, never, 1e-3, 10).alarm


def _record(anomalous: bool, p: float | None, model: str = "a", brightness: float | None = 120.0) -> dict:
    health = {"brightness": brightness, "missing_3d": 0.02, "z_median_m": 0.4,
              "training": {"brightness": {"mean": 120.0, "std": 5.0, "n": 40},
                           "missing_3d": {"mean": 0.02, "std": 0.005, "n": 40},
                           "z_median_m": {"mean": 0.4, "std": 0.001, "n": 40}}}
    return {"anomalous": anomalous, "p_value": p, "model": {"sha256": model},
            "threshold": {"validation_samples": 99, "guaranteed_fpr": 0.01}, "input_health": health}


def test_monitor_window_alarm_counts_and_a_model_change() -> None:
    watch = Monitor(MonitorSettings(window=50, alpha=1e-3))
    status = watch.status
    assert not status.alarm and [c.state for c in status.checks] == ["waiting"] * 5
    for i in range(60):
        status = watch.add(_record(False, 0.2 + 0.8 * (i % 10) / 10))
    assert status.scans == 50 and status.seen == 60 and not status.alarm
    assert [c.state for c in status.checks] == ["ok"] * 5
    for _ in range(12):  # 12 of the last 50 flagged against a promised 1 %
        status = watch.add(_record(True, 0.01, brightness=95.0))
    assert status.alarm and watch.first_alarm["flag_rate"] <= 72 and watch.raised["flag_rate"] == 1
    assert any(r.startswith("flag rate 12 of 50 (24 %) against a promised <= 1 %: p = ") for r in status.reasons())
    status = watch.add(_record(False, 0.5, model="b"))  # another model: the window starts again
    assert status.scans == 1 and status.model == "b" and not status.alarm
    assert watch.raised["flag_rate"] == 1 and watch.seen == 73


def test_records_of_older_models_switch_checks_off_and_say_why() -> None:
    older = {"anomalous": False, "score": 1.0, "image_threshold": 2.0}  # a line from before trd.record/1
    status = Monitor().add(older)
    assert [c.state for c in status.checks] == ["off"] * 5 and not status.alarm
    assert "older trd" in status.checks[0].reason and "no p-values" in status.checks[1].reason


@pytest.mark.parametrize("settings, words", [
    ({"window": 1}, "monitor window must be an integer >= 2 scans, got 1"),
    ({"alpha": 0.0}, r"monitor alpha \(false-alarm level per check and window\) must be in \(0, 0.5\), got 0.0"),
    ({"alpha": 5.0}, r"must be in \(0, 0.5\), got 5.0"),
    ({"low_share": 1.0}, r"monitor low_share must be in \(0, 1\), got 1.0"),
    ({"min_health_scans": 1}, r"monitor min_health_scans must be an integer >= 2, got 1"),
])
def test_settings_are_checked(settings: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        MonitorSettings(**settings)


def test_p_text() -> None:
    assert [p_text(p) for p in (0.5, 0.031, 2e-4, 1.04e-5, 1e-15)] == ["0.5", "0.031", "2e-4", "1e-5", "< 1e-12"]
