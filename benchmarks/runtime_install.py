"""The runtime install (no torch) against the full install, in one run: size, cold start, batch-1 latency.

    .venv/bin/python benchmarks/runtime_install.py --runtime /tmp/trd-runtime --out benchmarks/results-cpu-runtime.json

``--runtime`` is a virtual environment holding ``pip install '.[cpu]'`` of this checkout and nothing else:
made there when missing (from the package index), and this checkout reinstalled into it with any
new dependencies on every run; the script stops if ``import torch`` works in it. The full install is the
interpreter running the script (``pip install -e '.[cpu,train,dev]'``).

The model is the demo's size (resnet18 teachers, 128 px, random weights: speed does not depend on
them) and the scan one synthetic ``puck`` test pair. Three ways to score it:

- runtime, ``trd predict --onnx``: a line PC with ``pip install 'trd-anomaly[cpu]'``;
- full, ``trd predict --onnx``: the same command where torch is installed (and not imported);
- full, ``trd predict --model model.pt``: the default engine, i.e. the cached ONNX export run by
  onnxruntime (once the export is cached, neither torch nor ``model.pt`` is read; before issue 24
  torch was imported to read ``model.pt``).

Cold start: wall time of a fresh ``trd predict`` process that scores the one scan (start-up, model
load, read, 3D preprocessing, scoring, heatmap PNGs, record), median of ``--runs`` with the three ways
alternating, each process pinned to ``--cpus``; peak RSS of that process (``ru_maxrss``, which on
Linux starts from the forking process's size: this script stays small, ``parent_peak_mb``). Batch-1 latency: the same
scan scored ``--runs`` times in one warm process by ``trd.workflows.predict.predict_samples``
(everything but start-up and model load), median, and the engine call alone.
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

from engines import child_result  # this folder: benchmarks/engines.py

ROOT = Path(__file__).resolve().parents[1]
WAYS = {"runtime --onnx": ("runtime", "onnx"), "full --onnx": ("full", "onnx"), "full --model": ("full", "model")}
WARM = """
import json, statistics, sys, tempfile, time
from pathlib import Path
from trd.data.samples import unlabelled_samples
from trd.workflows.engine import load_model
from trd.workflows.predict import predict_samples
spec = json.loads(sys.argv[1])
kind, path = spec["kind"], Path(spec["model"])
model = load_model(path if kind == "model" else None, path if kind == "onnx" else None, log=lambda _: None)
samples, _ = unlabelled_samples(model.config.data, rgb=Path(spec["rgb"]), xyz=Path(spec["xyz"]))
walls, engine = [], []
with tempfile.TemporaryDirectory() as tmp:
    for i in range(spec["runs"] + 1):
        start = time.perf_counter()
        predict_samples(model, samples, Path(tmp) / str(i), batch_size=1, log=lambda _: None)
        walls.append(time.perf_counter() - start)
rgb = x3d = __import__("numpy").zeros((1, 3, model.config.data.image_size, model.config.data.image_size), "float32")
for _ in range(spec["runs"] + 1):
    start = time.perf_counter()
    model.engine(rgb, x3d)
    engine.append(time.perf_counter() - start)
torch_loaded = "torch" in sys.modules and sys.modules["torch"] is not None
print("RESULT " + json.dumps({"scan_s": statistics.median(walls[1:]), "engine_s": statistics.median(engine[1:]),
                              "torch_imported": torch_loaded}))
"""


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _runtime_env(venv: Path) -> Path:
    """The runtime venv with this checkout installed (made when missing); refuses one with torch."""
    if not _python(venv).is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(_python(venv)), "-m", "pip", "install", "--quiet", f"{ROOT}[cpu]"], check=True)  # always rebuilt
    probe = subprocess.run([str(_python(venv)), "-c", "import torch"], capture_output=True)
    if probe.returncode == 0:
        sys.exit(f"{venv}: torch is installed there; --runtime must be a venv with `pip install '.[cpu]'` only")
    return _python(venv)


def _size_mb(python: Path) -> float:
    """Bytes of the interpreter's environment (its prefix: site-packages, scripts), in MB."""
    prefix = subprocess.run([str(python), "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True,
                            check=True).stdout.strip()
    total = 0
    for folder, _, names in os.walk(prefix):
        for name in names:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                total += os.path.getsize(path)
    return round(total / 1e6, 1)


def _make_inputs(work: Path) -> dict[str, Path]:
    """The demo-sized model.pt (random teachers), its ONNX export and one synthetic test pair."""
    from engines import _model_file

    from trd.data.synth import generate
    from trd.export.onnx import export_onnx

    model = _model_file("demo", work)
    onnx = work / "demo.onnx"
    export_onnx(model, onnx)
    generate(work / "data", ["puck"], size=128, n_train=1, n_validation=1, n_test_good=1, n_test_per_defect=1)
    good = work / "data" / "puck" / "test" / "good"
    return {"model": model, "onnx": onnx, "rgb": next((good / "rgb").glob("*.png")),
            "xyz": next((good / "xyz").glob("*.tiff"))}


def _inputs_in_subprocess(work: Path) -> dict[str, Path]:
    """`_make_inputs` in a child process, so that this process stays small: a child's peak RSS
    (``ru_maxrss``) starts from the size of the process that forked it, torch included."""
    made = child_result([sys.executable, __file__, "--make-inputs", str(work)], "making the model and the scan",
                        env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return {k: Path(v) for k, v in made.items()}


def _cold(python: Path, files: dict[str, Path], kind: str, out: Path, cpus: set[int]) -> dict[str, float]:
    """One fresh `trd predict` process: wall seconds and peak RSS (MB)."""
    model = ["--onnx", str(files["onnx"])] if kind == "onnx" else ["--model", str(files["model"])]
    cmd = [str(python.parent / "trd"), "predict", *model, "--rgb", str(files["rgb"]), "--xyz", str(files["xyz"]),
           "--out", str(out)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr.read().decode()[-2000:]}")
    return {"s": wall, "peak_mb": usage.ru_maxrss / 1024}


def _warm(python: Path, files: dict[str, Path], kind: str, runs: int, cpus: set[int]) -> dict[str, Any]:
    spec = {"kind": kind, "model": str(files[kind]), "rgb": str(files["rgb"]), "xyz": str(files["xyz"]), "runs": runs}
    return child_result([str(python), "-c", WARM, json.dumps(spec)], f"warm measurement {kind} with {python}",
                        preexec_fn=lambda: os.sched_setaffinity(0, cpus))


def _table(results: dict[str, Any]) -> str:
    rows = ["| install, command | environment size | cold start, 1 scan (peak RSS) | batch-1 latency per scan "
            "| engine call | torch imported |", "|---|---|---|---|---|---|"]
    for way, r in results["ways"].items():
        rows.append(f"| {way} | {results['size_mb'][WAYS[way][0]]:.0f} MB | {r['cold_s']:.2f} s ({r['peak_mb']:.0f} MB) "
                    f"| {r['scan_s'] * 1000:.1f} ms | {r['engine_s'] * 1000:.1f} ms | {'yes' if r['torch_imported'] else 'no'} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runtime", type=Path, help="venv with `pip install '.[cpu]'` only (made when missing)")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--cpus", default="0", help="CPUs every measured process is pinned to")
    p.add_argument("--out", type=Path, default=Path("results-runtime.json"))
    p.add_argument("--make-inputs", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.make_inputs:
        print("RESULT " + json.dumps({k: str(v) for k, v in _make_inputs(args.make_inputs).items()}))
        return
    cpus = {int(c) for c in args.cpus.split(",")}
    if args.runtime is None:
        p.error("--runtime is required")
    pythons = {"runtime": _runtime_env(args.runtime), "full": Path(sys.executable)}
    results: dict[str, Any] = {"date": datetime.date.today().isoformat(), "cpus": args.cpus,
                               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                               "python": platform.python_version(),
                               "size_mb": {k: _size_mb(v) for k, v in pythons.items()}, "ways": {}}
    with tempfile.TemporaryDirectory(prefix="trd-runtime-") as tmp:
        work = Path(tmp)
        files = _inputs_in_subprocess(work)
        cold: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
        _cold(pythons["full"], files, "model", work / "prime", cpus)  # writes the cached export once
        for run in range(args.runs):
            for way, (install, kind) in WAYS.items():
                cold[way].append(_cold(pythons[install], files, kind, work / f"{way}-{run}".replace(" ", ""), cpus))
        for way, (install, kind) in WAYS.items():
            warm = _warm(pythons[install], files, kind, args.runs, cpus)
            results["ways"][way] = {"cold_s": statistics.median(c["s"] for c in cold[way]),
                                    "cold_all_s": [round(c["s"], 3) for c in cold[way]],
                                    "peak_mb": max(c["peak_mb"] for c in cold[way]), **warm}
            print(f"{way}: {results['ways'][way]}", flush=True)
    results["load_1min"] = os.getloadavg()[0]
    with open("/proc/self/status") as fh:  # the floor of every peak RSS above (see _inputs_in_subprocess)
        results["parent_peak_mb"] = next(int(ln.split()[1]) for ln in fh if ln.startswith("VmHWM")) / 1024
    results["table"] = _table(results)
    args.out.write_text(json.dumps(results, indent=1))
    print(results["table"])


if __name__ == "__main__":
    main()
