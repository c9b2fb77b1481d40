"""Review -> label -> recalibrate in a real headless Chromium against real `trd serve` processes.

An operator uploads a scan on the page, marks it (a false alarm, or "confirmed good" when it was
not flagged) with their name, takes it back and marks it again; `trd calibrate --store` adds that
scan to the model's validation pool; the page, served again with the new model, shows the new
threshold and its statement. Skipped only where selenium, chromium or chromedriver is missing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .browser import missing, start_chrome

pytestmark = [pytest.mark.skipif(missing() is not None, reason=str(missing())), pytest.mark.slow]

WAIT_S = 120


def _wait(driver: Any, condition: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(condition)


def _text(driver: Any, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def _open(driver: Any, url: str) -> None:
    driver.get(url + "/")
    _wait(driver, lambda d: d.find_element("id", "explorer-body").get_attribute("hidden") is None
          or d.find_element("id", "error").is_displayed())


def test_mark_a_false_alarm_recalibrate_and_see_the_new_threshold(exported, start_server, test_pairs, tmp_path: Path
                                                                  ) -> None:
    from trd.detector import load_detector

    model, db = exported[0], str(tmp_path / "results.db")
    server = start_server("--store", db, model=model)
    driver = start_chrome(tmp_path / "profile")
    try:
        _open(driver, server.url)
        rgb, xyz = test_pairs[0]
        driver.find_element("id", "rgb-file").send_keys(str(rgb))
        driver.find_element("id", "xyz-file").send_keys(str(xyz))
        driver.find_element("id", "score-button").click()
        _wait(driver, lambda d: d.find_element("id", "review-state").text == "Not labelled.")
        flagged = _text(driver, "decision") == "anomalous"
        good = driver.find_element("id", "label-good")
        assert good.text == ("False alarm" if flagged else "Confirmed good")
        good.click()  # without a name: refused on the page, nothing sent
        _wait(driver, lambda d: d.find_element("id", "error").is_displayed())
        assert "enter your name first" in _text(driver, "error")
        driver.find_element("id", "reviewer").send_keys("Ann")
        good.click()
        what = "false alarm" if flagged else "confirmed good"
        _wait(driver, lambda d: d.find_element("id", "review-state").text.startswith(f"Labelled {what} by Ann"))
        driver.find_element("id", "label-undo").click()  # taken back ...
        _wait(driver, lambda d: d.find_element("id", "review-state").text == "Not labelled.")
        good.click()  # ... and given again: three events, with who
        _wait(driver, lambda d: len(d.find_elements("css selector", "#review-history li")) == 3)
        assert [li.text.split(" (")[0] for li in driver.find_elements("css selector", "#review-history li")] == [
            f"Ann: {what}", "Ann took back a label", f"Ann: {what}"]
        _wait(driver, lambda d: what in d.find_element("id", "recent-list").text)
        old_statement = _text(driver, "threshold-model")
        assert "(n = 2 validation samples" in old_statement
        assert server.stop() == 0

        new = tmp_path / "model.v2.pt"
        calibrate = subprocess.run([sys.executable, "-m", "trd.cli", "calibrate", "--model", str(model), "--store", db,
                                    "--out", str(new)], capture_output=True, text=True, timeout=600)
        assert calibrate.returncode == 0, calibrate.stderr
        assert "calibrate: before: image threshold" in calibrate.stderr and "(n = 3 calibration samples" in \
            calibrate.stderr
        _, _, thresholds, _ = load_detector(new)
        assert thresholds.n_validation == 3

        again = start_server("--store", db, model=new)
        _open(driver, again.url)
        _wait(driver, lambda d: thresholds.image_statement() in d.find_element("id", "threshold-model").text)
        assert _text(driver, "explorer-note").startswith("3 validation scores")
        assert _text(driver, "threshold-model") != old_statement
        assert float(driver.find_element("id", "threshold-value").get_attribute("data-value")) == thresholds.image
    finally:
        driver.quit()
