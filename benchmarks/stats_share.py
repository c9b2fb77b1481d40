"""What taking the normalisation statistics from part of the validation split costs (docs/METHOD_NOTES.md §15).

Calibrates one trained model twice on its own validation split, with ``score.stats_share`` 0.2 (the
default: statistics from 20 % of the samples, thresholds from the others, exact) and 1.0 (the
reference: statistics from all, thresholds from the same, approximate), and evaluates both on the
test split: the metrics, the branch stds and the statements, side by side in one run.

    .venv/bin/python benchmarks/stats_share.py runs/demo/puck/trd/model.pt
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import warnings
from pathlib import Path

import torch

from trd.calibration import calibrate
from trd.data.dataset import PairDataset
from trd.data.samples import split_samples
from trd.detector import Detector, TorchEngine, load_detector
from trd.workflows.evaluate import evaluate_detector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.2, 1.0])
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    detector, cfg, _, _ = load_detector(args.model)
    cfg.data.cache_dir = "none"
    validation = PairDataset(split_samples(cfg.data, "validation"), cfg.data, None)
    test = PairDataset(split_samples(cfg.data, "test"), cfg.data, None)
    print("| score.stats_share | I-AUROC | P-AUROC | AU-PRO@30 % | std rgb | std geo | image statement |")
    print("|---|---|---|---|---|---|---|")
    for share in args.shares:
        run_cfg = dataclasses.replace(cfg, score=dataclasses.replace(cfg.score, stats_share=share))
        cal = calibrate(detector.model, validation, run_cfg, torch.device("cpu"))
        calibrated = Detector(detector.model, cal.scorer, cal.reference).eval()
        engine = TorchEngine(calibrated, torch.device("cpu"), False)
        with tempfile.TemporaryDirectory() as out:
            overall = evaluate_detector(engine, calibrated.branches, test, run_cfg, cal.thresholds, Path(out),
                                        panels=False)["overall"]
        stds = [float(cal.scorer.norm[b].std) for b in ("rgb", "geo") if b in cal.scorer.norm]
        print(f"| {share:g} | {overall['i_auroc']:.4f} | {overall['p_auroc']:.4f} | {overall['aupro@0.3']:.4f} | "
              + " | ".join(f"{s:.5f}" for s in stds) + f" | {cal.thresholds.image_statement()} |")


if __name__ == "__main__":
    main()
