"""``trd predict --ray`` with 1 and 2 workers against plain ``trd predict``, in one run on this machine.

    .venv/bin/python benchmarks/ray_scale.py --out benchmarks/results-cpu-ray.json

The model is the demo's size (resnet18, 128 px, random teachers: speed does not depend on the
weights), exported to ONNX once; the scans are ``--scans`` synthetic pairs at 128 px. Each row is a
fresh ``trd predict`` process on the same scans into a fresh folder:

- ``plain, 1 thread`` / ``plain, 2 threads``: ``trd predict --onnx --threads N``;
- ``ray, 1 worker`` / ``ray, 2 workers``: ``trd predict --onnx --ray --workers N`` (1 thread per
  worker), which starts a local Ray on this machine, as ``--ray`` alone does for a user.

The rows take turns, ``--rounds`` times, so load from other work falls on all of them alike (the
load average is recorded). Per row: wall time of the process and scans/s over it; the time until
the first record is in the folder (start-up: Python, the model, for Ray also the local cluster and
its workers); the steady rate between the first and the last record (the folder's line count is
polled every 20 ms); and the CPU time of the process that writes the folder (the Ray driver, or
the plain process; read from /proc while it runs). The per-scan overhead Ray adds is the steady
time per scan of one Ray worker minus that of the plain process, both with one thread.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from engines import _model_file  # this folder: benchmarks/engines.py

ROOT = Path(__file__).resolve().parents[1]
ROWS = {"plain, 1 thread": ["--threads", "1"], "plain, 2 threads": ["--threads", "2"],
        "ray, 1 worker": ["--ray", "--workers", "1", "--threads", "1"],
        "ray, 2 workers": ["--ray", "--workers", "2", "--threads", "1"]}


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (its threads included), or None once gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_row(args: list[str], out: Path, n: int, env: dict[str, str]) -> dict[str, Any]:
    """One ``trd predict`` process: its wall time, first/last record times, driver CPU time."""
    ledger = out / "predictions.jsonl"
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "trd.cli", "predict", *args, "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = last = None
    cpu = 0.0
    while proc.poll() is None:
        cpu = _cpu_s(proc.pid) or cpu
        lines = ledger.read_bytes().count(b"\n") if ledger.is_file() else 0
        now = time.perf_counter() - start
        if lines and first is None:
            first = now
        if lines >= n and last is None:
            last = now
        time.sleep(0.02)
    wall = time.perf_counter() - start
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"trd predict {' '.join(args)} failed:\n{stderr[-3000:]}")
    summary = json.loads(stdout)
    assert summary["scored"] == n, summary
    last = last or wall
    return {"wall_s": wall, "scans_per_s": n / wall, "first_record_s": first, "last_record_s": last,
            "steady_scans_per_s": (n - 1) / (last - first) if first and last > first else None,
            "driver_cpu_s": cpu, "driver_cpu_ms_per_scan": 1e3 * cpu / n, "load_1min": os.getloadavg()[0]}


def _table(results: dict[str, Any]) -> str:
    lines = ["| row | scans/s (whole run) | steady scans/s | until first record (s) | CPU of the writing process "
             "(ms per scan) |", "|---|---|---|---|---|"]
    for name, row in results["rows"].items():
        lines.append(f"| {name} | {row['scans_per_s']:.2f} | {row['steady_scans_per_s']:.2f} | "
                     f"{row['first_record_s']:.1f} | {row['driver_cpu_ms_per_scan']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--scans", type=int, default=160)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    from trd.data.synth import generate
    from trd.export.onnx import export_onnx

    results: dict[str, Any] = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or
                               platform.machine(), "cpus": len(os.sched_getaffinity(0)), "scans": args.scans,
                               "batch_size": args.batch_size, "rounds": args.rounds, "model": "demo size (resnet18, "
                               "128 px), ONNX, onnxruntime CPU", "runs": {name: [] for name in ROWS}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        onnx_path = export_onnx(_model_file("demo", work), work / "demo.onnx")
        generate(work / "data", ["puck"], size=128, n_train=1, n_validation=1, n_test_good=args.scans,
                 n_test_per_defect=0, seed=11)
        inputs = work / "data" / "puck" / "test" / "good"
        results["bytes_per_scan"] = sum(f.stat().st_size for f in inputs.rglob("*") if f.parent.name in ("rgb", "xyz")) \
            / args.scans
        (work / "home").mkdir()
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), PYTHONWARNINGS="ignore", RAY_USAGE_STATS_ENABLED="0",
                   HOME=str(work / "home"), RAY_TMPDIR=str(work))  # Ray leaves nothing in this machine's ~ or /tmp
        base = ["--onnx", str(onnx_path), "--input", str(inputs), "--batch-size", str(args.batch_size)]
        for round_ in range(args.rounds):
            for index, (name, extra) in enumerate(ROWS.items()):
                out = work / f"out-{round_}-{index}"  # a fresh folder and result store per row
                row = run_row([*base, *extra, "--store", str(out) + ".db"], out, args.scans, env)
                results["runs"][name].append(row)
                print(f"{name}: {json.dumps(row)}", flush=True)
    results["rows"] = {name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
                       for name, runs in results["runs"].items()}
    rows = results["rows"]
    plain, ray1, ray2 = rows["plain, 1 thread"], rows["ray, 1 worker"], rows["ray, 2 workers"]
    results["ray_overhead_ms_per_scan"] = 1e3 * (1 / ray1["steady_scans_per_s"] - 1 / plain["steady_scans_per_s"])
    results["two_workers_vs_one"] = ray2["steady_scans_per_s"] / ray1["steady_scans_per_s"]
    results["table"] = _table(results)
    print(results["table"])
    print(f"Ray adds {results['ray_overhead_ms_per_scan']:.1f} ms per scan (steady, one worker vs one plain process); "
          f"2 workers give {results['two_workers_vs_one']:.2f}x one worker on {results['cpus']} CPUs")
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
