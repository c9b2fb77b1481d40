"""report.html in a real headless browser: readable without scrolling sideways.

Needs a Chromium binary (Debian: ``apt-get install chromium``); skipped where there is none. The
report itself has no scripts: a copy of it gets a small probe that writes, after layout, how far the
page is wider than the window into the DOM, which ``--dump-dom`` prints.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trd.reporting.figures import Picture
from trd.reporting.report import SampleRow, write_report
from trd.reporting.sections import Section, Table

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no chromium to render the report with")

PROBE = ('<script>window.addEventListener("load", () => {const d = document.documentElement;'
         'document.body.setAttribute("data-overflow", String(d.scrollWidth - window.innerWidth));});</script>')


def _overflow(html: Path, width: int) -> int:
    """How many px the page is wider than a ``width`` px window (<= 0: no sideways scrolling)."""
    probe = html.with_name("probe.html")
    probe.write_text(html.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    proc = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--window-size={width},900", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=120)
    match = re.search(r'data-overflow="(-?\d+)"', proc.stdout)
    assert match, proc.stderr[-2000:]
    return int(match.group(1))


def _wide_report(folder: Path) -> Path:
    """A report with a 12-column metric table, long texts, and six 800 px pictures per sample."""
    metrics = {f"aupro@{lim}": 0.5 for lim in (0.3, 0.1, 0.05, 0.01)} | {
        k: 0.9 for k in ("i_auroc", "i_ap", "i_f1max", "p_auroc", "p_ap", "p_f1max")}
    result = {"overall": metrics, "per_defect": {d: metrics for d in ("color", "crack", "dent")},
              "per_branch": {"rgb": metrics, "geo": metrics}}
    (folder / "samples").mkdir(parents=True)
    Image.fromarray(np.full((800, 800, 3), 128, np.uint8)).save(folder / "samples" / "p.png")
    pictures = [Picture("samples/p.png", f"picture {k} with a long caption that wraps", (0.0, 8.5, 2.1) if k > 1 else None)
                for k in range(6)]
    rows = [SampleRow(name=f"crack/{i:03d}", category="puck", defect="crack", label=1, score=float(i), decision=True,
                      branch_shares={"rgb": 1.0, "geo": 2.0}, pictures=pictures, regions=["Region 1: " + "x" * 200],
                      attribution={"colour": 0.1, "geometry": 2.0}) for i in range(3)]
    long = "a very long sentence that has to wrap " * 20
    section = Section("Decisions", warnings=[long], paragraphs=[long],
                      tables=[Table(["decision", "threshold", "promised", "realised on this split", "95 % CI"],
                                    [["good image with > 1 % of its pixels flagged", "1.9167", "<= 9.09 % (n = 10)",
                                      "1 of 10 = 10 %", "0.253 % to 44.5 %"]])])
    return write_report(folder, title="TRD on puck / test", result=result, rows=rows,
                        config={"model": {"weights": "none"}, "data": {"root": "/" + "x" * 300}},
                        notes=[long], sections=[section])


def test_report_needs_no_sideways_scrolling(tmp_path: Path) -> None:
    html = _wide_report(tmp_path)
    for width in (1280, 800, 390):  # down to a phone's screen
        assert _overflow(html, width) <= 0, width
    # the probe can fail: a page with a fixed 3000 px element does scroll sideways
    broken = tmp_path / "broken.html"
    broken.write_text(html.read_text(encoding="utf-8").replace("<body>", '<body><div style="width:3000px">x</div>'),
                      encoding="utf-8")
    assert _overflow(broken, 1280) > 1000
