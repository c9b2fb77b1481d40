"""The pictures `trd predict` and `trd serve` write: PNG encoding by trd (`trd.runtime.heatmap.png_bytes`:
libpng through imagecodecs, level 1, run-length matching, "up" filter) against Pillow at level 1 (what
trd used before) and at its default level 6, in one run.

    .venv/bin/python benchmarks/png_encode.py --out benchmarks/results-cpu-png.json

Pictures of synthetic ``puck`` scans (`trd.data.synth`, 10 scans, 5 of them with a defect): the
800 x 800 outline picture (the RGB image with a region's outline drawn, `draw_outlines`), a 128 px
heatmap overlay and a 128 px mask, as predict writes them. The process is pinned to one CPU
(``--cpu``); each encoder encodes every picture of a kind ``--repeat`` times, encoders in turn;
CPU time per picture (the minimum over repeats of the mean over pictures) and the mean size are
reported, and every encoding is first decoded by Pillow and checked to hold the same pixels.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from trd.data.synth import render_sample
from trd.runtime.heatmap import draw_outlines, overlay, png_bytes


def _pillow(level: int) -> Callable[[np.ndarray], bytes]:
    def encode(img: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG", compress_level=level)
        return buf.getvalue()

    return encode


ENCODERS: dict[str, Callable[[np.ndarray], bytes]] = {
    "trd (libpng, level 1, RLE, up)": png_bytes, "Pillow level 1 (before)": _pillow(1), "Pillow level 6": _pillow(6)}


def _pictures(n: int) -> dict[str, list[np.ndarray]]:
    """The three kinds of picture of ``n`` synthetic scans (every second one with a 'crack')."""
    rng = np.random.default_rng(0)
    out: dict[str, list[np.ndarray]] = {"outline 800 x 800 RGB": [], "heatmap 128 px RGB": [], "mask 128 px": []}
    gy, gx = np.mgrid[0:128, 0:128]
    for i in range(n):
        rgb, _, _ = render_sample(rng, 800, "puck", "crack" if i % 2 else "good")
        cx, cy = 300 + 20 * i, 420 - 10 * i
        ring = [(cx + 40 * np.cos(a), cy + 30 * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 120, endpoint=False)]
        out["outline 800 x 800 RGB"].append(draw_outlines(rgb, [([ring], True)]))
        small = np.asarray(Image.fromarray(rgb).resize((128, 128), Image.BILINEAR))
        amap = 4.0 * np.exp(-((gx - 64) ** 2 + (gy - 60 - i) ** 2) / 300.0) + rng.normal(0, 0.2, (128, 128))
        out["heatmap 128 px RGB"].append(overlay(small, amap, 0.0, 4.0))
        out["mask 128 px"].append((amap > 2.0).astype(np.uint8) * 255)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scans", type=int, default=10)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--cpu", type=int, default=0, help="the CPU the process is pinned to")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    load_before = os.getloadavg()[0]
    pictures = _pictures(args.scans)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for kind, imgs in pictures.items():
        rows: dict[str, list[float]] = {name: [] for name in ENCODERS}
        sizes: dict[str, float] = {}
        for name, encode in ENCODERS.items():  # correctness first, and a warm-up
            encoded = [encode(img) for img in imgs]
            assert all(np.array_equal(np.asarray(Image.open(io.BytesIO(e))), img) for e, img in zip(encoded, imgs)), name
            sizes[name] = float(np.mean([len(e) for e in encoded]))
        for _ in range(args.repeat):
            for name, encode in ENCODERS.items():
                start = time.process_time()
                for img in imgs:
                    encode(img)
                rows[name].append((time.process_time() - start) / len(imgs) * 1e3)
        results[kind] = {name: {"cpu_ms": round(min(t), 3), "kb": round(sizes[name] / 1024, 1)} for name, t in rows.items()}
    report = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "pinned_cpu": args.cpu, "scans": args.scans, "repeat": args.repeat,
              "load_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
              "results": results}
    print("| picture | encoder | CPU ms per picture | KB | vs Pillow level 1 |")
    print("|---|---|---|---|---|")
    for kind, rows_ in results.items():
        base = rows_["Pillow level 1 (before)"]["cpu_ms"]
        for name, row in rows_.items():
            print(f"| {kind} | {name} | {row['cpu_ms']:.2f} | {row['kb']:.0f} | {base / row['cpu_ms']:.2f}x |")
    print(f"\nload average {report['load_1min']}; pinned to CPU {args.cpu}; {report['date']}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
