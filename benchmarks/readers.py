"""Point-cloud readers: one organised 1944 x 1200 cloud (a Zivid 2 frame) read as XYZ TIFF, PCD and PLY.

    .venv/bin/python benchmarks/readers.py --out benchmarks/results-cpu-readers.json
    PYTHONPATH=LIBS .venv/bin/python benchmarks/readers.py --out ...   # LIBS holding pypcd4 and plyfile: their rows too

The process is pinned to one CPU (``--cpu``; `os.sched_setaffinity`) and reads each file ``--repeat``
times, the files in turn (interleaved, so a burst of load from elsewhere hits every reader alike);
the median and the fastest wall time and the median CPU time of the process (user + system: the
work done on the one core, which other processes on the machine inflate far less than wall time)
are reported, with the XYZ TIFF read (tifffile, what trd read before) as the baseline, measured in
the same run. Every reader's result is first checked to be bit-identical to the written cloud
(missing points (0, 0, 0)). The machine's load average is recorded before and after: wall times
taken under load are slower than on a quiet core.

Where ``pypcd4`` and ``plyfile`` can be imported (they are not dependencies of trd), the same files
are also read with them plus the numpy glue trd would need (organise, NaN to 0): the numbers behind
the choice of hand-written readers (benchmarks/README.md, "Point-cloud readers"). The depth-PNG rows
time a 16-bit depth PNG back-projected (0.1 mm per count) and the coarse-step check alone.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/cloud_writers.py: the files' writers

from tests.cloud_writers import write_pcd, write_ply  # noqa: E402
from trd.data.readers.depth_png import Camera, coarse_steps, read_depth_png  # noqa: E402
from trd.data.readers.pcd import read_pcd  # noqa: E402
from trd.data.readers.ply import read_ply  # noqa: E402
from trd.data.readers.xyz_tiff import read_xyz  # noqa: E402

FX = 2200.0  # pixels: a 1944-px sensor seeing ~0.5 m of the scene at 0.6 m


def make_cloud(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A tilted, bumpy surface 0.6 m away through a pinhole camera, metres; 5 % of the points missing
    ((0, 0, 0)): 3 % speckle and a block, as a scanner loses them on edges and shiny patches."""
    rows, cols = np.indices((height, width), dtype=np.float64)
    z = 0.6 + 0.05 * cols / width + 0.01 * np.sin(cols / 37.0) * np.cos(rows / 53.0)
    xyz = np.stack([(cols - width / 2) * z / FX, (rows - height / 2) * z / FX, z], axis=2).astype(np.float32)
    rng = np.random.default_rng(seed)
    xyz[rng.random((height, width)) < 0.03] = 0.0
    xyz[height // 3: height // 3 + height // 10, width // 2: width // 2 + width // 5] = 0.0
    return xyz


def _with_nan(xyz: np.ndarray) -> np.ndarray:
    out = xyz.copy()
    out[(xyz == 0).all(axis=2)] = np.nan
    return out


def write_files(folder: Path, xyz: np.ndarray) -> dict[str, Path]:
    nan = _with_nan(xyz)
    h, w = xyz.shape[:2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tifffile.imwrite(folder / "cloud.tiff", xyz, photometric="rgb")
    grid = (f"obj_info num_cols {w}", f"obj_info num_rows {h}")
    files = {"XYZ TIFF": folder / "cloud.tiff",
             "PCD binary": write_pcd(folder / "binary.pcd", nan),
             "PCD binary_compressed": write_pcd(folder / "compressed.pcd", nan, "binary_compressed"),
             "PCD ascii": write_pcd(folder / "ascii.pcd", nan, "ascii"),
             "PLY binary LE": write_ply(folder / "le.ply", nan, notes=grid),
             "PLY binary BE, grid from the RGB": write_ply(folder / "be.ply", xyz, "binary_big_endian"),
             "PLY ascii": write_ply(folder / "ascii.ply", nan, "ascii", notes=grid)}
    depth = np.round(xyz[..., 2].astype(np.float64) / 1e-4).astype(np.uint16)  # 0.1 mm per count
    Image.fromarray(depth).save(folder / "depth.png")
    files["depth PNG (0.1 mm)"] = folder / "depth.png"
    return files


def _organised(xyz: np.ndarray, h: int, w: int) -> np.ndarray:
    """The glue a library reader needs: HxWx3 float32, every non-finite point (0, 0, 0)."""
    out = np.ascontiguousarray(xyz, dtype=np.float32).reshape(h, w, 3)
    out[~np.isfinite(out).all(axis=2)] = 0.0
    return out


def library_readers(h: int, w: int) -> dict[str, Callable[[Path], np.ndarray]]:
    """pypcd4 / plyfile readers with the glue, where the libraries can be imported."""
    out: dict[str, Callable[[Path], np.ndarray]] = {}
    try:
        import pypcd4

        def pcd(path: Path) -> np.ndarray:
            return _organised(pypcd4.PointCloud.from_path(path).numpy(("x", "y", "z")), h, w)

        out["pypcd4"] = pcd
    except ImportError:
        pass
    try:
        import plyfile

        def ply(path: Path) -> np.ndarray:
            vertex = plyfile.PlyData.read(str(path))["vertex"]
            return _organised(np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1), h, w)

        out["plyfile"] = ply
    except ImportError:
        pass
    return out


def readers(files: dict[str, Path], xyz: np.ndarray) -> dict[str, tuple[str, Callable[[], np.ndarray]]]:
    """row name -> (file kind, read function), trd's readers first, then the libraries'."""
    h, w = xyz.shape[:2]
    camera = Camera(FX, FX, w / 2, h / 2, 1e-4)
    rows: dict[str, tuple[str, Callable[[], np.ndarray]]] = {}
    for kind, path in files.items():
        if kind == "XYZ TIFF":
            rows[f"{kind} (tifffile, baseline)"] = (kind, lambda p=path: read_xyz(p))
        elif kind.startswith("PCD"):
            rows[f"{kind} (trd)"] = (kind, lambda p=path: read_pcd(p))
        elif kind.startswith("PLY"):
            rows[f"{kind} (trd)"] = (kind, lambda p=path: read_ply(p, rgb_hw=(h, w)))
        else:
            rows[f"{kind}, back-projected (trd)"] = (kind, lambda p=path: read_depth_png(p, camera))
            counts = np.asarray(Image.open(path))
            rows[f"{kind}: coarse-step check alone"] = (kind, lambda c=counts: coarse_steps(c, 1e-4))
    for library, read in library_readers(h, w).items():
        for kind, path in files.items():
            if kind.startswith("PCD" if library == "pypcd4" else "PLY"):
                rows[f"{kind} ({library} + glue)"] = (kind, lambda p=path, r=read: r(p))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--height", type=int, default=1200)
    parser.add_argument("--width", type=int, default=1944)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cpu", type=int, default=0, help="the CPU this process is pinned to")
    parser.add_argument("--out", type=Path, default=None, help="results JSON")
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    load_before = os.getloadavg()
    xyz = make_cloud(args.height, args.width)
    results: dict[str, Any] = {"date": datetime.date.today().isoformat(), "cloud": [args.height, args.width],
                               "cpu": args.cpu, "machine": f"{platform.processor() or platform.machine()}, "
                               f"{os.cpu_count()} CPUs", "python": platform.python_version(),
                               "numpy": np.__version__, "repeat": args.repeat, "rows": {}}
    with tempfile.TemporaryDirectory() as tmp:
        files = write_files(Path(tmp), xyz)
        rows = readers(files, xyz)
        times: dict[str, list[float]] = {name: [] for name in rows}
        cpu: dict[str, list[float]] = {name: [] for name in rows}
        for name, (kind, read) in rows.items():  # correctness first, and a warm-up
            got = read()
            if isinstance(got, np.ndarray) and "depth" not in kind:
                assert np.array_equal(got, xyz), f"{name}: not the written cloud"
        for _ in range(args.repeat):
            for name, (_, read) in rows.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                read()
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
        baseline = statistics.median(next(t for n, t in times.items() if "baseline" in n))
        for name, (kind, _) in rows.items():
            median = statistics.median(times[name])
            results["rows"][name] = {"file": kind, "mb": round(files[kind].stat().st_size / 1e6, 1),
                                     "median_s": round(median, 4), "min_s": round(min(times[name]), 4),
                                     "cpu_median_s": round(statistics.median(cpu[name]), 4),
                                     "x_tiff": round(median / baseline, 1)}
    results["load_1min"] = {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)}
    print(f"{args.width} x {args.height} cloud, one pinned CPU ({args.cpu}), median of {args.repeat}; "
          f"load {results['load_1min']['before']} -> {results['load_1min']['after']}")
    print(f"{'reader':58s} {'MB':>6s} {'median s':>9s} {'min s':>7s} {'CPU s':>7s} {'x TIFF':>7s}")
    for name, row in results["rows"].items():
        print(f"{name:58s} {row['mb']:6.1f} {row['median_s']:9.3f} {row['min_s']:7.3f} {row['cpu_median_s']:7.3f} "
              f"{row['x_tiff']:7.1f}")
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
