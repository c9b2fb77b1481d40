"""Training / inference throughput, latency and peak memory: the toolkit vs a reference-style baseline.

    .venv/bin/python benchmarks/bench.py --model small|paper|both --device cpu|cuda --out results.json

Every configuration runs in its own process (see workloads.py), so its peak memory is its own.
"baseline" = the reference code's loops (fp32, NCHW, teachers every iteration, 3D preprocessing on
every access, batch-1 inference scored on the host with numpy/scipy). The "ours" rows add the
toolkit's optimisations one at a time (``--ladder full``), so each row's gain over the row above is
what that optimisation buys; ``--ladder toggles`` starts from the toolkit's defaults (fp32) and
switches one speed setting at a time. A checkpoint job per model times the train-state write and
gives its share of an MVTec 3D-AD epoch, written every epoch or by wall time. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hardware import bf16_decision, hardware_info

HERE = Path(__file__).resolve().parent
SYNTH_CATEGORY = "puck"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    backbone: str
    size: int


MODELS = {
    "small-128": ModelSpec("small-128", "resnet18", 128),  # the demo's model
    "small-256": ModelSpec("small-256", "resnet18", 256),
    "paper": ModelSpec("paper", "wide_resnet50_2", 256),
}
MODEL_SETS = {"small": ["small-128", "small-256"], "paper": ["paper"], "both": ["small-128", "small-256", "paper"]}

#: Training pairs of an MVTec 3D-AD category on average (2656 / 10): the epoch of the checkpoint shares.
MVTEC_TRAIN_PAIRS = 266
#: Minutes between train-state writes by default (trd.config.TrainConfig.checkpoint_minutes).
CHECKPOINT_MINUTES = 10.0

#: Per device and model: pairs in the timed dataset, batch, timed epochs, inference batch, timed runs.
#: CPU sizes are tiny on purpose (the paper model needs ~300 GMACs per training pair).
SIZES = {
    "cpu": {"small-128": (8, 8, 2, 8, 3), "small-256": (8, 8, 1, 8, 3), "paper": (2, 2, 1, 2, 2)},
    "cuda": {name: (32, 16, 3, 16, 10) for name in MODELS},
}
DEFAULT_LADDER = {"cpu": {"small-128": "full", "small-256": "short", "paper": "min"},
                  "cuda": {name: "full" for name in MODELS}}


@dataclass(frozen=True)
class Step:
    label: str
    flags: dict[str, Any]
    phases: frozenset[str]
    proposal: bool = False  # not a toolkit setting: what a change to src/ would buy


def ladder_steps(device: str, fast_bf16: bool, compile_: bool, workers: int, proposals: bool) -> list[Step]:
    """The cumulative optimisation ladder applicable to this run."""
    both, train, infer = frozenset({"train", "infer"}), frozenset({"train"}), frozenset({"infer"})
    steps = [Step("ours: all off", {}, both)]
    if workers:
        steps.append(Step(f"+ DataLoader workers={workers}", {"workers": workers}, train))
    steps += [Step("+ preprocess cache", {"pcache": True}, train),
              Step("+ teacher cache", {"tcache": True}, train),
              Step("+ on-device batched scorer", {"scorer": True}, infer),
              Step("+ channels_last", {"channels_last": True}, both),
              Step("+ fused Adam", {"fused_adam": True}, train)]
    if fast_bf16:
        steps.append(Step("+ bf16 autocast", {"bf16": True}, both))
    if compile_:
        steps.append(Step("+ torch.compile", {"compile": True}, both))
    if proposals and device == "cuda":
        steps.append(Step("+ cudnn.benchmark [proposal]", {"cudnn_benchmark": True}, both, True))
    return steps


@dataclass
class Row:
    label: str
    impl: str
    flags: dict[str, Any]
    phases: frozenset[str]
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


#: The toolkit's defaults (docs: train.precision=fp32, caches on, fused Adam, on-device scorer).
DEFAULTS = {"pcache": True, "tcache": True, "scorer": True, "fused_adam": True}
DEFAULTS_LABEL = "ours: defaults (fp32)"


def toggle_rows(fast_bf16: bool, compile_: bool) -> list[Row]:
    """Baseline, the toolkit's defaults (fp32), then one speed setting switched at a time, then the
    fast settings together (without torch.compile: its compile time is long)."""
    both, train = frozenset({"train", "infer"}), frozenset({"train"})
    rows = [Row("baseline (reference loop)", "baseline", {}, both),
            Row(DEFAULTS_LABEL, "ours", dict(DEFAULTS), both),
            Row("defaults - teacher cache", "ours", {**DEFAULTS, "tcache": False}, train),
            Row("defaults + channels_last", "ours", {**DEFAULTS, "channels_last": True}, both)]
    fast = {**DEFAULTS, "channels_last": True}
    if fast_bf16:
        rows.append(Row("defaults + bf16 autocast", "ours", {**DEFAULTS, "bf16": True}, both))
        fast["bf16"] = True
    if compile_:
        rows.append(Row("defaults + torch.compile", "ours", {**DEFAULTS, "compile": True}, both))
    if len(fast) > len(DEFAULTS) + 1:
        rows.append(Row("defaults + channels_last + bf16", "ours", fast, both))
    return rows


def plan_rows(ladder: str, steps: list[Step], loo: bool) -> list[Row]:
    """Rows of one model: baseline, then the ladder (full), all off + all on (short), or all on (min)."""
    both = frozenset({"train", "infer"})
    rows = [Row("baseline (reference loop)", "baseline", {}, both)]
    flags: dict[str, Any] = {}
    ladder_rows = []
    for step in steps:
        flags = {**flags, **step.flags}
        ladder_rows.append(Row(step.label, "ours", dict(flags), step.phases))
    product = [r for r, s in zip(ladder_rows, steps) if not s.proposal]
    all_on = Row("ours: all on", "ours", product[-1].flags, both)
    if ladder == "full":
        rows += ladder_rows
    elif ladder == "short":
        rows += [Row(product[0].label, "ours", {}, both), all_on]
    else:
        rows.append(all_on)
    if loo:
        for step in steps[1:]:
            if step.proposal:
                continue
            flags = {k: v for k, v in all_on.flags.items() if k not in step.flags}
            rows.append(Row(f"all on - {step.label[2:]}", "ours", flags, step.phases))
    return rows


def run_job(spec: dict[str, Any], timeout: int, threads: int) -> dict[str, Any]:
    """Run one measurement in a fresh process; its ``RESULT`` line, or the error."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, str(HERE / "workloads.py"), json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout}s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]}


def median_of(results: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in results if key in r]
    return statistics.median(values) if values else None


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _cpu_wall(results: list[dict[str, Any]]) -> str:
    """CPU seconds over wall seconds of the measuring process (> threads: the machine was oversubscribed)."""
    cpu, wall = median_of(results, "cpu_s"), median_of(results, "wall_s")
    return f"{cpu:.1f} / {wall:.1f}" if cpu is not None and wall else "-"


def table(model: str, rows: list[Row], epoch_pairs: int) -> str:
    """Markdown table of one model; '-' = not measured for that row (unchanged by its step)."""
    base_t = median_of(rows[0].results.get("train", []), "train_pairs_per_s")
    base_i = median_of(rows[0].results.get("infer", []), "infer_pairs_per_s")
    head = (f"| {model} | train x | infer x | train pairs/s | s/epoch (N={epoch_pairs}) | 1st epoch s | "
            "infer pairs/s (batch) | latency ms (b=1) | score ms/pair | CPU s / wall s train | CPU s / wall s infer | "
            "peak MB train | peak MB infer |")
    lines = [head, "|" + "---|" * 13]
    for row in rows:
        tr, inf = row.results.get("train", []), row.results.get("infer", [])
        tps, ips = median_of(tr, "train_pairs_per_s"), median_of(inf, "infer_pairs_per_s")
        errors = [r["error"] for r in tr + inf if "error" in r]
        batch = inf[0].get("infer_batch") if inf and "infer_batch" in inf[0] else None
        cells = [
            row.label + (f" (error: {errors[0]})" if errors else ""),
            _fmt(tps / base_t if tps and base_t else None),
            _fmt(ips / base_i if ips and base_i else None),
            _fmt(tps, 3),
            _fmt(epoch_pairs / tps if tps else None, 1),
            _fmt(median_of(tr, "first_epoch_s"), 1),
            f"{_fmt(ips, 3)} ({batch})" if ips else "-",
            _fmt(median_of(inf, "latency_ms"), 1),
            _fmt(median_of(inf, "score_ms_per_pair"), 1),
            _cpu_wall(tr),
            _cpu_wall(inf),
            _fmt(median_of(tr, "train_peak_mb"), 0),
            _fmt(median_of(inf, "infer_peak_mb"), 0),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def batch_table(model: str, rows: list[Row]) -> str:
    """Markdown table: inference pairs/s of each toolkit row at each measured batch."""
    batches = sorted({int(b) for r in rows for res in r.results.get("infer", [])
                      for b in res.get("infer_pairs_per_s_by_batch", {})})
    lines = [f"| {model}: infer pairs/s | " + " | ".join(f"batch {b}" for b in batches) + " |",
             "|" + "---|" * (len(batches) + 1)]
    for row in rows:
        results = row.results.get("infer", [])
        if row.impl != "ours" or not results:
            continue
        cells = [_fmt(median_of([r.get("infer_pairs_per_s_by_batch", {}) for r in results], str(b)), 2) for b in batches]
        lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def checkpoint_table(model: str, ckpt: dict[str, Any], rows: list[Row]) -> tuple[str, dict[str, Any]]:
    """Markdown table (and its numbers) of the train-state write: seconds, bytes and share of an
    MVTec-sized epoch (MVTEC_TRAIN_PAIRS at the toolkit's defaults, else at the fastest toolkit
    row), written every epoch (before) or at the first epoch boundary after CHECKPOINT_MINUTES (now)."""
    speeds = [(median_of(r.results.get("train", []), "train_pairs_per_s") or 0.0, r.label)
              for r in rows if r.impl == "ours"]
    defaults = [s for s in speeds if s[1] == DEFAULTS_LABEL and s[0]]
    pairs_per_s, label = (defaults or [max(speeds, default=(0.0, "-"))])[0]
    write_s = median_of(ckpt.get("results", []), "ckpt_write_s")
    n_bytes = median_of(ckpt.get("results", []), "ckpt_bytes")
    figures: dict[str, Any] = {"write_s": write_s, "bytes": n_bytes, "epoch_row": label}
    if write_s is not None and pairs_per_s:
        epoch_s = MVTEC_TRAIN_PAIRS / pairs_per_s
        interval = max(1, math.ceil(CHECKPOINT_MINUTES * 60 / epoch_s)) * epoch_s  # a write at an epoch boundary
        figures |= {"epoch_s": epoch_s, "share_every_epoch": write_s / (epoch_s + write_s),
                    "share_by_time": write_s / (interval + write_s), "interval_s": interval}
    pct = lambda key: f"{100 * figures[key]:.1f}%" if key in figures else "-"  # noqa: E731
    errors = [r["error"] for r in ckpt.get("results", []) if "error" in r]
    lines = [f"| {model} | state.pt MB | write s | MB/s | epoch s (N={MVTEC_TRAIN_PAIRS}, {label}) | "
             f"share, every epoch (before) | share, every {CHECKPOINT_MINUTES:g} min (now) |",
             "|" + "---|" * 7,
             "| " + " | ".join([
                 "train state write" + (f" (error: {errors[0]})" if errors else ""),
                 _fmt(n_bytes / 1e6 if n_bytes else None, 0), _fmt(write_s, 2),
                 _fmt(n_bytes / 1e6 / write_s if n_bytes and write_s else None, 0),
                 _fmt(figures.get("epoch_s"), 1), pct("share_every_epoch"), pct("share_by_time")]) + " |"]
    return "\n".join(lines), figures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(MODEL_SETS), default="small")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=Path("results.json"))
    p.add_argument("--ladder", choices=["full", "short", "min", "toggles", "defaults"],
                   help="rows per model (default: per device/model); toggles: the toolkit's defaults, then one "
                        "setting switched at a time; defaults: baseline and the toolkit's defaults only")
    p.add_argument("--loo", action="store_true", help="also 'all on minus one' rows")
    p.add_argument("--compile", action="store_true", help="add torch.compile rows (long compile times)")
    p.add_argument("--proposals", action="store_true", help="add rows for changes not in the toolkit (cudnn.benchmark on CUDA)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers row (default: min(4, cpus-1); 0 = no row)")
    p.add_argument("--n-pairs", type=int, help="training pairs per timed epoch (default per device/model)")
    p.add_argument("--batch", type=int, help="training batch size")
    p.add_argument("--epochs", type=int, help="timed epochs after one warm-up epoch")
    p.add_argument("--infer-batch", type=int, help="inference batch for throughput")
    p.add_argument("--infer-batches", type=lambda s: [int(b) for b in s.split(",")], default=[],
                   help="also measure inference throughput at these batches, e.g. 1,8,32 (toolkit rows)")
    p.add_argument("--no-checkpoint", dest="checkpoint", action="store_false",
                   help="skip the train-state write measurement (one job per model)")
    p.add_argument("--runs", type=int, help="timed inference runs (median reported)")
    p.add_argument("--epoch-pairs", type=int, default=32, help="N for the seconds-per-epoch column")
    p.add_argument("--cloud-size", type=int, help="synthetic cloud side (default: the image size; MVTec is ~800)")
    p.add_argument("--repeat", type=int, default=1, help="repeat every measurement (interleaved); medians reported")
    p.add_argument("--cpus", type=lambda v: [int(c) for c in v.split(",")], default=None,
                   help="pin every measurement process to these CPUs (e.g. 0 or 0,1), threads = their number")
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op threads per measurement process (0 = torch's default; see README on shared CPUs)")
    p.add_argument("--timeout", type=int, default=1200, help="seconds per measurement process")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = min(4, cpus - 1) if args.workers is None else args.workers
    bf16 = bf16_decision(device)
    steps = ladder_steps(device.type, bf16["fast_bf16"], args.compile, workers, args.proposals)
    if args.threads:
        torch.set_num_threads(args.threads)
    report: dict[str, Any] = {"hardware": hardware_info(device), "bf16": bf16, "args": vars(args) | {"out": str(args.out)},
                              "models": {}}
    print(json.dumps({"hardware": report["hardware"], "bf16": bf16}, indent=1), flush=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="trd-bench-data-") as tmp:
        jobs: list[tuple[Row | dict[str, Any], dict[str, Any]]] = []
        plans: dict[str, tuple[list[Row], dict[str, Any]]] = {}
        data_owners: dict[Path, dict[str, Any]] = {}
        for name in MODEL_SETS[args.model]:
            m = MODELS[name]
            n, batch, epochs, infer_batch, runs = SIZES[args.device][name]
            n, batch = args.n_pairs or n, args.batch or batch
            sizes = dict(n_pairs=n, batch=batch, epochs=args.epochs or epochs, warm_epochs=1,
                         infer_batch=args.infer_batch or infer_batch, runs=args.runs or runs,
                         infer_batches=args.infer_batches)
            n_data = max(sizes["n_pairs"], sizes["infer_batch"], *args.infer_batches)
            root = _synth(Path(tmp), args.cloud_size or m.size, n_data)
            base = dict(backbone=m.backbone, size=m.size, data_root=str(root), device=args.device, cpus=args.cpus,
                        **sizes)
            ladder = args.ladder or DEFAULT_LADDER[args.device][name]
            if ladder in ("toggles", "defaults"):
                rows = toggle_rows(bf16["fast_bf16"], args.compile)[:None if ladder == "toggles" else 2]
            else:
                rows = plan_rows(ladder, steps, args.loo)
            if root not in data_owners:  # loading cost depends on the data only, not the model
                data_owners[root] = {"results": []}
                jobs.append((data_owners[root], {**base, "phase": "data", "impl": "ours", "flags": {}}))
            ckpt: dict[str, Any] = {"results": []}
            if args.checkpoint:
                jobs.append((ckpt, {**base, "phase": "checkpoint", "impl": "ours", "flags": {}}))
            plans[name] = (rows, {"sizes": sizes, "cloud_size": args.cloud_size or m.size, "data": data_owners[root],
                                  "checkpoint": ckpt})
            for row in rows:
                for phase in ("train", "infer"):
                    if phase in row.phases:
                        jobs.append((row, {**base, "phase": phase, "impl": row.impl, "flags": row.flags}))
        for rep in range(args.repeat):
            for i, (owner, spec) in enumerate(jobs, 1):
                label = owner.label if isinstance(owner, Row) else spec["phase"]
                print(f"[{rep + 1}/{args.repeat} {i}/{len(jobs)} {time.perf_counter() - start:6.0f}s] "
                      f"{spec['backbone']}@{spec['size']} {spec['phase']:5s} {label}", flush=True)
                result = run_job(spec, args.timeout, args.threads)
                if isinstance(owner, Row):
                    owner.results.setdefault(spec["phase"], []).append(result)
                else:
                    owner["results"].append(result)
                if "error" in result:
                    print(f"    error: {result['error']}", flush=True)
                else:  # every figure as it is measured: a run stopped early still tells what it measured
                    print("    " + json.dumps({k: v for k, v in result.items() if not isinstance(v, list)}), flush=True)
    for name, (rows, meta) in plans.items():
        s = meta["sizes"]
        print(f"\n{name}: {MODELS[name].backbone} @ {MODELS[name].size}px, train batch {s['batch']}, "
              f"{s['n_pairs']} pairs x {s['epochs']} timed epoch(s) after 1 warm-up; inference batch {s['infer_batch']}")
        print(table(name, rows, args.epoch_pairs))
        if args.infer_batches:
            print(batch_table(name, rows))
        ckpt_text, ckpt_figures = checkpoint_table(name, meta["checkpoint"], rows)
        meta["checkpoint"]["figures"] = ckpt_figures
        if args.checkpoint:
            print(ckpt_text)
        print("data loading (ms/pair):", json.dumps(meta["data"]["results"]))
        report["models"][name] = {
            "backbone": MODELS[name].backbone, "image_size": MODELS[name].size, **meta,
            "table": table(name, rows, args.epoch_pairs),
            "batch_table": batch_table(name, rows) if args.infer_batches else "",
            "checkpoint_table": ckpt_text if args.checkpoint else "",
            "rows": [{"label": r.label, "impl": r.impl, "flags": r.flags, "results": r.results} for r in rows],
        }
    report["wall_s"] = round(time.perf_counter() - start, 1)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"\nwrote {args.out} ({report['wall_s']}s)")


def _synth(tmp: Path, size: int, n: int) -> Path:
    """Synthetic MVTec-layout training pairs (generated once per cloud size and count)."""
    root = tmp / f"synth-{size}-{n}"
    if not root.is_dir():
        from trd.data.synth import generate

        generate(root, [SYNTH_CATEGORY], size=size, n_train=n, n_validation=0, n_test_good=0, n_test_per_defect=0)
    return root


if __name__ == "__main__":
    main()
