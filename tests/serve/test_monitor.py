"""The drift monitor in a real `trd serve`: every scored record feeds it; its checks are on /metrics,
GET /v1/monitor and the review page (a banner while one is in alarm).

A server with a window of 12 scans gets two good test pairs, then twelve uploads whose RGB images are
darkened to half their brightness (a light gone dim): the brightness check goes into alarm.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from .browser import missing, start_chrome

WINDOW = 12


def _metric(text: str, name: str, check: str | None = None) -> float:
    label = f'{{check="{check}"}}' if check else ""
    match = re.search(rf"^{name}{re.escape(label)} (\S+)$", text, re.M)
    assert match, f"{name}{label} missing from /metrics"
    return float(match.group(1))


@pytest.fixture(scope="module")
def drifting(start_server: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The server after 2 good scans (their records and /v1/monitor then) and 12 darkened ones."""
    import httpx

    server = start_server("--monitor-window", str(WINDOW))
    good = [server.score(i) for i in (0, 1)]
    assert all(r.status_code == 200 for r in good), [r.text for r in good]
    early = httpx.get(f"{server.url}/v1/monitor", timeout=60).json()
    folder = tmp_path_factory.mktemp("dim")
    for i in range(WINDOW):
        rgb, xyz = server.pair(i % 8)
        dim = folder / f"dim{i:02d}.png"
        Image.fromarray((np.asarray(Image.open(rgb).convert("RGB")) * 0.5).astype(np.uint8)).save(dim)
        files = {"rgb": (dim.name, dim.read_bytes(), "image/png"), "xyz": (xyz.name, xyz.read_bytes(), "image/tiff")}
        answer = httpx.post(f"{server.url}/v1/score", files=files, timeout=60)
        assert answer.status_code == 200, answer.text
    return {"server": server, "good": [r.json() for r in good], "early": early}


def test_records_carry_the_p_value_and_input_health(drifting: dict[str, Any]) -> None:
    import httpx

    server = drifting["server"]
    model = httpx.get(f"{server.url}/v1/model", timeout=60).json()
    validation = model["validation_scores"]
    for record in drifting["good"]:
        assert record["p_value"] == (1 + sum(v >= record["score"] for v in validation)) / (len(validation) + 1)
        health = record["input_health"]
        assert 0 < health["brightness"] < 255 and 0 <= health["missing_3d"] < 0.5 and 0.3 < health["z_median_m"] < 0.5
        assert set(health["training"]) == {"brightness", "missing_3d", "z_median_m"}
        assert health["training"]["brightness"]["n"] == 6  # the tiny model's 4 training + 2 validation scans
    early = drifting["early"]
    assert early["scans"] == 2 and early["window"] == WINDOW and not early["alarm"]
    states = {c["name"]: c["state"] for c in early["checks"]}
    assert states["brightness"] == "waiting" and states["flag_rate"] in ("ok", "alarm")


def test_a_dim_light_raises_the_brightness_alarm_on_metrics_and_v1_monitor(drifting: dict[str, Any]) -> None:
    import httpx

    server = drifting["server"]
    status = httpx.get(f"{server.url}/v1/monitor", timeout=60).json()
    assert status["schema"] == "trd.monitor/1" and status["scans"] == WINDOW and status["seen"] == 2 + WINDOW
    brightness = next(c for c in status["checks"] if c["name"] == "brightness")
    assert status["alarm"] and brightness["state"] == "alarm" and brightness["p"] < status["alpha"]
    assert brightness["reason"].startswith("RGB brightness: mean ") and f"over the last {WINDOW} scans" in brightness["reason"]
    assert status["raised"]["brightness"] == 1
    text = httpx.get(f"{server.url}/metrics", timeout=60).text
    assert _metric(text, "trd_monitor_alarm", "brightness") == 1 and _metric(text, "trd_monitor_alarm_any") == 1
    assert _metric(text, "trd_monitor_p_value", "brightness") == pytest.approx(brightness["p"], rel=1e-5)
    assert _metric(text, "trd_monitor_alarms_raised_total", "brightness") == 1
    assert _metric(text, "trd_monitor_window_scans") == WINDOW
    assert "# TYPE trd_monitor_alarms_raised_total counter" in text
    assert _metric(text, "trd_monitor_alarm", "missing_3d") == 0  # the clouds did not change


@pytest.mark.skipif(missing() is not None, reason=str(missing()))
def test_the_page_shows_the_alarm_in_a_banner(drifting: dict[str, Any], tmp_path: Path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver = start_chrome(tmp_path / "profile")
    try:
        driver.get(drifting["server"].url + "/")
        WebDriverWait(driver, 120, poll_frequency=0.1).until(
            lambda d: d.find_elements("css selector", '#monitor-checks li[data-check="brightness"]'))
        banner = driver.find_element("id", "drift-alarm")
        assert banner.is_displayed() and banner.text.startswith("Drift alarm: RGB brightness: mean ")
        item = driver.find_element("css selector", '#monitor-checks li[data-check="brightness"]')
        assert item.get_attribute("data-state") == "alarm" and item.text.startswith("ALARM: RGB brightness")
        assert f"Checks on the last {WINDOW} scans" in driver.find_element("id", "monitor-summary").text
    finally:
        driver.quit()
