"""Screenshots of a run's report.html at a desktop and a phone width, for looking at it (docs/images).

Opens ``RUN/report.html`` in headless Chromium (Debian's chromium + chromium-driver, selenium; the
helpers of tests/serve/browser.py) and saves, per width, the top of the report (banner, words,
decisions) and the first test sample's card, each as a PNG under 300 KB.

    .venv/bin/python scripts/screenshot_report.py runs/demo/puck/trd/report.html --out docs/images
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "serve"))  # the browser helpers the page's test uses
from browser import missing, set_viewport, start_chrome  # noqa: E402

from trd.atomic import atomic_write_bytes  # noqa: E402

MAX_BYTES = 300_000


def small_png(png: bytes) -> bytes:
    """``png`` itself when under MAX_BYTES, else reduced to a 256-colour palette."""
    if len(png) < MAX_BYTES:
        return png
    out = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").quantize(256).save(out, format="PNG", optimize=True)
    return out.getvalue()


def shots(report: Path, width: int, profile: Path) -> dict[str, bytes]:
    """{"top": ..., "sample": ...} screenshots of ``report`` in a ``width`` px window."""
    driver = start_chrome(profile, width=width)
    try:
        set_viewport(driver, width, 1400)
        driver.get(report.resolve().as_uri())
        driver.execute_script("document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
        driver.execute_script("document.querySelector('details')?.setAttribute('open', '')")
        top = driver.get_screenshot_as_png()
        card = driver.find_element("css selector", ".sample")
        driver.execute_script("arguments[0].scrollIntoView()", card)
        height = int(driver.execute_script("return arguments[0].getBoundingClientRect().height", card))
        set_viewport(driver, width, min(max(height + 20, 400), 2400))
        driver.execute_script("arguments[0].scrollIntoView()", card)
        return {"top": top, "sample": card.screenshot_as_png}
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--widths", type=int, nargs="+", default=[1280, 390])
    args = parser.parse_args()
    if missing():
        raise SystemExit(f"cannot take the screenshots: {missing()}")
    with tempfile.TemporaryDirectory(prefix="trd-screenshot-") as tmp:
        for width in args.widths:
            for name, png in shots(args.report, width, Path(tmp) / f"profile-{width}").items():
                path = args.out / f"report-{name}-{width}.png"
                data = small_png(png)
                atomic_write_bytes(path, data)
                print(f"wrote {path} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
