"""Headless Chromium driven by selenium, for the review page's test and its README screenshot.

Debian's ``chromium`` and ``chromium-driver`` packages (``.ci/run`` installs them when missing) and
the ``selenium`` package (dev extra). The driver is given by path, so selenium never tries to
download one, and the browser starts with a fresh profile and its background services off, so the
only requests it makes are the page's own.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
DRIVER = shutil.which("chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def missing() -> str | None:
    """Why no browser test can run here (None: everything is installed)."""
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (it is in the dev extra: pip install -e '.[dev]')"
    if CHROMIUM is None:
        return "no chromium binary on PATH (Debian: apt-get install chromium; .ci/run installs it)"
    if DRIVER is None:
        return "no chromedriver on PATH (Debian: apt-get install chromium-driver; .ci/run installs it)"
    return None


def start_chrome(profile: Path, width: int = 1280, height: int = 900) -> Any:
    """A headless Chromium (selenium WebDriver) with a fresh profile in ``profile`` and a window of
    ``width`` x ``height`` CSS px."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def set_viewport(driver: Any, width: int, height: int) -> None:
    """Make the page's viewport ``width`` x ``height`` CSS px, whatever the window decorations."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})


def overflow(driver: Any) -> int:
    """How many px the page is wider than its viewport (<= 0: no sideways scrolling)."""
    return int(driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth"))


def images_loaded(driver: Any, selector: str) -> list[str] | None:
    """Ids of the ``selector`` images once all are loaded with pixels (naturalWidth > 0); else None."""
    return driver.execute_script(
        "const imgs = [...document.querySelectorAll(arguments[0])];"
        "return imgs.length && imgs.every(i => i.complete && i.naturalWidth > 0) ? imgs.map(i => i.id) : null;",
        selector)
