"""Evaluate a calibrated detector on a labelled split: metrics, side-by-side panels and the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config
from ..data.dataset import PairDataset, build_cache
from ..data.samples import split_samples
from ..detector import Detector, load_detector
from ..evaluation.evaluate import evaluate_arrays
from ..reporting.figures import BRANCH_WORDS, save_panel_png
from ..reporting.report import SampleRow, write_metrics, write_report
from ..scoring.infer import iterate_outputs
from ..scoring.threshold import Thresholds
from ..training.runtime import resolve_device


#: What the report says about the AU-PRO curve(s) of ``pro_method``.
PRO_NOTES = {
    "exact": "official exact MVTec curve",
    "thresholds": "the reference code's 100-threshold curve (aupro100@L)",
    "both": "aupro@L is the official exact MVTec curve, aupro100@L the reference code's 100-threshold curve",
}


def _display_range(values: np.ndarray, floor: float) -> tuple[float, float]:
    """A colour scale shared by every image of a run: 0 up to the 99.9th percentile (at least ``floor``)."""
    top = float(np.percentile(values, 99.9)) if values.size else floor
    return 0.0, max(top, floor, 1e-6)


def evaluate_detector(detector: Detector, dataset: PairDataset, cfg: Config, thresholds: Thresholds, out_dir: Path,
                      device: torch.device, *, pro_method: str = "exact", panels: bool = True,
                      title: str = "TRD evaluation", batch_size: int = 8) -> dict[str, Any]:
    """Run ``detector`` over ``dataset``, compute every metric, write metrics/panels/report to ``out_dir``."""
    n, size = len(dataset), cfg.data.image_size
    branches = detector.branches
    fused = np.empty((n, size, size), np.float32)
    gts = np.empty((n, size, size), bool)
    scores = np.empty(n, np.float64)
    per_branch = {b: np.empty((n, size, size), np.float32) for b in branches}
    contribs = {b: np.empty(n, np.float64) for b in branches}
    for batch, out in iterate_outputs(detector, dataset, device, batch_size, cfg.data.num_workers):
        idx = batch["index"].numpy()
        fused[idx] = out["anomaly_map"][:, 0].float().cpu().numpy()
        gts[idx] = batch["mask"][:, 0].numpy() > 0.5
        scores[idx] = out["score"].float().cpu().numpy()
        for b in branches:
            per_branch[b][idx] = out[f"scored_{b}"][:, 0].float().cpu().numpy()
            contribs[b][idx] = out[f"contrib_{b}"].float().cpu().numpy()
    samples = dataset.samples
    labels = np.array([s.label for s in samples])
    defects = [s.defect for s in samples]
    result = evaluate_arrays(scores, labels, fused, gts, defects, branch_maps=per_branch,
                             limits=tuple(cfg.score.aupro_limits), pro_method=pro_method)
    decisions = scores > thresholds.image
    result["thresholds"] = {"image": thresholds.image, "pixel": thresholds.pixel,
                            "target_fpr": thresholds.target_fpr, "source": "validation split"}
    result["decisions_at_validation_threshold"] = {
        "false_positive_rate": float(decisions[labels == 0].mean()) if (labels == 0).any() else float("nan"),
        "true_positive_rate": float(decisions[labels == 1].mean()) if (labels == 1).any() else float("nan"),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_metrics(out_dir, result)
    rows = []
    vmin, vmax = _display_range(fused, thresholds.pixel * 1.5)
    ranges = {b: _display_range(per_branch[b], 1.0) for b in branches}
    for i, sample in enumerate(samples):
        contribution = {BRANCH_WORDS[b]: float(contribs[b][i]) for b in branches}
        panel = None
        if panels:
            rgb, x3d, _ = dataset.load_raw(i)
            panel = f"panels/{sample.defect}/{sample.rgb.stem}.png"
            shares = ", ".join(f"{k} {v:+.2f}" for k, v in contribution.items())
            save_panel_png(out_dir / panel, rgb=rgb, x3d=x3d, gt=gts[i] if sample.label else None,
                           anomaly_map=fused[i], branch_maps={b: per_branch[b][i] for b in branches},
                           vmin=vmin, vmax=vmax, branch_ranges=ranges,
                           title=f"{sample.defect}/{sample.rgb.stem}  score {scores[i]:.2f} ({shares})")
        rows.append(SampleRow(name=f"{sample.defect}/{sample.rgb.stem}", category=sample.category, defect=sample.defect,
                              label=sample.label, score=float(scores[i]), decision=bool(decisions[i]),
                              contributions=contribution, panel=panel))
    notes = [
        f"Normalisation statistics and thresholds come from the validation split (target FPR {thresholds.target_fpr}).",
        f"AU-PRO: {PRO_NOTES[pro_method]}.",
        "Contributions: blurred z-score of each branch at the fused map's maximum; they add up to the score.",
    ]
    write_report(out_dir, title=title, result=result, rows=rows, config=cfg.to_dict(), notes=notes)
    return result


def evaluate(model_path: str | Path, *, data_root: str | Path | None = None, split: str = "test",
             out_dir: str | Path | None = None, pro_method: str = "exact", panels: bool = True,
             device: str = "auto") -> dict[str, Any]:
    """Metrics, heatmap panels and the HTML report of a trained model on a labelled split.

    Args:
        model_path: a ``model.pt`` written by `fit`.
        data_root: the dataset root; default: the one the model was trained on.
        split: "test" (default) or any labelled split of the dataset.
        out_dir: where ``metrics.json``, ``metrics.csv``, ``report.md``, ``report.html`` and
            ``panels/`` go; default: the model's folder.
        pro_method: AU-PRO curve: "exact" (official MVTec), "thresholds" (the reference code's 100
            thresholds) or "both".
        panels: draw one side-by-side PNG per sample for the report.
        device: "auto", "cpu", "cuda" or "cuda:N".

    Returns:
        The result dict: ``overall``, ``per_defect``, ``per_branch`` metric tables, ``counts``,
        ``thresholds`` and the decisions at the validation thresholds (see
        `trd.evaluation.evaluate.evaluate_arrays`).

    Example:
        >>> from trd import api
        >>> result = api.evaluate("runs/puck/model.pt")  # doctest: +SKIP
        >>> round(result["overall"]["i_auroc"], 3)  # doctest: +SKIP
        0.953
    """
    model_path = Path(model_path)
    dev = resolve_device(device)
    detector, cfg, thresholds, _ = load_detector(model_path, dev)
    if data_root is not None:
        cfg.data.root = str(data_root)
    dataset = PairDataset(split_samples(cfg.data, split), cfg.data, build_cache(cfg.data))
    out = Path(out_dir) if out_dir is not None else model_path.parent
    title = f"TRD ({cfg.model.variant}) on {cfg.data.category or Path(cfg.data.root).name} / {split}"
    return evaluate_detector(detector, dataset, cfg, thresholds, out, dev, pro_method=pro_method,
                             panels=panels, title=title)


SUMMARY_KEYS = (("i_auroc", "I-AUROC"), ("p_auroc", "P-AUROC"), ("aupro@0.3", "AUPRO@30%"), ("aupro@0.01", "AUPRO@1%"))


def summary_line(result: dict[str, Any]) -> str:
    """One line with the headline metrics of an evaluation, e.g. ``I-AUROC 0.9530  P-AUROC 0.9812 ...``."""
    overall = result["overall"]
    return "  ".join(f"{label} {overall[key]:.4f}" for key, label in SUMMARY_KEYS if key in overall)
