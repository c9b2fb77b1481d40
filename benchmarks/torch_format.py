"""The torch engine in channels_last against NCHW (contiguous) memory format, in one run.

    .venv/bin/python benchmarks/torch_format.py --out benchmarks/results-cpu-torch-format.json
    .venv/bin/python benchmarks/torch_format.py --models demo --batches 1,8 --out /tmp/f.json   # quick

`trd.detector.TorchEngine` (used for ``--explain`` and on GPUs) runs its detector in channels_last
by default; this measures whether that pays. Per model and batch, in one process pinned to
``--cpus`` with one intra-op thread per pinned CPU: the same detector (random teachers, the models of
`engines.py`) in both formats on the same random inputs, the two alternating ``--runs`` times after
a warm-up; CPU seconds per pair (median and range), and the largest difference of the outputs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from engines import _model_file  # this folder: benchmarks/engines.py


def measure(model_path: Path, batch: int, runs: int) -> dict[str, Any]:
    import numpy as np
    import torch

    from trd.detector import TorchEngine, load_detector

    detector, cfg, _, _ = load_detector(model_path)
    engines = {"nchw": TorchEngine(detector, torch.device("cpu"), channels_last=False),
               "channels_last": TorchEngine(load_detector(model_path)[0], torch.device("cpu"))}  # its own copy
    size = cfg.data.image_size
    rng = np.random.default_rng(0)
    rgb, x3d = (rng.standard_normal((batch, 3, size, size)).astype(np.float32) for _ in range(2))
    outputs = {name: engine(rgb, x3d) for name, engine in engines.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(runs):
        for name, engine in engines.items():
            start = time.process_time()
            engine(rgb, x3d)
            times[name].append((time.process_time() - start) / batch)
    diff = {key: float(np.abs(outputs["nchw"][key] - outputs["channels_last"][key]).max()) for key in ("score", "anomaly_map")}
    row = {name: {"median": statistics.median(t), "min": min(t), "max": max(t)} for name, t in times.items()}
    return {**row, "speed-up": row["nchw"]["median"] / row["channels_last"]["median"], "max_difference": diff,
            "load_1min": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="demo,paper")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--cpus", default="0")
    p.add_argument("--out", type=Path, default=Path("results-torch-format.json"))
    args = p.parse_args(argv)
    cpus = {int(c) for c in args.cpus.split(",")}
    os.sched_setaffinity(0, cpus)
    import torch

    torch.set_num_threads(len(cpus))
    results: dict[str, Any] = {"date": datetime.date.today().isoformat(), "cpus": sorted(cpus), "rows": {},
                               "machine": next((ln.split(":", 1)[1].strip() for ln in
                                                Path("/proc/cpuinfo").read_text().splitlines()
                                                if ln.startswith("model name")), "unknown")}
    rows = ["| model | batch | channels_last vs NCHW | NCHW CPU s/pair (range) | channels_last CPU s/pair (range) "
            "| max score / map difference |", "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="trd-format-") as tmp:
        for model in args.models.split(","):
            path = _model_file(model, Path(tmp))
            for batch in (int(b) for b in args.batches.split(",")):
                r = measure(path, batch, args.runs)
                results["rows"][f"{model}@{batch}"] = r
                cells = [f"{r[k]['median']:.4f} ({r[k]['min']:.4f}-{r[k]['max']:.4f})" for k in ("nchw", "channels_last")]
                rows.append(f"| {model} | {batch} | **{r['speed-up']:.2f}x** | {cells[0]} | {cells[1]} | "
                            f"{r['max_difference']['score']:.1g} / {r['max_difference']['anomaly_map']:.1g} |")
                print(rows[-1], flush=True)
    results["table"] = "\n".join(rows)
    args.out.write_text(json.dumps(results, indent=1))
    print(results["table"])


if __name__ == "__main__":
    main()
