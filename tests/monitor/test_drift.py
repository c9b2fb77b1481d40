"""Simulated drifts of a line raise their alarm within the scans docs/MONITOR.md states; good scans raise none.

The scans are written by `trd.data.synth.write_line`, scored by a tiny exported model through
`trd predict`'s code (``score_line``), and replayed through the monitor with its default settings,
after a full window of good scans. A 10 % defect rate is not here: the tiny model sees no defects (its
check is tested in simulation, tests/monitor/test_checks.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trd.data.synth import Drift
from trd.errors import DataError
from trd.runtime.monitor import Monitor, MonitorSettings

DRIFTS = {"RGB brightness x 0.8": Drift(brightness=0.8), "z offset +2 mm": Drift(z_offset_m=0.002),
          "30 % of 3D points dropped": Drift(dropped=0.3)}


@pytest.fixture(scope="module")
def good_window(score_line) -> list[dict]:
    return score_line("good", MonitorSettings().window)


@pytest.mark.slow
@pytest.mark.parametrize("drift", list(DRIFTS))
def test_a_drift_raises_its_alarm_within_the_documented_window(drift: str, good_window: list[dict], score_line,
                                                              documented: dict[str, tuple[str, int]]) -> None:
    check, limit = documented[drift]
    drifted = score_line(check, limit, start=10_000, drift=DRIFTS[drift])
    watch = Monitor()
    for record in good_window:
        assert not watch.add(record).alarm, watch.status.reasons()
    for record in drifted:
        watch.add(record)
    start = len(good_window)
    assert check in watch.first_alarm, f"no {check} alarm within {limit} scans: {watch.status.checks}"
    assert watch.first_alarm[check] - start <= limit
    assert all(at > start for at in watch.first_alarm.values())


@pytest.mark.slow
def test_1000_good_scans_raise_no_alarm(good_window: list[dict], score_line) -> None:
    """The stream the drifts start from, continued to 1,000 good scans: no check raises an alarm
    (each at alpha = 0.001 per window; docs/MONITOR.md gives the measured rate over many such runs)."""
    records = good_window + score_line("good-more", 1000 - len(good_window), start=len(good_window))
    watch = Monitor()
    for record in records:
        watch.add(record)
    assert watch.seen == 1000 and not watch.first_alarm, watch.first_alarm
    assert [c.state for c in watch.status.checks] == ["ok"] * 5, watch.status.checks
    assert all(0 < r["p_value"] <= 1 for r in records) and all(set(r["input_health"]) == {
        "brightness", "missing_3d", "z_median_m", "training"} for r in records)


def test_trd_monitor_reads_a_result_store_like_the_ledger(score_line, tmp_path: Path) -> None:
    """`trd monitor` over a result store replays the same records, in the order they were scored."""
    from trd.store import open_store
    from trd.workflows.monitor import monitor

    records = score_line("stored", 40, drift=Drift(brightness=0.6))
    ledger = tmp_path / "predictions.jsonl"
    ledger.write_text("".join(json.dumps(r) + "\n" for r in records))
    store = open_store(str(tmp_path / "results.db"))
    for record in records:
        store.add(record, source="predict")
    store.close()
    from_store = monitor(tmp_path / "results.db", MonitorSettings(window=20), log=lambda _: None)
    from_ledger = monitor(ledger, MonitorSettings(window=20), log=lambda _: None)
    assert from_store["records"] == from_ledger["records"] == 40
    assert from_store["checks"] == from_ledger["checks"] and from_store["alarm"] == from_ledger["alarm"]
    assert from_store["alarm"]  # the darker light is seen through the store too
    empty = open_store(str(tmp_path / "empty.db"))
    empty.close()
    with pytest.raises(DataError, match="holds no results yet"):
        monitor(tmp_path / "empty.db", log=lambda _: None)
