"""The GPU measurements in one command: the GPU rows of benchmarks/README.md and one category's reproduction.

    .venv/bin/python benchmarks/gpu.py --data /data/mvtec3d --out gpu-results     # full: hours
    .venv/bin/python benchmarks/gpu.py --quick --out gpu-quick                     # ~8 min, no dataset

Full: `bench.py` over all models with MVTec-sized clouds, torch.compile and the proposal rows, the
toggles table (the toolkit's fp32 defaults, then one speed setting at a time) with inference at
batch 1/8/32, the train-state write, the metric check (`metric_check.py`), then `trd reproduce`
of one category (default bagel; the paper protocol, fp32) into OUT/reproduce.
Quick: synthetic data and random teachers only (no dataset, no ImageNet weights, no network): the
paper-sized model's toggles table with inference at batch 1/8/32, peak memory, the train-state
write and the metric check.
The metric check runs first (it says whether the speed settings keep the fp32 results), then the
benchmarks; each step's log (OUT/*.log) shows every measurement as it is made, so a run stopped
early still tells what it measured. ``--no-compile`` leaves out torch.compile (minutes of compile
time) where the time is short. Both write OUT/gpu.json (everything measured) and OUT/gpu.md (the
tables). Without CUDA it stops at once with exit code 2.
Execution-provider rows (``providers.py``: onnxruntime's CUDA provider at fp32 and fp16, TensorRT at
fp32 and fp16 with its engine build and cached load, each against onnxruntime's CPU provider at
fp32 in the same process: parity and speed) run in another Python, ``--ort-gpu-python``: an
environment with the ``[gpu]`` install (``onnxruntime-gpu``) and the CUDA 13, cuDNN 9 and TensorRT
libraries it loads, e.g. ``pip install 'trd-anomaly[gpu]' 'onnxruntime-gpu[cuda,cudnn]' tensorrt``
(the training venv cannot hold it beside the CPU build). Without it those rows are skipped, saying so.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
#: Per step: (name, arguments of bench.py). QUICK is sized to finish in ~8 minutes on an H100/H200.
#: Execution providers measured against CPU fp32 (providers.py --configs), at inference batch 8.
GPU_PROVIDERS = "cpu:fp32,cuda:fp32,cuda:fp16,tensorrt:fp32,tensorrt:fp16"
QUICK_BENCH = ["--model", "paper", "--ladder", "toggles", "--compile", "--infer-batches", "1,8,32",
               "--n-pairs", "32", "--batch", "16", "--epochs", "2", "--infer-batch", "32", "--runs", "5",
               "--workers", "0", "--timeout", "420"]
FULL_BENCH = [
    ("ladder", ["--model", "both", "--cloud-size", "800", "--compile", "--proposals"]),
    ("toggles", ["--model", "paper", "--cloud-size", "800", "--ladder", "toggles", "--compile",
                 "--infer-batches", "1,8,32", "--infer-batch", "32"]),
]


def _sibling(name: str) -> Any:
    """Import a script of this folder (metric_check's setting names)."""
    sys.path.insert(0, str(HERE))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(HERE))


def cuda_problem() -> str | None:
    """Why this machine cannot run the GPU measurements, or None when it can."""
    if torch.cuda.is_available():
        return None
    built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    return (f"benchmarks/gpu.py measures the GPU rows and needs a CUDA GPU, but torch.cuda.is_available() "
            f"is False here (torch {torch.__version__}, {built}). On a CPU run benchmarks/bench.py --device cpu "
            f"(see benchmarks/README.md).")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="output folder (gpu.json, gpu.md, reproduce/)")
    p.add_argument("--quick", action="store_true", help="synthetic data and random teachers only (~8 min)")
    p.add_argument("--data", type=Path, help="MVTec 3D-AD root, for the reproduction of one category (full run)")
    p.add_argument("--category", default="bagel", help="the category reproduced (full run)")
    p.add_argument("--backbone-weights", default=None,
                   help="teacher weights for the reproduction: imagenet (download) or a file (offline)")
    p.add_argument("--no-reproduce", action="store_true", help="full run without the reproduction")
    p.add_argument("--no-compile", action="store_true",
                   help="leave out the torch.compile rows and checks (their compile time is minutes)")
    p.add_argument("--ort-gpu-python", type=Path, default=None,
                   help="python of an environment with onnxruntime-gpu and its CUDA/cuDNN/TensorRT libraries, for "
                        "the execution-provider rows (skipped without it)")
    args = p.parse_args(argv)
    if args.ort_gpu_python is not None and not args.ort_gpu_python.is_file():
        p.error(f"--ort-gpu-python {args.ort_gpu_python}: no such interpreter")
    if args.quick and (args.data or args.no_reproduce or args.backbone_weights):
        p.error("--quick runs on synthetic data only: --data, --backbone-weights and --no-reproduce do not apply")
    if not args.quick and not args.no_reproduce:
        if args.data is None:
            p.error("the full run reproduces one category: give --data MVTEC3D_ROOT (or --no-reproduce, or --quick)")
        if not (args.data / args.category / "train").is_dir():
            p.error(f"--data {args.data}: no {args.category}/train folder (expected the MVTec 3D-AD root)")
    return args


def _run(cmd: list[str], log: Path) -> dict[str, Any]:
    """Run a step, its output teed to ``log``; its exit code and wall time."""
    start = time.perf_counter()
    print("$ " + " ".join(cmd), flush=True)
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:  # type: ignore[union-attr]
            fh.write(line)
            print(line, end="", flush=True)
        code = proc.wait()
    return {"cmd": cmd, "code": code, "wall_s": round(time.perf_counter() - start, 1), "log": log.name}


def _bench_tables(path: Path) -> str:
    if not path.is_file():
        return "(no results: see the log)"
    report = json.loads(path.read_text())
    parts = []
    for name, model in report["models"].items():
        parts += [f"#### {name}", model["table"], model.get("batch_table", ""), model.get("checkpoint_table", "")]
    return "\n\n".join(p for p in parts if p)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = cuda_problem()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    steps: dict[str, dict[str, Any]] = {}
    # The metric check first: it is what says whether the speed settings keep the fp32 results.
    check = [sys.executable, str(HERE / "metric_check.py"), "--device", "cuda", "--out", str(out)]
    if args.no_compile:
        mc = _sibling("metric_check")
        check += ["--train", ",".join(n for n in mc.TRAIN_SETTINGS if n not in (mc.REFERENCE, mc.NOISE, "torch.compile")),
                  "--infer", ",".join(n for n in mc.INFER_SETTINGS if n not in (mc.REFERENCE, "torch.compile"))]
    steps["metric-check"] = _run(check, out / "metric-check.log")
    bench_runs = [("quick", QUICK_BENCH)] if args.quick else FULL_BENCH
    for name, extra in bench_runs:
        extra = [a for a in extra if not (args.no_compile and a == "--compile")]
        cmd = [sys.executable, str(HERE / "bench.py"), "--device", "cuda", *extra, "--out", str(out / f"bench-{name}.json")]
        steps[f"bench-{name}"] = _run(cmd, out / f"bench-{name}.log")
    if args.ort_gpu_python is not None:
        providers = [sys.executable, str(HERE / "providers.py"), "--python", str(args.ort_gpu_python), "--configs",
                     GPU_PROVIDERS, "--models", "paper" if args.quick else "demo,paper", "--batch", "8",
                     "--runs", "10", "--out", str(out / "providers.json")]
        steps["providers"] = _run(providers, out / "providers.log")
    if not args.quick and not args.no_reproduce:
        repro = [sys.executable, "-m", "trd.cli", "reproduce", "--data", str(args.data), "--out", str(out / "reproduce"),
                 "--categories", args.category]
        if args.backbone_weights:
            repro += ["--backbone-weights", args.backbone_weights]
        steps["reproduce"] = _run(repro, out / "reproduce.log")
    report = {"mode": "quick" if args.quick else "full", "device": torch.cuda.get_device_name(0),
              "torch": torch.__version__, "cuda": torch.version.cuda, "steps": steps,
              "wall_s": round(time.perf_counter() - start, 1)}
    for name, _ in bench_runs:
        path = out / f"bench-{name}.json"
        report[f"bench-{name}"] = json.loads(path.read_text()) if path.is_file() else None
    check_json = out / "metric-check.json"
    report["metric_check"] = json.loads(check_json.read_text()) if check_json.is_file() else None
    provider_json = out / "providers.json"
    report["providers"] = json.loads(provider_json.read_text()) if provider_json.is_file() else None
    (out / "gpu.json").write_text(json.dumps(report, indent=1))
    md = [f"# GPU measurements ({report['mode']}): {report['device']}, torch {report['torch']}, CUDA {report['cuda']}",
          f"Wall time {report['wall_s']} s. Steps: " + ", ".join(f"{k} (exit {v['code']}, {v['wall_s']} s)"
                                                               for k, v in steps.items())]
    for name, _ in bench_runs:
        md += [f"## bench.py: {name}", _bench_tables(out / f"bench-{name}.json")]
    md += ["## ONNX Runtime execution providers (against CPU fp32, same process)",
           report["providers"]["table"] if report["providers"] else
           ("(skipped: no --ort-gpu-python)" if args.ort_gpu_python is None else "(failed: see providers.log)")]
    check_md = out / "metric-check.md"
    md += ["## Metric check (fp32 vs each speed setting)", check_md.read_text() if check_md.is_file() else "(failed)"]
    if "reproduce" in steps:
        table = out / "reproduce" / "reproduction.md"
        md += [f"## Reproduction: {args.category}", table.read_text() if table.is_file() else "(failed: see reproduce.log)"]
    (out / "gpu.md").write_text("\n\n".join(md) + "\n")
    print(f"\nwrote {out / 'gpu.md'} and {out / 'gpu.json'} ({report['wall_s']} s)")
    return 0 if all(s["code"] == 0 for s in steps.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
