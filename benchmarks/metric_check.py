"""Do the speed settings change the results? A small run in fp32 against each fast setting.

    .venv/bin/python benchmarks/metric_check.py --device cuda --out metric-check/

Synthetic data (`trd.data.synth`, category puck, the `trd synth` defaults at --size px), random
teachers (``model.weights=none``), the demo's small model (resnet18). Two checks:

- **inference**: one model trained in fp32, evaluated on the test split as trained and with each
  inference speed setting (bf16 autocast, channels_last, torch.compile). Same weights, so the
  differences are the setting's own numerical effect.
- **training**: the same run trained with each speed setting (bf16, channels_last, torch.compile,
  teacher cache off, fused Adam off) from the same seed. Training amplifies any numerical
  difference (a different rounding at step 1 gives a different model by step 100), so the fp32 run
  with another seed is reported too: the run-to-run spread the settings are compared against.

Per setting: the metrics, their differences from fp32, the largest test image score difference
relative to the fp32 scores' range, and whether every metric difference is within the tolerance
(``--tolerance``, absolute, on metrics in [0, 1]; for training, or within the other seed's
difference when that is larger). Random teachers make the metrics low; the differences are what
this measures. Writes ``OUT/metric-check.json`` and ``OUT/metric-check.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

REFERENCE = "fp32 (reference)"
NOISE = "fp32, seed 43 (run-to-run spread)"
#: Training runs: overrides of each; the fp32 run and the other seed are always included.
TRAIN_SETTINGS: dict[str, list[str]] = {
    REFERENCE: [],
    NOISE: ["train.seed=43"],
    "bf16 autocast": ["train.precision=bf16"],
    "channels_last": ["train.channels_last=true"],
    "torch.compile": ["train.compile=true"],
    "teacher cache off": ["train.cache_teacher=false"],
    "fused Adam off": ["train.fused_adam=false"],
}
#: Inference runs of the fp32 model: (bf16 autocast, channels_last, torch.compile).
INFER_SETTINGS: dict[str, tuple[bool, bool, bool]] = {
    REFERENCE: (False, False, False),
    "bf16 autocast": (True, False, False),
    "channels_last": (False, True, False),
    "torch.compile": (False, False, True),
    "channels_last + bf16": (True, True, False),
}
METRICS = ("i_auroc", "p_auroc", "aupro@0.3", "aupro100@0.3", "aupro@0.01")
TOLERANCE = 0.02


def compare(results: dict[str, dict[str, Any]], tolerance: float = TOLERANCE,
            noise: str | None = None) -> dict[str, dict[str, Any]]:
    """Per setting: each metric's difference from the reference run and whether all are within
    ``tolerance`` (or within the ``noise`` run's own difference, when given and larger).

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
        out[name] = {"deltas": deltas, "max_score_diff_rel": score_diff}
    spread = out.get(noise, {}).get("deltas", {}) if noise else {}
    for name, c in out.items():
        if "deltas" in c:  # the spread run is the yardstick, not a setting: no verdict
            c["within"] = None if name == noise else all(
                abs(d) <= max(tolerance, abs(spread.get(k, 0.0))) for k, d in c["deltas"].items())
    return out


def markdown(results: dict[str, dict[str, Any]], checked: dict[str, dict[str, Any]], tolerance: float) -> str:
    """One check as a Markdown table (values and differences from fp32, in [0, 1])."""
    head = "| setting | " + " | ".join(METRICS) + f" | max score diff (rel.) | within ±{tolerance:g} |"
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
        verdict = {True: "yes", False: "**no**", None: "(the spread)"}[c["within"]]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {c['max_score_diff_rel']:.2e} | {verdict} |")
    return "\n".join(lines)


def _config(root: Path, work: Path, args: argparse.Namespace, overrides: list[str]):
    from trd.config import load_config

    return load_config(None, [
        f"data.root={root}", "data.category=puck", f"data.image_size={args.size}", f"data.cache_dir={work / 'cache'}",
        "model.backbone=resnet18", "model.weights=none", f"train.epochs={args.epochs}", "train.batch_size=8",
        f"train.device={args.device}", *overrides])


def _evaluate(model_path: Path, setting: tuple[bool, bool, bool], device_name: str) -> dict[str, Any]:
    """Metrics and image scores of ``model_path`` on its test split, run with ``setting``."""
    import torch

    from trd.data.cache import build_cache
    from trd.data.dataset import PairDataset
    from trd.data.samples import split_samples
    from trd.detector import load_detector
    from trd.evaluation.tables import evaluate_arrays
    from trd.detector.passes import iterate_outputs

    bf16, channels_last, compile_ = setting
    device = torch.device(device_name)
    detector, cfg, _, _ = load_detector(model_path, device)
    if channels_last:
        detector = detector.to(memory_format=torch.channels_last)
    runner = torch.compile(detector) if compile_ else detector

    def run(rgb: torch.Tensor, x3d: torch.Tensor) -> dict[str, torch.Tensor]:
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            return runner(rgb, x3d)

    dataset = PairDataset(split_samples(cfg.data, "test"), cfg.data, build_cache(cfg.data))
    n, size = len(dataset), cfg.data.image_size
    scores, maps, gts = np.empty(n), np.empty((n, size, size), np.float32), np.empty((n, size, size), bool)
    for batch, out in iterate_outputs(run, dataset, device, 8, 0):
        idx = batch["index"].numpy()
        scores[idx] = out["score"].float().cpu().numpy()
        maps[idx] = out["anomaly_map"][:, 0].float().cpu().numpy()
        gts[idx] = batch["mask"][:, 0].numpy() > 0.5
    labels = np.array([s.label for s in dataset.samples])
    result = evaluate_arrays(scores, labels, maps, gts, [s.defect for s in dataset.samples],
                             limits=tuple(cfg.score.aupro_limits), pro_method="both")
    return {"metrics": {k: result["overall"][k] for k in METRICS}, "scores": scores.tolist()}


def _guarded(name: str, fn, *args: Any) -> dict[str, Any]:
    print(f"metric check: {name}", flush=True)
    start = time.perf_counter()
    try:
        return fn(*args) | {"seconds": round(time.perf_counter() - start, 1)}
    except Exception as exc:  # noqa: BLE001 - one failing setting must not hide the others
        return {"error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}


def _train_and_evaluate(name: str, root: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from trd import api

    run = work / name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
    model_path = api.fit(_config(root, work, args, TRAIN_SETTINGS[name]), run, progress=False, log=lambda _: None)
    return {"overrides": TRAIN_SETTINGS[name], "model": str(model_path),
            **_evaluate(model_path, INFER_SETTINGS[REFERENCE], args.device)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for metric-check.json and metric-check.md")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--train", default=",".join(n for n in TRAIN_SETTINGS if n not in (REFERENCE, NOISE)),
                   help=f"training settings to check, comma-separated ('' for none): {', '.join(list(TRAIN_SETTINGS)[2:])}")
    p.add_argument("--infer", default=",".join(n for n in INFER_SETTINGS if n != REFERENCE),
                   help=f"inference settings to check, comma-separated: {', '.join(list(INFER_SETTINGS)[1:])}")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--size", type=int, default=128, help="image side in px (synthetic data and model input)")
    p.add_argument("--tolerance", type=float, default=TOLERANCE, help="largest allowed |metric difference|")
    args = p.parse_args(argv)
    for flag, known in (("train", TRAIN_SETTINGS), ("infer", INFER_SETTINGS)):
        names = [s.strip() for s in getattr(args, flag).split(",") if s.strip()]
        unknown = [n for n in names if n not in known]
        if unknown:
            p.error(f"--{flag}: unknown setting(s) {unknown}; known: {', '.join(known)}")
        setattr(args, f"{flag}_names", names)
    args.train_names = [REFERENCE, *([NOISE] if args.train_names else []), *args.train_names]
    args.infer_names = [REFERENCE, *[n for n in args.infer_names if n != REFERENCE]]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    warnings.simplefilter("ignore")  # random teachers warn on every build
    from trd.data.synth import generate

    args.out.mkdir(parents=True, exist_ok=True)
    train: dict[str, dict[str, Any]] = {}
    infer: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="trd-metric-check-") as tmp:
        work = Path(tmp)
        root = work / "data"
        generate(root, ["puck"], size=args.size, seed=0)
        for name in args.train_names:
            train[name] = _guarded(f"train {name}", _train_and_evaluate, name, root, work, args)
        reference_model = train[REFERENCE].get("model")
        for name in args.infer_names:
            if reference_model is None:
                infer[name] = {"error": "the fp32 reference run failed"}
                continue
            infer[name] = _guarded(f"infer {name}", _evaluate, Path(reference_model), INFER_SETTINGS[name], args.device)
    checked_infer = compare(infer, args.tolerance)
    checked_train = compare(train, args.tolerance, NOISE)
    report = {"device": args.device, "epochs": args.epochs, "size": args.size, "tolerance": args.tolerance,
              "inference": {"results": infer, "checked": checked_infer},
              "training": {"results": train, "checked": checked_train}}
    (args.out / "metric-check.json").write_text(json.dumps(report, indent=1))
    text = "\n\n".join([
        f"Inference settings on the fp32-trained model (same weights; tolerance ±{args.tolerance:g}):",
        markdown(infer, checked_infer, args.tolerance),
        f"Training settings, each trained from seed 42 for {args.epochs} epochs (tolerance ±{args.tolerance:g}, "
        "or the fp32 seed-43 run's difference where larger):",
        markdown(train, checked_train, args.tolerance)])
    (args.out / "metric-check.md").write_text(text + "\n")
    print(text, flush=True)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
