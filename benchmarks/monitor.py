"""The drift monitor on a simulated line: scans until each drift's alarm, and false alarms of good scans.

    .venv/bin/python benchmarks/monitor.py --out benchmarks/results-cpu-monitor.json

Two parts, both with the monitor's defaults (window 200 scans, alpha 0.001 per check):

- **End to end** (`--repeats` R): a tiny model is fit on synthetic ``puck`` (32 px, resnet18 random
  teachers, 1 epoch, 20 training + 49 validation scans: the tests' line model) and exported to ONNX;
  scans of `trd.data.synth.write_line` are scored by `trd.workflows.predict.predict_samples` (what
  ``trd predict`` runs) and replayed through `trd.runtime.monitor.Monitor`. First ``--good`` good scans
  (default 1,000): the alarms they raise. Then, per drift and repeat, a window of good scans (a
  different slice of those) followed by drifted scans (fresh ones per repeat): the drifted scans
  until the drift's check raises its alarm (none within ``--max-scans``: reported as such). The
  defect rate is measured with this model too: it flags almost none of the generator's defects
  (random teachers, one epoch), so the number that says how fast a 10 % defect rate is noticed
  comes from the simulation below.
- **Simulation** (no model; scores are normal, turned into decisions and p-values by the toolkit's
  rule, so it holds for any model with the same recall): (a) the chance that 1,000 good scans raise
  any score alarm, over ``--runs`` runs each with its own validation set, for n = 49, 99, 199
  validation scores; (b) a 10 % defect rate with a model that flags ~50 % / ~90 % of defects at its
  threshold (defect scores shifted so), scans until the flag-rate alarm, median over ``--sim-repeats``.

Prints a table and writes the figures with the load of the machine (os.getloadavg) and the CPU
time of this process to ``--out``; also how many records the monitor replays per CPU second (the
1,000 good records, every check evaluated after each).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import norm

from trd.data.samples import unlabelled_samples
from trd.data.synth import Drift, generate, write_line
from trd.runtime.monitor import Monitor, MonitorSettings
from trd.scoring.threshold import conformal_p_value, order_statistic_threshold
from trd.workflows.engine import LoadedModel, load_model
from trd.workflows.predict import PREDICTIONS, predict_samples

SIZE = 32
DRIFTS = {"RGB brightness x 0.8": (Drift(brightness=0.8), "brightness"),
          "z offset +2 mm": (Drift(z_offset_m=0.002), "z_median_m"),
          "30 % of 3D points dropped": (Drift(dropped=0.3), "missing_3d"),
          "a defect rate of 10 %": (Drift(defect_rate=0.1), "flag_rate")}


def summary(found: list[int | None], limit: int) -> dict[str, Any]:
    """Scans until the alarm over repeats: how many alarmed within ``limit``, and the median with
    "no alarm" counted as more than ``limit`` (None when half or more did not alarm)."""
    ordered = sorted(math.inf if x is None else x for x in found)
    median = statistics.median(ordered)
    return {"scans_until_alarm": found, "alarmed": sum(x is not None for x in found), "repeats": len(found),
            "median": None if math.isinf(median) else median, "limit": limit}


def fit_line_model(folder: Path) -> Path:
    """The tests' line model (tests/monitor/conftest.py), exported to ONNX."""
    from trd import api
    from trd.config import load_config

    generate(folder / "data", ["puck"], size=SIZE, n_train=20, n_validation=49, n_test_good=0, n_test_per_defect=0,
             seed=3)
    cfg = load_config(None, ["model.backbone=resnet18", "model.weights=none", "model.decoder_blocks=1,1,1",
                             "model.bottleneck_blocks=1", f"data.image_size={SIZE}", "train.epochs=1",
                             "train.batch_size=4", "data.cache_dir=none", f"data.root={folder / 'data'}",
                             "data.category=puck"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = api.fit(cfg, folder / "run", progress=False, log=lambda _: None)
    return api.export(model, folder / "model.onnx")


def score(model: LoadedModel, folder: Path, count: int, start: int, drift: Drift | None = None) -> list[dict]:
    """Records of scans ``start..start + count - 1`` of the line, scored as `trd predict` does."""
    scans, out = folder / f"scans-{start}-{count}", folder / f"out-{start}-{count}"
    write_line(scans, count, start=start, size=SIZE, drift=drift)
    out.mkdir()
    samples, _ = unlabelled_samples(model.config.data, scans)
    predict_samples(model, samples, out, batch_size=32, log=lambda _: None)
    return [json.loads(line) for line in (out / PREDICTIONS).read_text().splitlines()]


def until_alarm(model: LoadedModel, folder: Path, prefix: list[dict], start: int, drift: Drift, check: str,
                limit: int, chunk: int = 25) -> tuple[int | None, float]:
    """Drifted scans (from scan ``start`` on, scored ``chunk`` at a time) until ``check`` raises its
    alarm after the good ``prefix`` (None: not within ``limit``), and the share of them flagged."""
    watch = Monitor()
    for record in prefix:
        watch.add(record)
    if watch.first_alarm:
        raise SystemExit(f"good prefix raised {watch.first_alarm}")
    flagged = 0
    for offset in range(0, limit, chunk):
        for record in score(model, folder, min(chunk, limit - offset), start + offset, drift):
            watch.add(record)
            flagged += record["anomalous"]
            if check in watch.first_alarm:
                return watch.seen - len(prefix), flagged / (watch.seen - len(prefix))
    return None, flagged / limit


def end_to_end(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    model = load_model(None, fit_line_model(folder))
    window = MonitorSettings().window
    good = score(model, folder, args.good, 0)
    watch, start = Monitor(), time.process_time()
    for record in good:
        watch.add(record)
    replay = len(good) / (time.process_time() - start)
    result: dict[str, Any] = {"good_scans": len(good), "good_alarms": dict(watch.raised),
                              "replay_records_per_cpu_s": replay, "drifts": {}}
    for d, (name, (drift, check)) in enumerate(DRIFTS.items()):
        found, flagged = [], []
        for r in range(args.repeats):
            prefix = [good[(r * window + i) % len(good)] for i in range(window)]
            at, share = until_alarm(model, folder, prefix, 100_000 * (d + 1) + 1_000 * r, drift, check, args.max_scans)
            found.append(at)
            flagged.append(share)
        result["drifts"][name] = {"check": check, **summary(found, args.max_scans), "flag_rate": statistics.mean(flagged)}
    return result


def simulate_line(rng: np.random.Generator, n: int, scans: int, defect_rate: float, shift: float,
                  onset: int) -> tuple[Monitor, float]:
    """A line of normal scores against n validation scores; from scan ``onset`` on, a
    ``defect_rate`` share of scans scores ``shift`` higher. The monitor after it, and the recall."""
    validation = rng.standard_normal(n)
    threshold, k = order_statistic_threshold(validation, 0.01)
    ordered, watch = np.sort(validation), Monitor()
    scores = rng.standard_normal(scans)
    defects = (np.arange(scans) >= onset) & (rng.random(scans) < defect_rate)
    scores[defects] += shift
    basis = {"model": {"sha256": "sim"}, "threshold": {"validation_samples": n, "guaranteed_fpr": k / (n + 1)}}
    for s in scores:
        watch.add(basis | {"anomalous": bool(s > threshold), "p_value": conformal_p_value(ordered, s)})
    return watch, float(norm.sf(threshold - shift))


def simulation(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    window = MonitorSettings().window
    false_alarms = {}
    for n in (49, 99, 199):
        alarms = [bool(simulate_line(rng, n, 1000, 0.0, 0.0, 0)[0].first_alarm) for _ in range(args.runs)]
        false_alarms[str(n)] = {"runs": args.runs, "runs_with_an_alarm": int(sum(alarms))}
    detection = {}
    for n in (49, 99, 199, 999):
        threshold = norm.isf(1 / (n + 1))  # where the k-th largest of n sits, roughly
        for recall in (0.5, 0.9):
            shift = threshold - norm.isf(recall)
            found, recalls = [], []
            for _ in range(args.sim_repeats):
                watch, r = simulate_line(rng, n, window + args.max_scans, 0.1, shift, window)
                at = watch.first_alarm.get("flag_rate")
                found.append(None if at is None or at <= window else at - window)
                recalls.append(r)
            detection[f"n={n}, recall~{recall}"] = {**summary(found, args.max_scans),
                                                    "recall": statistics.median(recalls)}
    return {"false_alarms_in_1000_good": false_alarms, "defect_rate_10pct": detection}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--good", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-scans", type=int, default=400)
    parser.add_argument("--runs", type=int, default=200, help="simulated runs of 1,000 good scans per n")
    parser.add_argument("--sim-repeats", type=int, default=25, help="simulated defect-rate streams per row")
    args = parser.parse_args()
    start, load_before = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="trd-monitor-bench-") as tmp:
        e2e = end_to_end(args, Path(tmp))
    sim = simulation(args)
    result = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
              "wall_s": time.perf_counter() - start, "cpu_s": time.process_time(),
              "settings": {"window": MonitorSettings().window, "alpha": MonitorSettings().alpha},
              "args": {k: v for k, v in vars(args).items() if k != "out"}, "end_to_end": e2e, "simulation": sim}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"good scans: {e2e['good_scans']}, alarms raised: {e2e['good_alarms'] or 'none'}; the monitor replays "
          f"{e2e['replay_records_per_cpu_s']:.0f} records per CPU second")
    for name, row in e2e["drifts"].items():
        print(f"{name:28s} {row['check']:11s} median {row['median']} scans ({row['alarmed']} of {row['repeats']} "
              f"within {row['limit']}); all {row['scans_until_alarm']}; flag rate {row['flag_rate']:.3f}")
    for n, row in sim["false_alarms_in_1000_good"].items():
        print(f"simulated: n = {n}: {row['runs_with_an_alarm']} of {row['runs']} runs of 1,000 good scans raised a score alarm")
    for name, row in sim["defect_rate_10pct"].items():
        print(f"simulated 10 % defects, {name}: recall {row['recall']:.2f}, median {row['median']} ({row['alarmed']} "
              f"of {row['repeats']} within {row['limit']}), all {row['scans_until_alarm']}")


if __name__ == "__main__":
    sys.exit(main())
