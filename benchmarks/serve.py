"""A bounded load test of `trd serve` on loopback, against in-process predict in the same run.

    .venv/bin/python benchmarks/serve.py --cpus 1 --out benchmarks/results-cpu-serve.json

The model is the demo's size (resnet18 teachers, 128 px, random weights: speed does not depend on
them), exported to ONNX; the scans are 8 synthetic ``puck`` test pairs (128 px RGB PNG + XYZ TIFF).
Everything runs pinned to ``--cpus`` (default CPU 1: CPU 0 of the benchmark machine is kept for
other work): the server (a real `trd serve` process, one engine thread per pinned CPU), the clients
(threads of this process, httpx) and the in-process rows. On one CPU the clients' own work (encoding
uploads) competes with the server's, as it would on a line PC that runs both.

Rows, each over the same pairs:

- ``serve``: ``--clients`` concurrent clients x ``--requests`` requests each (``POST /v1/score``,
  the pairs in turn), default options (micro-batches of up to 8, 5 ms wait, queue 32);
- ``serve --max-batch 1``: the same load without micro-batching;
- ``predict_samples``: `trd.workflows.predict.predict_samples`, batches of 8, what ``trd predict``
  runs after start-up (read, score, write heatmap and mask PNGs, append the synced record);
- ``engine``: the engine call alone on a batch of 8 preloaded inputs (the ceiling).

Per row: throughput (scans/s), latency per scan p50/p99 (serve: per request, seen by the client;
predict: wall time of a batch divided by its size), and requests lost (any answer but 200, or no
answer); the serve rows also give the mean batch size the service formed (from ``/metrics``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _inputs(work: Path) -> tuple[Path, list[tuple[Path, Path]]]:
    """The demo-sized export and 8 synthetic test pairs."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from engines import _model_file

    from trd.data.samples import list_samples
    from trd.data.synth import generate
    from trd.export.onnx import export_onnx

    onnx = work / "demo.onnx"
    export_onnx(_model_file("demo", work), onnx, log=lambda _: None)
    generate(work / "data", ["puck"], size=128, n_train=1, n_validation=1, n_test_good=2, n_test_per_defect=2)
    pairs = [(s.rgb, s.xyz) for s in list_samples("mvtec3d", work / "data", "puck", "test")][:8]
    return onnx, pairs


def _cpu_seconds(cpus: set[int]) -> tuple[float, float]:
    """(busy seconds of ``cpus`` from /proc/stat, CPU seconds of this process and its reaped children)."""
    tick = os.sysconf("SC_CLK_TCK")
    busy = 0.0
    with open("/proc/stat") as stat:
        for line in stat:
            name, *values = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                ticks = [int(v) for v in values]
                busy += (sum(ticks[:8]) - ticks[3] - ticks[4]) / tick  # all but idle and iowait
    own = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    return busy, own


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def start_serve(onnx: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """A `trd serve` process for ``onnx`` on a free port, once it accepts requests, and its URL."""
    cmd = [sys.executable, "-m", "trd.cli", "serve", "--model", str(onnx), "--port", "0", *extra]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = server.stdout.readline()
    if not line.startswith("trd serve: http://"):
        server.kill()
        raise RuntimeError(f"trd serve did not start: {line}{server.stderr.read()[-2000:]}")
    return server, line.split()[2].rstrip("/")


def _serve_row(onnx: Path, pairs: list[tuple[Path, Path]], clients: int, requests: int, extra: list[str]) -> dict[str, Any]:
    """Start `trd serve`, run the load, stop it with SIGTERM; throughput, latency, lost, mean batch."""
    server, url = start_serve(onnx, *extra)
    uploads = [{"rgb": (r.name, r.read_bytes(), "image/png"), "xyz": (x.name, x.read_bytes(), "image/tiff")}
               for r, x in pairs]

    def client(k: int) -> list[tuple[int, float]]:
        seen = []
        with httpx.Client(timeout=120) as http:
            for i in range(requests):
                start = time.perf_counter()
                try:
                    code = http.post(f"{url}/v1/score", files=uploads[(k + i) % len(uploads)]).status_code
                except httpx.HTTPError:
                    code = 0
                seen.append((code, time.perf_counter() - start))
        return seen

    client(0)  # warm-up: the first engine call allocates
    warm_metrics = httpx.get(f"{url}/metrics").text
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(client, range(clients)) for r in rs]
    wall = time.perf_counter() - start
    metrics = httpx.get(f"{url}/metrics").text
    server.send_signal(signal.SIGTERM)
    server.communicate(timeout=60)

    def batches(text: str) -> tuple[float, float]:
        found = {m[0]: float(m[1]) for m in re.findall(r"^trd_batch_size_(sum|count) (\S+)$", text, re.MULTILINE)}
        return found.get("sum", 0.0), found.get("count", 0.0)

    (s1, c1), (s0, c0) = batches(metrics), batches(warm_metrics)
    latencies = [t for code, t in results if code == 200]
    return {"scans": len(results), "wall_s": round(wall, 3), "throughput": len(latencies) / wall,
            "p50_ms": _percentile(latencies, 50) * 1e3, "p99_ms": _percentile(latencies, 99) * 1e3,
            "lost": sum(code != 200 for code, _ in results), "mean_batch": (s1 - s0) / max(c1 - c0, 1.0),
            "exit_code": server.returncode}


class InProcess:
    """predict_samples (batches of 8) and the engine alone, in this process, on the same pairs."""

    def __init__(self, onnx: Path, pairs: list[tuple[Path, Path]], rounds: int) -> None:
        from trd.data.samples import unlabelled_samples
        from trd.workflows.engine import load_model

        self.model = load_model(None, onnx, log=lambda _: None)
        self.samples = [unlabelled_samples(self.model.config.data, rgb=r, xyz=x)[0][0] for r, x in pairs]
        self.rounds = rounds
        size = self.model.config.data.image_size
        rng = np.random.default_rng(0)
        self.inputs = [rng.standard_normal((len(pairs), 3, size, size)).astype(np.float32) for _ in range(2)]

    def predict(self) -> dict[str, Any]:
        from trd.workflows.predict import predict_samples

        per_scan: list[float] = []
        with tempfile.TemporaryDirectory(prefix="trd-bench-predict-") as tmp:
            predict_samples(self.model, self.samples, Path(tmp) / "warm", batch_size=8, log=lambda _: None)
            start = time.perf_counter()
            for k in range(self.rounds):
                t = time.perf_counter()
                done = predict_samples(self.model, self.samples, Path(tmp) / str(k), batch_size=8, log=lambda _: None)
                assert done["scored"] == len(self.samples), done
                per_scan.append((time.perf_counter() - t) / len(self.samples))
            wall = time.perf_counter() - start
        n = self.rounds * len(self.samples)
        return {"scans": n, "wall_s": round(wall, 3), "throughput": n / wall, "p50_ms": _percentile(per_scan, 50) * 1e3,
                "p99_ms": _percentile(per_scan, 99) * 1e3, "lost": 0}

    def engine(self) -> dict[str, Any]:
        self.model.engine(*self.inputs)
        calls = []
        for _ in range(self.rounds):
            t = time.perf_counter()
            self.model.engine(*self.inputs)
            calls.append((time.perf_counter() - t) / len(self.samples))
        n = self.rounds * len(self.samples)
        return {"scans": n, "wall_s": round(sum(calls) * len(self.samples), 3), "throughput": 1.0 / statistics.mean(calls),
                "p50_ms": _percentile(calls, 50) * 1e3, "p99_ms": _percentile(calls, 99) * 1e3, "lost": 0}


def _measured(fn: Callable[[], dict[str, Any]], cpus: set[int]) -> dict[str, Any]:
    """``fn()``'s row plus the busy seconds of ``cpus`` meanwhile not charged to this run's processes (other
    processes, interrupts)."""
    busy0, own0 = _cpu_seconds(cpus)
    row = fn()
    busy1, own1 = _cpu_seconds(cpus)
    return row | {"others_cpu_s": round(max(0.0, (busy1 - busy0) - (own1 - own0)), 2)}


def _table(rows: dict[str, dict[str, Any]]) -> str:
    lines = ["| row | scans | throughput (median; all) | p50 per scan | p99 per scan | lost | mean batch "
             "| other processes' CPU s |", "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        batch = f"{r['mean_batch']:.2f}" if "mean_batch" in r else "8"
        every = ", ".join(f"{t:.1f}" for t in r["throughput_all"])
        lines.append(f"| {name} | {r['scans']} | {r['throughput']:.1f} scans/s ({every}) | {r['p50_ms']:.1f} ms "
                     f"| {r['p99_ms']:.1f} ms | {r['lost']} | {batch} | {r['others_cpu_s']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpus", default="1", help="CPUs the server, the clients and the in-process rows are pinned to")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=50, help="requests per client")
    p.add_argument("--repeat", type=int, default=3, help="measurements of each row, alternating")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results-cpu-serve.json")
    args = p.parse_args(argv)
    cpus = {int(c) for c in args.cpus.split(",")}
    os.sched_setaffinity(0, cpus)  # inherited by the server process
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="trd-bench-serve-") as tmp:
        onnx, pairs = _inputs(Path(tmp))
        load = f"{args.clients} clients x {args.requests}"
        local = InProcess(onnx, pairs, max(1, args.clients * args.requests // len(pairs)))
        rows_fn = {f"trd serve ({load})": lambda: _serve_row(onnx, pairs, args.clients, args.requests, []),
                   f"trd serve --max-batch 1 ({load})":
                       lambda: _serve_row(onnx, pairs, args.clients, args.requests, ["--max-batch", "1"]),
                   "predict_samples (batch 8, in process)": local.predict,
                   "engine alone (batch 8, in process)": local.engine}
        for rep in range(args.repeat):  # the rows alternate, so a busy spell of the machine hits all of them
            for name, fn in rows_fn.items():
                runs.setdefault(name, []).append(_measured(fn, cpus))
                print(f"{rep} {name}: {runs[name][-1]}", flush=True)
    rows = {}
    for name, measured in runs.items():  # the repetition of median throughput, with all of them listed
        ordered = sorted(measured, key=lambda r: r["throughput"])
        rows[name] = ordered[len(ordered) // 2] | {"throughput_all": [round(r["throughput"], 2) for r in measured],
                                                   "others_cpu_all": [r["others_cpu_s"] for r in measured],
                                                   "lost_all": [r["lost"] for r in measured]}
    results = {"date": datetime.date.today().isoformat(), "cpus": args.cpus,
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
               "python": platform.python_version(), "model": "demo size (resnet18, 128 px), ONNX, onnxruntime",
               "repeat": args.repeat, "rows": rows, "load_1min": os.getloadavg()[0], "table": _table(rows)}
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(results["table"])


if __name__ == "__main__":
    main()
