"""Regenerate docs/images/serve.png: the review page of `trd serve` after scoring an anomalous scan.

Makes synthetic data (category puck, 128 px), trains the demo's small model on it (the settings of
`trd demo`), exports it to ONNX, serves the export on a free loopback port, scores every synthetic
defect pair through the API, uploads the highest-scoring anomalous one through the page in headless
Chromium (Debian's chromium + chromium-driver, selenium) and saves a full-page screenshot as a PNG
under 300 KB. Every step is the real command or endpoint; nothing is staged.

    .venv/bin/python scripts/screenshot_serve.py                              # ~3 min on one core
    .venv/bin/python scripts/screenshot_serve.py --backbone-weights none      # offline: random teachers
    .venv/bin/python scripts/screenshot_serve.py --model puck.onnx            # an existing puck export
"""

from __future__ import annotations

import argparse
import io
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from PIL import Image
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "serve"))  # the browser helpers the page's test uses
from browser import images_loaded, missing, set_viewport, start_chrome  # noqa: E402

from trd.atomic import atomic_write_bytes  # noqa: E402
from trd.workflows.demo import DEMO_OVERRIDES  # noqa: E402

MAX_BYTES = 300_000
WIDTH = 1280


def trd(*args: str | Path) -> None:
    """Run a trd command in this interpreter's environment; stop on failure."""
    subprocess.run([sys.executable, "-m", "trd.cli", *map(str, args)], check=True)


def demo_model(work: Path, weights: str) -> Path:
    """The demo's model trained on ``work/data`` (puck), exported to ONNX."""
    overrides = [arg for o in DEMO_OVERRIDES for arg in ("--set", o)]
    trd("fit", "--data", work / "data", "--category", "puck", "--out", work / "run", "--no-test",
        "--backbone-weights", weights, *overrides)
    trd("export", "--model", work / "run" / "model.pt", "--format", "onnx", "--out", work / "puck.onnx")
    return work / "puck.onnx"


def start_server(model: Path) -> tuple[subprocess.Popen[str], str]:
    """`trd serve` on a free loopback port, and its URL once it accepts requests."""
    proc = subprocess.Popen([sys.executable, "-m", "trd.cli", "serve", "--model", str(model), "--port", "0",
                             "--recent", "6"],
                            stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:  # type: ignore[union-attr]
        found = re.search(r"trd serve: (http://\S+?)/? ", line)
        if found:
            return proc, found.group(1)
    raise SystemExit(f"trd serve exited with code {proc.wait()} before listening")


def most_anomalous(url: str, data: Path) -> tuple[Path, Path, float]:
    """The synthetic defect pair with the highest score among those the model calls anomalous (or
    among all defect pairs, said so, when a weak model flags none)."""
    found = []
    for rgb in sorted(data.glob("puck/test/*/rgb/*.png")):
        if rgb.parts[-3] == "good":
            continue
        xyz = rgb.parent.parent / "xyz" / f"{rgb.stem}.tiff"
        files = {"rgb": (rgb.name, rgb.read_bytes()), "xyz": (xyz.name, xyz.read_bytes())}
        answer = httpx.post(f"{url}/v1/score", files=files, timeout=120)
        answer.raise_for_status()
        record = answer.json()
        found.append((record["anomalous"], record["score"], rgb, xyz))
    flagged, score, rgb, xyz = max(found)
    print(f"screenshot of {rgb.parts[-3]}/{rgb.name}: score {score:.4f} "
          f"({'anomalous' if flagged else 'no defect pair is flagged by this model: the highest-scoring one'})")
    return rgb, xyz, score


def screenshot(url: str, rgb: Path, xyz: Path, profile: Path, width: int = WIDTH) -> bytes:
    """The whole page, ``width`` px wide, after uploading ``rgb`` + ``xyz`` through its file inputs."""
    driver = start_chrome(profile)
    try:
        set_viewport(driver, width, 900)
        driver.get(url + "/")
        driver.find_element("id", "rgb-file").send_keys(str(rgb))
        driver.find_element("id", "xyz-file").send_keys(str(xyz))
        driver.find_element("id", "score-button").click()
        WebDriverWait(driver, 120).until(lambda d: images_loaded(d, "#images img"))
        set_viewport(driver, width, int(driver.execute_script("return document.documentElement.scrollHeight")))
        return driver.get_screenshot_as_png()
    finally:
        driver.quit()


def small_png(png: bytes) -> bytes:
    """``png`` itself when under MAX_BYTES, else reduced to a 256-colour palette (UI and heatmaps keep)."""
    if len(png) < MAX_BYTES:
        return png
    out = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").quantize(256).save(out, format="PNG", optimize=True)
    if out.tell() >= MAX_BYTES:
        raise SystemExit(f"the screenshot is {out.tell()} bytes even with 256 colours (limit {MAX_BYTES})")
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "serve.png")
    parser.add_argument("--model", type=Path, default=None, help="An ONNX export of a puck model (skip training).")
    parser.add_argument("--backbone-weights", default="imagenet", help="Teachers of the trained model (none: random).")
    parser.add_argument("--work", type=Path, default=None, help="Working folder (default: a temporary one).")
    parser.add_argument("--width", type=int, default=WIDTH, help="Page width in px (390: a phone).")
    args = parser.parse_args()
    if missing():
        raise SystemExit(f"cannot take the screenshot: {missing()}")
    with tempfile.TemporaryDirectory(prefix="trd-screenshot-") as tmp:
        work = args.work or Path(tmp)
        trd("synth", "--out", work / "data", "--categories", "puck", "--size", "128", "--n-train", "40",
            "--n-validation", "20", "--n-test-good", "2", "--n-test-per-defect", "4")
        model = args.model or demo_model(work, args.backbone_weights)
        server, url = start_server(model)
        try:
            rgb, xyz, _ = most_anomalous(url, work / "data")
            png = small_png(screenshot(url, rgb, xyz, work / "chromium-profile", args.width))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    atomic_write_bytes(args.out, png)
    print(f"wrote {args.out} ({len(png)} bytes)")


if __name__ == "__main__":
    main()
