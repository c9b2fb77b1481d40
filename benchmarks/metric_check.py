"""Do the speed settings change the results? The same small run in fp32 and with each fast setting.

    .venv/bin/python benchmarks/metric_check.py --device cuda --out metric-check/

Synthetic data (`trd.data.synth`, category puck, the `trd synth` defaults at --size px), random
teachers (``model.weights=none``), the demo's small model (resnet18); every setting trains from
the same seed for the same epochs, is calibrated on the same validation split and evaluated on the
same test split. Reported per setting: the metrics, their differences from the fp32 run, the
largest difference of a test image score relative to the fp32 scores' range, and whether every
metric is within the tolerance (``--tolerance``, absolute, on metrics in [0, 1]). Random teachers
make the metrics low and noisy; the differences are what this measures. Writes
``OUT/metric-check.json`` and ``OUT/metric-check.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

#: Settings compared with the fp32 run (its own overrides: none): the toolkit's speed switches.
SETTINGS: dict[str, list[str]] = {
    "fp32 (reference)": [],
    "bf16 autocast": ["train.precision=bf16"],
    "channels_last": ["train.channels_last=true"],
    "torch.compile": ["train.compile=true"],
    "teacher cache off": ["train.cache_teacher=false"],
    "fused Adam off": ["train.fused_adam=false"],
    "channels_last + bf16": ["train.channels_last=true", "train.precision=bf16"],
}
REFERENCE = "fp32 (reference)"
METRICS = ("i_auroc", "p_auroc", "aupro@0.3", "aupro100@0.3", "aupro@0.01")
TOLERANCE = 0.02


def compare(results: dict[str, dict[str, Any]], tolerance: float = TOLERANCE) -> dict[str, dict[str, Any]]:
    """Per setting: each metric's difference from the reference run and whether all are within ``tolerance``.

    ``results[name]`` holds ``metrics`` ({key: value}) and ``scores`` (test image scores in a fixed
    order), or ``error``. NaN metrics (undefined on both) count as equal.

    Example:
        >>> compare({REFERENCE: {"metrics": {"i_auroc": 0.8}, "scores": [1.0, 3.0]},
        ...          "x": {"metrics": {"i_auroc": 0.81}, "scores": [1.0, 3.1]}})["x"]["within"]
        True
    """
    ref = results[REFERENCE]
    out: dict[str, dict[str, Any]] = {}
    for name, res in results.items():
        if "error" in res or "error" in ref:
            out[name] = {"error": res.get("error") or f"reference failed: {ref['error']}", "within": False}
            continue
        deltas = {}
        for key in METRICS:
            a, b = ref["metrics"].get(key, math.nan), res["metrics"].get(key, math.nan)
            deltas[key] = 0.0 if (math.isnan(a) and math.isnan(b)) else b - a
        r, s = np.asarray(ref["scores"], float), np.asarray(res["scores"], float)
        span = float(r.max() - r.min()) or 1.0
        score_diff = float(np.abs(s - r).max() / span) if r.shape == s.shape else math.nan
        within = all(abs(d) <= tolerance for d in deltas.values())
        out[name] = {"deltas": deltas, "max_score_diff_rel": score_diff, "within": within}
    return out


def markdown(results: dict[str, dict[str, Any]], checked: dict[str, dict[str, Any]], tolerance: float) -> str:
    """The metric check as a Markdown table (values and differences from fp32, in [0, 1])."""
    head = "| setting | " + " | ".join(METRICS) + " | max score diff (rel.) | within ±" + f"{tolerance:g} |"
    lines = [head, "|" + "---|" * (len(METRICS) + 3)]
    for name, res in results.items():
        c = checked[name]
        if "error" in c:
            lines.append(f"| {name} | error: {c['error']} |" + " |" * (len(METRICS) + 1))
            continue
        cells = []
        for key in METRICS:
            value = res["metrics"].get(key, math.nan)
            cells.append(f"{value:.4f}" + ("" if name == REFERENCE else f" ({c['deltas'][key]:+.4f})"))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {c['max_score_diff_rel']:.2e} | "
                     + ("yes" if c["within"] else "**no**") + " |")
    return "\n".join(lines)


def _run_one(name: str, overrides: list[str], root: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Train, calibrate and evaluate one setting; its metrics and test image scores."""
    import torch

    from trd import api
    from trd.config import load_config
    from trd.data.dataset import PairDataset, build_cache
    from trd.data.samples import split_samples
    from trd.detector import load_detector
    from trd.scoring.infer import iterate_outputs

    cfg = load_config(None, [
        f"data.root={root}", "data.category=puck", f"data.image_size={args.size}", f"data.cache_dir={work / 'cache'}",
        "model.backbone=resnet18", "model.weights=none", f"train.epochs={args.epochs}", "train.batch_size=8",
        f"train.device={args.device}", *overrides])
    run = work / name.replace(" ", "_").replace("+", "and").replace("(", "").replace(")", "")
    start = time.perf_counter()
    model_path = api.fit(cfg, run, progress=False, log=lambda _: None)
    fit_s = time.perf_counter() - start
    result = api.evaluate(model_path, out_dir=run, pro_method="both", panels=False, device=args.device)
    detector, cfg, _, _ = load_detector(model_path, torch.device(args.device))
    dataset = PairDataset(split_samples(cfg.data, "test"), cfg.data, build_cache(cfg.data))
    scores = np.empty(len(dataset))
    for batch, out in iterate_outputs(detector, dataset, torch.device(args.device), 8, 0):
        scores[batch["index"].numpy()] = out["score"].float().cpu().numpy()
    return {"overrides": overrides, "fit_s": round(fit_s, 1),
            "metrics": {k: result["overall"][k] for k in METRICS}, "scores": scores.tolist()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for metric-check.json and metric-check.md")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--settings", default=",".join(SETTINGS),
                   help=f"comma-separated subset of: {', '.join(SETTINGS)} (the fp32 run is always included)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--size", type=int, default=128, help="image side in px (synthetic data and model input)")
    p.add_argument("--tolerance", type=float, default=TOLERANCE, help="largest allowed |metric difference|")
    args = p.parse_args(argv)
    names = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        p.error(f"unknown setting(s) {unknown}; known: {', '.join(SETTINGS)}")
    args.names = [REFERENCE, *[n for n in names if n != REFERENCE]]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    warnings.simplefilter("ignore")  # random teachers warn on every build
    from trd.data.synth import generate

    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="trd-metric-check-") as tmp:
        root = Path(tmp) / "data"
        generate(root, ["puck"], size=args.size, seed=0)
        for name in args.names:
            print(f"metric check: {name}", flush=True)
            try:
                results[name] = _run_one(name, SETTINGS[name], root, Path(tmp), args)
            except Exception as exc:  # noqa: BLE001 - one failing setting must not hide the others
                results[name] = {"overrides": SETTINGS[name], "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    checked = compare(results, args.tolerance)
    report = {"device": args.device, "epochs": args.epochs, "size": args.size, "tolerance": args.tolerance,
              "results": results, "checked": checked}
    (args.out / "metric-check.json").write_text(json.dumps(report, indent=1))
    text = markdown(results, checked, args.tolerance)
    (args.out / "metric-check.md").write_text(text + "\n")
    print(text, flush=True)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
