"""Inference engines compared like with like: the reference-style loop, the torch Detector and onnxruntime.

    .venv/bin/python benchmarks/engines.py --out benchmarks/results-cpu-engines.json
    .venv/bin/python benchmarks/engines.py --models demo --batches 1 --runs 3 --out /tmp/e.json   # quick

Every measurement runs in its own process, pinned to fixed CPUs (``--cpus``, default CPU 0) with as
many intra-op threads as pinned CPUs, at the same batch size for every engine, on the same inputs
(random teachers; speed does not depend on the weights). Per pair: median wall time of ``--runs``
timed calls after a warm-up, and CPU time (user + system of the whole process, all threads) over the
same calls, so a noisy or oversubscribed machine shows up as CPU time above wall time x threads.
The set is measured ``--repeat`` times with the engines alternating; medians are reported.
``--busy-others`` keeps every CPU outside ``--cpus`` busy with a spinning process meanwhile: a host
that also runs other work (the line's vision software, a second model), where an engine that
ignores its CPU affinity competes with it.

- reference: the reference code's inference: the model's raw maps, then per sample numpy z-scores,
  their sum, ``scipy.ndimage.gaussian_filter(sigma=4)`` and the maximum on the host;
- torch: the toolkit's `trd.detector.Detector` (model + on-device scorer), eager fp32, in
  channels_last memory format as `trd.detector.TorchEngine` runs it;
- onnxruntime-before: the same export in a session with onnxruntime's default options, as the
  toolkit shipped it before sessions were sized (its own thread count, whatever the affinity);
- onnxruntime: the toolkit's default CPU engine (`trd.workflows.engine`): the cached ONNX export in
  an `trd.runtime.ort.OrtEngine` session sized to the pinned CPUs.

Also measured once per model: the export itself (seconds, peak RSS of the exporting process).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

MODELS = {
    "demo": ["model.backbone=resnet18", "data.image_size=128", "model.decoder_blocks=2,2,2", "model.bottleneck_blocks=1"],
    "paper": [],
}
ENGINES = ("reference", "torch", "onnxruntime-before", "onnxruntime")


def _peak_mb() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _model_file(name: str, work: Path, thresholds: tuple[float, float] = (1.0, 1.0)) -> Path:
    """A model.pt of the named size with random teachers and fixed statistics (made once), with
    ``thresholds`` (image, pixel)."""
    import torch

    from trd.config import load_config
    from trd.detector import Detector, save_detector
    from trd.model.trd import build_model
    from trd.scoring.maps import Scorer
    from trd.scoring.threshold import Thresholds

    path = work / f"{name}.pt"
    if not path.is_file():
        torch.manual_seed(0)
        cfg = load_config(None, ["model.weights=none", *MODELS[name]])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build_model(cfg.model, cfg.data.image_size).eval()
        scorer = Scorer(list(model.students), sigma=cfg.score.sigma)
        scorer.set_stats({b: (0.5, 0.1) for b in model.students})
        save_detector(path, Detector(model, scorer).eval(), cfg, Thresholds(*thresholds, 0.01, 0.01))
    return path


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """One engine, one model, one batch size, in this (pinned) process."""
    import numpy as np

    os.sched_setaffinity(0, spec["cpus"])
    threads = len(spec["cpus"])
    import torch

    torch.set_num_threads(threads)
    from scipy import ndimage

    from trd.data.identity import files_sha256
    from trd.workflows.engine import cached_export, load_model

    work, batch = Path(spec["work"]), spec["batch"]
    model_path = _model_file(spec["model"], work)
    if spec["engine"] == "export":
        from trd.export.onnx import export_onnx

        start = time.perf_counter()
        export_onnx(model_path, work / f"{spec['model']}-export.onnx")
        return {"export_s": round(time.perf_counter() - start, 2), "peak_mb": round(_peak_mb(), 1)}
    if spec["engine"] == "onnxruntime-before":
        import onnxruntime

        from trd.config import load_config

        onnx_path = cached_export(model_path, files_sha256(model_path), log=lambda _: None)
        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        size = load_config(None, MODELS[spec["model"]]).data.image_size
    else:
        engine_name = "torch" if spec["engine"] in ("torch", "reference") else "onnx"
        model = load_model(model_path, engine=engine_name, device="cpu", threads=threads, log=lambda _: None)
        size = model.config.data.image_size
    rng = np.random.default_rng(0)
    rgb, x3d = (rng.standard_normal((batch, 3, size, size)).astype(np.float32) for _ in range(2))
    if spec["engine"] == "reference":
        model.detector.to(memory_format=torch.contiguous_format)  # NCHW, as the reference (TorchEngine: channels_last)
        raw_maps = model.detector.model.raw_maps

        def run() -> None:
            with torch.inference_mode():
                maps = raw_maps(torch.from_numpy(rgb), torch.from_numpy(x3d))
            for i in range(batch):  # the reference scores each sample on the host
                fused = sum((m[i, 0].numpy() - 0.5) / 0.1 for m in maps.values())
                float(ndimage.gaussian_filter(fused, sigma=4.0).max())
    elif spec["engine"] == "onnxruntime-before":
        def run() -> None:
            session.run(None, {"rgb": rgb, "x3d": x3d})
    else:
        def run() -> None:
            model.engine(rgb, x3d)

    run()  # warm-up
    walls, cpu0 = [], _cpu_s()
    for _ in range(spec["runs"]):
        start = time.perf_counter()
        run()
        walls.append(time.perf_counter() - start)
    cpu = (_cpu_s() - cpu0) / (spec["runs"] * batch)
    return {"s_per_pair": statistics.median(walls) / batch, "cpu_s_per_pair": cpu, "threads": threads,
            "runs_s": [round(w, 4) for w in walls], "peak_mb": round(_peak_mb(), 1),
            "load_1min": os.getloadavg()[0]}


def _spin_others(cpus: list[int]) -> list[subprocess.Popen]:
    """One busy-looping process pinned to each CPU this process may use outside ``cpus``."""
    others = sorted(os.sched_getaffinity(0) - set(cpus))
    return [subprocess.Popen([sys.executable, "-c", f"import os\nos.sched_setaffinity(0, {{{c}}})\nwhile True: pass"])
            for c in others]


def child_result(cmd: list[str], what: str, **kwargs: Any) -> Any:
    """Run ``cmd`` (a measuring child process) and return the JSON of its ``RESULT {...}`` line."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"{what} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def _spawn(spec: dict[str, Any]) -> dict[str, Any]:
    return child_result([sys.executable, __file__, "--measure", json.dumps(spec)], f"measurement {spec}",
                        env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=3600)


def _table(results: dict[str, Any]) -> str:
    rows = ["| model | batch | threads (pinned CPUs) | torch vs reference | ORT before vs reference "
            "| ORT now vs reference | ORT now vs ORT before | ORT now vs torch "
            "| reference s/pair (CPU s) | torch s/pair (CPU s) | ORT before s/pair (CPU s) | ORT now s/pair (CPU s) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, per in results["runs"].items():
        model, batch = key.split("@")
        t = {e: per[e]["s_per_pair"] for e in ENGINES}
        c = {e: per[e]["cpu_s_per_pair"] for e in ENGINES}
        ratios = [("reference", "torch"), ("reference", "onnxruntime-before"), ("reference", "onnxruntime"),
                  ("onnxruntime-before", "onnxruntime"), ("torch", "onnxruntime")]
        cells = [*(f"{t[a] / t[b]:.2f}x" for a, b in ratios), *(f"{t[e]:.4f} ({c[e]:.4f})" for e in ENGINES)]
        rows.append(f"| {model} | {batch} | {per['torch']['threads']} ({results['cpus']}) | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--measure", help=argparse.SUPPRESS)
    p.add_argument("--models", default="demo,paper")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--cpus", default="0", help="CPUs to pin each measurement to, e.g. 0 or 0,1")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--repeat", type=int, default=2, help="measure the whole set this often, engines alternating")
    p.add_argument("--busy-others", action="store_true", help="keep the CPUs outside --cpus busy meanwhile")
    p.add_argument("--out", type=Path, default=Path("results-engines.json"))
    args = p.parse_args(argv)
    if args.measure:
        print("RESULT " + json.dumps(measure(json.loads(args.measure))), flush=True)
        return
    cpus = [int(c) for c in args.cpus.split(",")]
    spinners = _spin_others(cpus) if args.busy_others else []
    try:
        results = _measure_all(args, cpus)
    finally:
        for proc in spinners:
            proc.kill()
    results["busy_others"] = [c for c in sorted(os.sched_getaffinity(0)) if c not in cpus] if spinners else []
    args.out.write_text(json.dumps(results, indent=1))
    print(results["table"])


def _measure_all(args: argparse.Namespace, cpus: list[int]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="trd-engines-") as tmp:
        results: dict[str, Any] = {"date": datetime.date.today().isoformat(), "cpus": args.cpus,
                                   "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                                   "python": platform.python_version(), "runs": {}, "export": {}}
        try:
            import torch
            results["torch"] = torch.__version__
            import onnxruntime
            results["onnxruntime"] = onnxruntime.__version__
        except ImportError:
            pass
        for model in args.models.split(","):
            results["export"][model] = _spawn({"engine": "export", "model": model, "work": tmp, "cpus": cpus,
                                               "batch": 1, "runs": 1})
            print(f"{model}: export {results['export'][model]}", flush=True)
            for batch in (int(b) for b in args.batches.split(",")):
                samples: dict[str, list[dict[str, Any]]] = {e: [] for e in ENGINES}
                for _ in range(args.repeat):
                    for engine in ENGINES:
                        samples[engine].append(_spawn({"engine": engine, "model": model, "work": tmp, "cpus": cpus,
                                                       "batch": batch, "runs": args.runs}))
                per = {}
                for engine, got in samples.items():
                    per[engine] = {"s_per_pair": statistics.median(g["s_per_pair"] for g in got),
                                   "cpu_s_per_pair": statistics.median(g["cpu_s_per_pair"] for g in got),
                                   "threads": got[0]["threads"], "peak_mb": max(g["peak_mb"] for g in got),
                                   "all": got}
                results["runs"][f"{model}@{batch}"] = per
                print(f"{model} batch {batch}: " + ", ".join(f"{e} {v['s_per_pair']:.4f} s/pair" for e, v in per.items()),
                      flush=True)
        results["table"] = _table(results)
    return results


if __name__ == "__main__":
    main()
