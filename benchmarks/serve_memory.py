"""Memory of `trd serve` under large pairs: decoding cost per pixel, and a bounded load test.

    .venv/bin/python benchmarks/serve_memory.py --out benchmarks/results-cpu-serve-memory.json

1. **Bytes per pixel.** One pair of ``side`` x ``side`` pixels is read the way the service reads an
   upload (`trd.runtime.batches.load_batch`, the model's data settings) in a fresh process for each
   side, after a small pair was read; the peak RSS during the read (VmHWM, reset just before) above
   the RSS just before is divided by the pair's pixels. The pairs are a synthetic 128 px
   ``puck`` test pair enlarged (same scene and scale, more pixels; RGB PNG + zlib-compressed XYZ TIFF).
2. **Load test.** A real `trd serve` process (the demo-sized export, resnet18 teachers at 128 px,
   onnxruntime) gets ``--large-clients`` clients that each send ``--large-requests`` large pairs at
   once (sending a request again after a 503, as its Retry-After says), while one more client sends
   small 128 px pairs one after another until the large ones are done. Rows, alternating, on the same
   pairs: ``--pixel-budget`` of ``--budget-pairs`` large pairs (the bound) and a budget so large that
   only the request count limits admission (the service before the budget). Per row: the server's
   peak RSS (VmHWM), its RSS after a warm-up, the bound ``RSS after warm-up + budget x bytes per
   pixel`` (step 1's largest figure), answers of the large and small requests and the small ones'
   latency.

Everything runs pinned to ``--cpus``; the machine's load average is recorded with the results (peak
memory does not depend on it, timings do).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from serve import start_serve  # this folder: benchmarks/serve.py

ROOT = Path(__file__).resolve().parents[1]
SMALL = 128


def _pair(source: tuple[Path, Path], factor: int, folder: Path) -> tuple[Path, Path]:
    """The pair ``source`` enlarged ``factor`` times per side, written to ``folder``."""
    import tifffile
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rgb, xyz = folder / "large.png", folder / "large.tiff"
    Image.fromarray(np.asarray(Image.open(source[0])).repeat(factor, 0).repeat(factor, 1)).save(rgb)
    tifffile.imwrite(xyz, tifffile.imread(source[1]).repeat(factor, 0).repeat(factor, 1), photometric="rgb",
                     compression="zlib")
    return rgb, xyz


def measure_read(spec: dict[str, Any]) -> dict[str, Any]:
    """In this (fresh) process, once a small pair was read (imports and first-use allocations done):
    the peak RSS above the RSS before one large pair is read. The model is not loaded (its data
    settings are read from the export's metadata): memory it allocated and freed would be reused by
    the read and hide its cost."""
    import onnx

    from trd.config import Config
    from trd.data.samples import unlabelled_samples
    from trd.runtime.batches import load_batch
    from trd.runtime.ort import META_KEYS

    meta = {p.key: p.value for p in onnx.load(spec["onnx"], load_external_data=False).metadata_props}
    cfg = Config.from_dict(json.loads(meta[META_KEYS["config"]])).data
    warm, sample = (unlabelled_samples(cfg, rgb=Path(spec[f"{k}rgb"]), xyz=Path(spec[f"{k}xyz"]))[0][0]
                    for k in ("small_", ""))
    load_batch([warm], range(1), cfg)
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from the RSS now
    rss = _status_kb(os.getpid(), "VmRSS") * 1024
    start = time.perf_counter()
    batch = load_batch([sample], range(1), cfg)
    seconds = time.perf_counter() - start
    peak = _status_kb(os.getpid(), "VmHWM") * 1024
    assert not batch.errors, batch.errors
    pixels = spec["side"] ** 2
    return {"side": spec["side"], "pixels": pixels, "extra_mb": round((peak - rss) / 2**20, 1),
            "bytes_per_pixel": round((peak - rss) / pixels, 1), "read_s": round(seconds, 2)}


def _status_kb(pid: int, key: str) -> int:
    return int(Path(f"/proc/{pid}/status").read_text().split(f"{key}:")[1].split()[0])


def _files(rgb: Path, xyz: Path) -> dict[str, tuple[str, bytes, str]]:
    return {"rgb": (rgb.name, rgb.read_bytes(), "image/png"), "xyz": (xyz.name, xyz.read_bytes(), "image/tiff")}


def load_row(onnx: Path, large: tuple[Path, Path], small: tuple[Path, Path], budget: int, clients: int,
             requests: int) -> dict[str, Any]:
    """One load test against a fresh server with ``--pixel-budget budget``."""
    server, url = start_serve(onnx, "--pixel-budget", str(budget), "--max-upload-mb", "256")
    big, little = _files(*large), _files(*small)
    with httpx.Client(timeout=600) as http:
        assert http.post(f"{url}/v1/score", files=little).status_code == 200  # warm-up: the engine allocates
    base_kb = _status_kb(server.pid, "VmRSS")
    done = threading.Event()

    def send_large(_: int) -> tuple[int, int]:
        """(final status, 503s seen) of one large request, sent again after each 503."""
        retried = 0
        with httpx.Client(timeout=600) as http:
            while True:
                answer = http.post(f"{url}/v1/score", files=big)
                if answer.status_code != 503:
                    return answer.status_code, retried
                retried += 1
                time.sleep(float(answer.headers.get("Retry-After", "1")))

    def send_small() -> list[tuple[int, float]]:
        seen = []
        with httpx.Client(timeout=600) as http:
            while not done.is_set():
                start = time.perf_counter()
                code = http.post(f"{url}/v1/score", files=little).status_code
                seen.append((code, time.perf_counter() - start))
        return seen

    start = time.perf_counter()
    with ThreadPoolExecutor(clients + 1) as pool:
        smalls = pool.submit(send_small)
        larges = list(pool.map(send_large, range(clients * requests)))
        done.set()
        small_seen = smalls.result()
    wall = time.perf_counter() - start
    peak_kb = _status_kb(server.pid, "VmHWM")
    server.send_signal(signal.SIGTERM)
    server.communicate(timeout=120)
    latencies = [t for code, t in small_seen if code == 200]
    return {"pixel_budget": budget, "large_requests": len(larges), "large_ok": sum(c == 200 for c, _ in larges),
            "large_503_retries": sum(r for _, r in larges), "small_requests": len(small_seen),
            "small_ok": len(latencies), "small_p50_ms": round(float(np.percentile(latencies, 50)) * 1e3, 1),
            "small_p99_ms": round(float(np.percentile(latencies, 99)) * 1e3, 1), "wall_s": round(wall, 1),
            "rss_after_warmup_mb": round(base_kb / 1024, 1), "peak_rss_mb": round(peak_kb / 1024, 1),
            "exit_code": server.returncode}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpus", default="0,1", help="CPUs everything is pinned to")
    p.add_argument("--sides", default="512,1024,2048", help="pair sizes of the bytes-per-pixel measurement")
    p.add_argument("--large", type=int, default=16, help="large pair: the 128 px pair enlarged this many times")
    p.add_argument("--large-clients", type=int, default=4)
    p.add_argument("--large-requests", type=int, default=1, help="large pairs per client")
    p.add_argument("--budget-pairs", type=float, default=2.5,
                   help="the bounded row's budget, in large pairs (room for two and the small ones)")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results-cpu-serve-memory.json")
    args = p.parse_args(argv)
    cpus = {int(c) for c in args.cpus.split(",")}
    os.sched_setaffinity(0, cpus)  # inherited by every child process
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from engines import _model_file, child_result

    from trd.data.samples import list_samples
    from trd.data.synth import generate
    from trd.export.onnx import export_onnx

    with tempfile.TemporaryDirectory(prefix="trd-bench-serve-memory-") as tmp:
        work = Path(tmp)
        onnx = export_onnx(_model_file("demo", work), work / "demo.onnx")
        generate(work / "data", ["puck"], size=SMALL, n_train=1, n_validation=1, n_test_good=1, n_test_per_defect=1)
        small = next((s.rgb, s.xyz) for s in list_samples("mvtec3d", work / "data", "puck", "test") if s.label == 0)
        per_pixel = []
        for side in (int(s) for s in args.sides.split(",")):
            rgb, xyz = _pair(small, side // SMALL, work / f"side{side}")
            spec = {"onnx": str(onnx), "rgb": str(rgb), "xyz": str(xyz), "side": side,
                    "small_rgb": str(small[0]), "small_xyz": str(small[1])}
            per_pixel.append(child_result([sys.executable, __file__, "--measure", json.dumps(spec)], f"read {side}"))
            print(per_pixel[-1], flush=True)
        bytes_per_pixel = max(r["bytes_per_pixel"] for r in per_pixel)
        large = _pair(small, args.large, work / "large")
        large_px = (SMALL * args.large) ** 2
        budgets = {"bounded": int(args.budget_pairs * large_px), "count only": 10**12}
        runs: dict[str, list[dict[str, Any]]] = {}
        for rep in range(args.repeat):
            for name, budget in budgets.items():
                row = load_row(onnx, large, small, budget, args.large_clients, args.large_requests)
                runs.setdefault(name, []).append(row)
                print(f"{rep} {name}: {row}", flush=True)
    rows = {}
    for name, measured in runs.items():
        worst = max(measured, key=lambda r: r["peak_rss_mb"])
        rows[name] = worst | {"peak_rss_all_mb": [r["peak_rss_mb"] for r in measured]}
        if name == "bounded":
            rows[name]["bound_mb"] = round(worst["rss_after_warmup_mb"] + worst["pixel_budget"] * bytes_per_pixel / 2**20, 1)
    results = {"date": datetime.date.today().isoformat(), "cpus": args.cpus,
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
               "python": platform.python_version(), "load_1min_end": os.getloadavg()[0],
               "model": "demo size (resnet18, 128 px), ONNX, onnxruntime",
               "large_pair": f"{SMALL * args.large} x {SMALL * args.large} px ({large_px} px)",
               "load": f"{args.large_clients} clients x {args.large_requests} large pairs at once, 1 client of "
                       f"{SMALL} px pairs meanwhile", "bytes_per_pixel": per_pixel,
               "bytes_per_pixel_max": bytes_per_pixel, "rows": rows}
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--measure":
        print("RESULT " + json.dumps(measure_read(json.loads(sys.argv[2]))), flush=True)
    else:
        main()
