"""What storing a result costs: `trd.store.Store.add` per record against the ledger line predict already writes.

Rows, each run ``--repeats`` times, alternating (so load changes hit every row alike):

- ``ledger line``: `trd.workflows.predict.Ledger.append` (one JSON line, fsynced): the baseline,
  what every scored sample already cost before the store;
- ``store row``: `Store.add` of the record alone (SQLite, WAL, synchronous=FULL);
- ``store row + files``: `Store.stage` + `Store.add` with the files a served scan keeps (its RGB PNG
  and XYZ TIFF as uploaded, and the result's images at the model's resolution), each fsynced;
- with ``--pg-url``: the same two rows on a PostgreSQL store (files on local disk).

Prints a table (median and p99 milliseconds per record, records per second) with the machine's load,
and writes ``--out`` JSON.

    .venv/bin/python benchmarks/store.py --size 256 --records 200 --out benchmarks/results-cpu-store.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from trd.store import Retention, open_store
from trd.workflows.predict import Ledger


def _files(folder: Path, size: int, rng: np.random.Generator) -> tuple[dict[str, Path], dict[str, bytes]]:
    rgb = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "scan.png")
    tifffile.imwrite(folder / "scan.tiff", rng.random((size, size, 3), dtype=np.float32))
    png = io.BytesIO()
    Image.fromarray(rgb[: size // 2, : size // 2]).save(png, format="PNG")  # images at a model's resolution
    images = {name: png.getvalue() for name in ("view-rgb.png", "view-3d.png", "heatmap-fused.png", "heatmap-rgb.png",
                                                "heatmap-geo.png", "mask.png")}
    return {"rgb.png": folder / "scan.png", "3d.tiff": folder / "scan.tiff"}, images


def _record(i: int, rep: int) -> dict:
    return {"schema": "trd.record/1", "name": f"{i:05d}", "key": f"{rep:02d}-{i:08d}", "rgb": "scan.png",
            "xyz": "scan.tiff", "score": 1.0 + i / 1000, "anomalous": i % 10 == 0, "image_threshold": 1.5,
            "threshold": {"image": 1.5, "pixel": 1.2, "target_fpr": 0.01, "guaranteed_fpr": 0.0909,
                          "validation_samples": 10, "statement": "image threshold 1.5000: false-positive rate <= 9.09 %"},
            "branch_shares": {"rgb": 0.6, "geo": 0.4}, "timings_ms": {"read": 5.0, "score": 40.0, "total": 50.0},
            "model": {"sha256": "d" * 64, "engine": "onnxruntime", "trd_version": "0.1.0"},
            "heatmap": "heatmaps/x.png", "mask": "masks/x.png"}


def _time(action, n: int) -> list[float]:  # noqa: ANN001
    times = []
    for i in range(n):
        start = time.perf_counter()
        action(i)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256, help="side of the scan's RGB image and XYZ TIFF (px)")
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pg-url", default=None, help="a PostgreSQL database to compare (postgresql://...)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows: dict[str, list[list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="trd-store-bench-") as tmp:
        root = Path(tmp)
        copies, images = _files(root, args.size, rng)
        scan_kb = sum(p.stat().st_size for p in copies.values()) / 1024
        for rep in range(args.repeats):
            (root / f"ledger{rep}").mkdir()
            ledger = Ledger(root / f"ledger{rep}", print)
            stores = {"SQLite": open_store(str(root / f"s{rep}.db"), retention=Retention(), log=lambda _: None)}
            if args.pg_url:
                stores["PostgreSQL"] = open_store(args.pg_url, str(root / f"pgfiles{rep}"), Retention(), lambda _: None)
            rows.setdefault("ledger line (baseline)", []).append(
                _time(lambda i: ledger.append(_record(i, rep)), args.records))
            for name, store in stores.items():
                rows.setdefault(f"{name} store row", []).append(
                    _time(lambda i, s=store: s.add(_record(i, rep), source="predict"), args.records))
                rows.setdefault(f"{name} store row + files", []).append(_time(
                    lambda i, s=store: s.add(_record(i + args.records, rep), source="predict", kind="xyz_tiff",
                                             staged=s.stage(copies, images)), args.records))
                store.close()
    load = os.getloadavg()
    table = ["| row | ms per record, p50 | p99 | records/s (median of runs; all) |", "|---|---|---|---|"]
    results = {}
    for name, runs in rows.items():
        flat = sorted(t for run in runs for t in run)
        rates = [1e3 * len(run) / sum(run) for run in runs]
        results[name] = {"p50_ms": statistics.median(flat), "p99_ms": flat[int(0.99 * (len(flat) - 1))],
                         "per_s_runs": rates}
        table.append(f"| {name} | {results[name]['p50_ms']:.2f} | {results[name]['p99_ms']:.2f} | "
                     f"{statistics.median(rates):.0f} ({', '.join(f'{r:.0f}' for r in rates)}) |")
    about = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
             "cpus": os.cpu_count(), "load_average_1_5_15": load, "size_px": args.size, "records": args.records,
             "repeats": args.repeats, "scan_kb": scan_kb, "images_kb": sum(len(v) for v in images.values()) / 1024}
    print("\n".join(table))
    print(json.dumps(about))
    if args.out:
        args.out.write_text(json.dumps({"about": about, "rows": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
