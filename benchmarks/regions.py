"""How exact are the defect regions' sizes? Measured on the synthetic generator's own defects.

`trd.data.synth` renders each defect from known geometry and reports its true area and depth
(`DefectTruth`, from the noise-free surfaces). For each category and geometric defect type this
script renders N scans per resolution, takes each defect's ground-truth mask as the flagged map
(so the measurement is tested, not a model's localisation) and compares what
`trd.scoring.regions.find_regions` measures in the noisy cloud (0.2 mm z noise, missing points)
with the truth. It also times the measurement on an 800 x 800 scan (MVTec 3D-AD's size), measured
beside its baseline in the same run: reading that scan's cloud from its TIFF.

    .venv/bin/python benchmarks/regions.py --n 20 --sizes 128 256

Prints Markdown tables (docs/REGIONS.md).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from trd.data.synth import SYNTH_CATEGORIES, render_with_truth
from trd.scoring.regions import find_regions, object_pixels


def accuracy(size: int, n: int) -> list[str]:
    """Markdown rows: per category and defect type, pixel range, area and depth errors."""
    rows = []
    for category in SYNTH_CATEGORIES:
        for defect in ("dent", "crack"):
            pixels, area, depth = [], [], []
            for seed in range(n):
                _, xyz, mask, truth = render_with_truth(np.random.default_rng(1000 + seed), size, category, defect)
                regions, _ = find_regions(mask.astype(float), 0.5, xyz=xyz, on_object=object_pixels(xyz))
                region = regions[0]
                pixels.append(truth.pixels)
                area.append(region.area_mm2 / truth.area_mm2 - 1.0)
                depth.append(region.depth_mm - truth.depth_mm)
            area_pct, depth_mm = 100 * np.asarray(area), np.asarray(depth)
            rows.append(f"| {size} px ({100 / size:.2f} mm) | {category} | {defect} | {n} | {min(pixels)}-{max(pixels)} | "
                        f"{np.mean(area_pct):+.1f} % | {np.max(np.abs(area_pct)):.1f} % | "
                        f"{np.mean(depth_mm):+.3f} | {np.max(np.abs(depth_mm)):.3f} |")
    return rows


def timing(repeats: int) -> list[str]:
    """Markdown rows: seconds to measure one dent's region in an 800 x 800 scan, and to read the scan."""
    _, xyz, mask, truth = render_with_truth(np.random.default_rng(7), 800, "puck", "dent")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scan.tiff"
        tifffile.imwrite(path, xyz, photometric="rgb")
        read, measure = [], []
        for _ in range(repeats):  # interleaved: both see the same load
            start = time.perf_counter()
            cloud = tifffile.imread(path)
            read.append(time.perf_counter() - start)
            start = time.perf_counter()
            find_regions(mask.astype(float), 0.5, xyz=cloud, on_object=object_pixels(cloud))
            measure.append(time.perf_counter() - start)
    return [f"| read the 800 x 800 XYZ TIFF (baseline) | {1e3 * np.median(read):.1f} ms |",
            f"| object mask + regions + measurement ({truth.pixels} px dent) | {1e3 * np.median(measure):.1f} ms |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="Scans per category, defect type and size.")
    parser.add_argument("--sizes", type=int, nargs="*", default=[128, 256], help="Scan sizes (none: timing only).")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs\n")
    print("| scan (pixel pitch) | category | defect | scans | defect pixels | area error mean | area error max | "
          "depth error mean (mm) | depth error max (mm) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        print("\n".join(accuracy(size, args.n)))
    print("\n| step | median time |\n|---|---|")
    print("\n".join(timing(args.repeats)))


if __name__ == "__main__":
    main()
