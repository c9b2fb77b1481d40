"""Execution providers against onnxruntime's CPU provider, in one run, on the demo and paper models.

    .venv/bin/python benchmarks/providers.py --python .venv-extras/openvino/bin/python \
        --out benchmarks/results-cpu-providers.json                       # OpenVINO vs CPU (this machine)
    .venv/bin/python benchmarks/providers.py --python ORT_GPU_ENV/bin/python --batch 8 \
        --configs cpu:fp32,cuda:fp32,cuda:fp16,tensorrt:fp32,tensorrt:fp16 --out gpu-providers.json   # gpu.py

The models are made here with random teachers (speed does not depend on the weights; the paper
model: wide_resnet50_2, 256 px, exported once, ~15 s and 4.3 GB peak) and exported to ONNX. The
measuring runs in ``--python``, the interpreter of an environment with the onnxruntime build
under test (``benchmarks/extras.py`` makes them; every build also has the CPU provider, so the
reference is the same onnxruntime build, in the same process, on the same inputs, with the same
threads: ``--threads``, default the CPUs this process may use). Per model, the reference session
(CPU fp32) stays open and each other configuration in turn is opened beside it (its creation time
recorded; TensorRT's twice: the first builds and caches its engine, the second loads it), warmed
up, and timed taking turns with the reference, ``--runs`` rounds of one call each, so load from
other work falls on both alike; then it is closed (one paper-sized configuration at a time fits in
memory). The default configurations are this machine's: OpenVINO fp32, and the opt-in reduced
precisions OpenVINO offers on a CPU (bf16 and fp16 inference-precision hints). For each: median
seconds per batch, the reference's in the same turns, their ratio, and the largest absolute
difference of the image score and of the anomaly map against the reference (also relative to the
largest score). The load average is recorded.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

from engines import _model_file, child_result  # this folder: benchmarks/engines.py

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = "cpu:fp32,openvino:fp32,openvino:bf16,openvino:fp16"
MEASURE = r"""
import gc, json, os, statistics, sys, time
import numpy as np
from trd.runtime.ort import open_onnx
spec = json.loads(sys.argv[1])
def timed_open(ep, precision):
    start = time.perf_counter()
    engine = open_onnx(spec["model"], spec["threads"], ep=ep, precision=precision, max_batch=spec["batch"])
    return engine, time.perf_counter() - start
ref, ref_create = timed_open("cpu", "fp32")
size = ref.config.data.image_size
rng = np.random.default_rng(0)
rgb, x3d = (rng.standard_normal((spec["batch"], 3, size, size)).astype(np.float32) for _ in range(2))
expected = ref(rgb, x3d)
rows, load = {}, [os.getloadavg()[0]]
for ep, precision in spec["configs"]:
    name = f"{ep} {precision}"
    if name == "cpu fp32":
        continue
    engine, created = timed_open(ep, precision)  # one configuration at a time beside the reference: memory
    again = timed_open(ep, precision)[1] if ep == "tensorrt" else None  # TensorRT: the cached engine
    out = engine(rgb, x3d)  # warm-up, and the outputs compared
    times = {"ref": [], "row": []}
    for _ in range(spec["runs"]):  # taking turns with the reference
        for key, run in (("ref", ref), ("row", engine)):
            start = time.perf_counter()
            run(rgb, x3d)
            times[key].append(time.perf_counter() - start)
    score = float(np.abs(out["score"] - expected["score"]).max())
    rows[name] = {"provider": engine.provider, "create_s": round(created, 3), "create_again_s": again,
                  "s_per_batch": statistics.median(times["row"]), "cpu_s_per_batch": statistics.median(times["ref"]),
                  "runs_s": [round(t, 4) for t in times["row"]], "max_score_diff": score,
                  "max_score_diff_rel": score / float(np.abs(expected["score"]).max()),
                  "max_map_diff": float(np.abs(out["anomaly_map"] - expected["anomaly_map"]).max())}
    del engine, out
    gc.collect()
    load.append(os.getloadavg()[0])
import onnxruntime
print("RESULT " + json.dumps({"rows": rows, "cpu_create_s": ref_create, "load_1min": load,
                              "onnxruntime": onnxruntime.__version__, "image_size": size}))
"""


def _table(results: dict[str, Any]) -> str:
    lines = ["| model | configuration | provider that ran | session create (s) | s per batch | CPU fp32 s per batch "
             "(same turns) | speed vs CPU fp32 | largest score diff (relative) | largest map diff |",
             "|---|---|---|---|---|---|---|---|---|"]
    for model, res in results["models"].items():
        for name, row in res["rows"].items():
            again = f" (cached: {row['create_again_s']:.2f})" if row.get("create_again_s") is not None else ""
            lines.append(f"| {model} (batch {results['batch']}) | {name} | {row['provider']} | {row['create_s']:.2f}{again} | "
                         f"{row['s_per_batch']:.3f} | {row['cpu_s_per_batch']:.3f} | "
                         f"{row['cpu_s_per_batch'] / row['s_per_batch']:.2f}x | "
                         f"{row['max_score_diff']:.2e} ({row['max_score_diff_rel']:.1e}) | {row['max_map_diff']:.2e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--python", type=Path, required=True, help="python of the environment with the build under test")
    p.add_argument("--configs", default=CONFIGS, help=f"EP:PRECISION,... measured against cpu:fp32 (default {CONFIGS})")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--models", default="demo,paper")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--work", type=Path, default=None, help="folder for the models (default: a temporary one)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    from trd.export.onnx import export_onnx

    results: dict[str, Any] = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or
                               platform.machine(), "cpus": len(os.sched_getaffinity(0)), "threads": args.threads,
                               "batch": args.batch, "runs": args.runs, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.models.split(","):
            onnx_path = work / f"{name}.onnx"
            if not onnx_path.is_file():
                export_onnx(_model_file(name, work), onnx_path)
            spec = {"model": str(onnx_path), "threads": args.threads, "batch": args.batch, "runs": args.runs,
                    "configs": [c.split(":") for c in args.configs.split(",")]}
            env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), PYTHONWARNINGS="ignore")
            results["models"][name] = child_result([str(args.python), "-c", MEASURE, json.dumps(spec)],
                                                   f"providers on {name}", env=env, timeout=3600)
            print(name, json.dumps(results["models"][name]["rows"]), flush=True)
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").is_file() else []
    results["cpu_flags"] = sorted({f for f in flags if f.startswith(("avx512", "amx"))})
    results["table"] = _table(results)
    print(results["table"])
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
