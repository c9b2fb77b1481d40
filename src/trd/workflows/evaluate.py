"""Evaluate a calibrated detector on a labelled split: metrics, per-sample pictures and the report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..calibration import threshold_source
from ..config import Config, apply_input_overrides
from ..console import Progress
from ..data.cache import build_cache
from ..data.dataset import PairDataset
from ..data.inputs import camera_stored, load_scan
from ..data.samples import split_samples
from ..data.transforms import resize_rgb
from ..detector import MODALITY_INPUTS
from ..detector.passes import iterate_outputs
from ..evaluation.attribution import attribution_by_defect, peak_on_defect
from ..evaluation.decisions import decision_lines, operating_point
from ..evaluation.precision import precision_check, precision_line
from ..evaluation.tables import evaluate_arrays
from ..reporting.figures import save_sample_images
from ..reporting.labels import region_lines
from ..reporting.report import SampleRow, write_metrics, write_report
from ..reporting.sections import border_section, decisions_section
from ..runfolder import folder_lock
from ..runtime.findings import find
from ..scoring.border import BorderCheck, border_check
from ..scoring.threshold import Thresholds
from .engine import Engine, OrtChoice, load_model


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


def evaluate_detector(engine: Engine, branches: list[str], dataset: PairDataset, cfg: Config, thresholds: Thresholds,
                      out_dir: Path, *, pro_method: str = "exact", panels: bool = True,
                      title: str = "TRD evaluation", batch_size: int = 8, explain: bool = False,
                      validation_border: BorderCheck | None = None, split: str = "test",
                      reference: Engine | None = None, precision: tuple[str, str] = ("fp32", ""),
                      log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run ``engine`` over ``dataset``, compute every metric, write metrics, pictures and the report to ``out_dir``.

    ``engine``: numpy in, numpy out (`trd.workflows.engine`), returning the detector's outputs
    including ``scored_<branch>``, and with ``explain`` its modality attribution
    (`Detector.explain`, three model passes per sample); ``validation_border`` is the border
    check stored with the model (None for older models); ``log`` receives the progress lines
    (`trd.console.Progress`: a bar instead on a terminal). ``reference``: the same model at fp32
    when ``engine`` runs at a reduced ``precision`` (name, provider): both score every batch and
    the result's ``precision_check`` says what the precision changed (`trd.evaluation.precision`).
    """
    n, size = len(dataset), cfg.data.image_size
    fused = np.empty((n, size, size), np.float32)
    gts = np.empty((n, size, size), bool)
    scores = np.empty(n, np.float64)
    per_branch = {b: np.empty((n, size, size), np.float32) for b in branches}
    shares = {b: np.empty(n, np.float64) for b in branches}
    attribution = {m: np.full(n, np.nan) for m in MODALITY_INPUTS} if explain else None
    ref_fused = np.empty((n, size, size), np.float32) if reference is not None else None
    ref_scores = np.empty(n, np.float64)

    def run(rgb: torch.Tensor, x3d: torch.Tensor) -> dict[str, np.ndarray]:
        out = engine(rgb.numpy(), x3d.numpy())
        if reference is not None:
            out |= {f"reference_{k}": v for k, v in reference(rgb.numpy(), x3d.numpy()).items()}
        return out

    with Progress("test: scoring", n, "samples", log) as progress:
        for batch, out in iterate_outputs(run, dataset, torch.device("cpu"), batch_size, cfg.data.num_workers):
            idx = batch["index"].numpy()
            if ref_fused is not None:
                ref_fused[idx] = out["reference_anomaly_map"][:, 0]
                ref_scores[idx] = out["reference_score"]
            fused[idx] = out["anomaly_map"][:, 0]
            gts[idx] = batch["mask"][:, 0].numpy() > 0.5
            scores[idx] = out["score"]
            for b in branches:
                per_branch[b][idx] = out[f"scored_{b}"][:, 0]
                shares[b][idx] = out[f"share_{b}"]
            for m in attribution or {}:
                attribution[m][idx] = out[f"attribution_{m}"]
            progress.advance(len(idx))
    samples = dataset.samples
    labels = np.array([s.label for s in samples])
    defects = [s.defect for s in samples]
    result = evaluate_arrays(scores, labels, fused, gts, defects, branch_maps=per_branch,
                             limits=tuple(cfg.score.aupro_limits), pro_method=pro_method)
    if attribution is not None:
        on_defect = peak_on_defect(fused, gts, int(round(cfg.score.sigma)))
        result["modality_attribution"] = attribution_by_defect(defects, attribution["colour"], attribution["geometry"],
                                                               on_defect)
    out_dir.mkdir(parents=True, exist_ok=True)
    scale_floor = _display_range(fused, thresholds.pixel * 1.5)[1]
    rows, flagged = [], np.zeros(n, bool)
    # Regions (each sample read again at its own resolution, measured in its cloud) and the pictures
    # are the slow part of a report: shown as a step of its own.
    with Progress("test: regions" + (" and pictures" if panels else ""), n, "samples", log) as drawing:
        for i, sample in enumerate(samples):
            scan = load_scan(sample, cfg.data, dataset.cache, dataset.reference, with_cloud=True)
            found = find(fused[i], float(scores[i]), scan.rgb.shape[:2], scan.cloud, cfg, thresholds)
            flagged[i] = found.decision.anomalous
            pictures = []
            if panels:
                h, w = scan.rgb.shape[:2]
                pictures = save_sample_images(
                    out_dir, f"samples/{sample.defect}/{sample.rgb.stem}", rgb=resize_rgb(scan.rgb, size),
                    x3d=scan.x3d, gt=gts[i] if sample.label else None, anomaly_map=fused[i],
                    branch_maps={b: per_branch[b][i] for b in branches},
                    scale=(0.0, max(scale_floor, float(scores[i])), thresholds.pixel),  # covers the score it explains
                    outlines=[(r.outline, found.rules.failure(r) is None) for r in found.regions],
                    outline_scale=(size / w, size / h))
            rows.append(SampleRow(
                name=f"{sample.defect}/{sample.rgb.stem}", category=sample.category, defect=sample.defect,
                label=sample.label, score=float(scores[i]), decision=bool(found.decision.anomalous),
                branch_shares={b: float(shares[b][i]) for b in branches}, pictures=pictures,
                attribution=None if attribution is None else {m: float(v[i]) for m, v in attribution.items()},
                regions=region_lines(found), reason=found.decision.reason))
            drawing.advance()
    if ref_fused is not None:
        fp32 = evaluate_arrays(ref_scores, labels, ref_fused, gts, defects, limits=tuple(cfg.score.aupro_limits),
                               pro_method=pro_method)
        result["precision_check"] = precision_check(*precision, result["overall"], fp32["overall"], scores, ref_scores,
                                                    fused, ref_fused, thresholds.image)
    point = operating_point(scores, defects, fused, gts, thresholds, flagged)
    result["operating_point"] = point | {"statements": decision_lines(point, thresholds)}
    result["thresholds"] = thresholds.to_dict()
    test_border = border_check(fused.reshape(n, -1).argmax(axis=1), size)
    result["border_check"] = {"validation": None if validation_border is None else validation_border.to_dict(),
                              "this_split": test_border.to_dict()}
    write_metrics(out_dir, result)
    notes = [
        "Normalisation statistics come from the validation split (a part of it that the thresholds do not use, "
        f"unless the statements say approximate); thresholds from {thresholds.source or 'the validation split'}.",
        f"AU-PRO: {PRO_NOTES[pro_method]}.",
        "Parts of the score: how much of each sample's score came from the colour student and how much from the "
        "shape student. Each student also sees the other input, so this is not which input caused the score"
        + ("; that is measured per sample ('which input caused it')." if explain else
           " (`trd test --explain` measures that)."),
    ]
    if "precision_check" in result:
        notes.insert(0, f"Scored at reduced precision: {precision_line(result['precision_check'])}.")
    if thresholds.source == threshold_source(cfg, split):
        notes.insert(0, "The thresholds were chosen on this very split: the realised rates below are not an "
                        "honest estimate of what they do on new samples.")
    sections = [decisions_section(point, thresholds), border_section(validation_border, test_border, cfg, split)]
    write_report(out_dir, title=title, result=result, rows=rows, config=cfg.to_dict(), notes=notes, sections=sections)
    return result


def evaluate(model_path: str | Path, *, data_root: str | Path | None = None, split: str = "test",
             out_dir: str | Path | None = None, pro_method: str = "exact", panels: bool = True,
             device: str = "auto", xyz_unit: str | None = None, flip_z: bool | None = None,
             explain: bool = False, engine: str = "auto", threads: int | None = None, ep: str = "auto",
             precision: str = "fp32", log: Callable[[str], None] = print) -> dict[str, Any]:
    """Metrics, per-sample pictures and the HTML report of a trained model on a labelled split.

    Args:
        model_path: a ``model.pt`` written by `fit`.
        data_root: the dataset root; default: the one the model was trained on.
        split: "test" (default) or any labelled split of the dataset.
        out_dir: where ``metrics.json``, ``metrics.csv``, ``report.md``, ``report.html`` and
            ``samples/`` (the pictures) go; default: the model's folder.
        pro_method: AU-PRO curve: "exact" (official MVTec), "thresholds" (the reference code's 100
            thresholds) or "both".
        panels: draw each sample's pictures (RGB, 3D, heatmaps with its regions outlined) for the report.
        device: "auto", "cpu", "cuda" or "cuda:N".
        xyz_unit, flip_z: how this split's point clouds are stored, when it differs from the
            training data (default: as trained; see README "Data formats").
        explain: also measure modality attribution per sample (three model passes per sample;
            runs the torch engine).
        engine: "auto" (onnxruntime on a CPU when installed, the export cached beside the model),
            "onnx" or "torch" (`trd.workflows.engine`); the metrics agree within 1e-5.
        threads: intra-op threads (default: the CPUs this process may use).
        ep, precision: onnxruntime's execution provider and precision (`trd.runtime.providers`);
            a reduced precision also scores the split at fp32 on the CPU provider in the same run
            and reports the change (``precision_check``, `trd.evaluation.precision`).
        log: where progress lines go (the one-time export, for instance).

    Returns:
        The result dict: ``overall``, ``per_defect``, ``per_branch`` metric tables, ``counts``
        (see `trd.evaluation.tables.evaluate_arrays`), ``thresholds`` with their guarantee,
        ``operating_point`` (the decisions at the thresholds: realised false-positive rate with
        its 95 % interval, recall per defect type; `trd.evaluation.decisions`), ``border_check``
        and, with ``explain``, ``modality_attribution`` per defect type.

    Example:
        >>> from trd import api
        >>> result = api.evaluate("runs/puck/model.pt")  # doctest: +SKIP
        >>> round(result["overall"]["i_auroc"], 3)  # doctest: +SKIP
        0.953
    """
    model_path = Path(model_path)
    model = load_model(model_path, engine=engine, device=device, threads=threads, explain=explain,
                       choice=OrtChoice(ep, precision), log=log)
    reference = None
    if model.precision != "fp32":
        reference = load_model(model_path, engine="onnx", threads=threads, choice=OrtChoice("cpu", "fp32"), log=log)
    cfg = model.config
    if data_root is not None:
        cfg.data.root = str(data_root)
    apply_input_overrides(cfg, xyz_unit, flip_z)
    samples = split_samples(cfg.data, split, camera_optional=camera_stored(model.reference))
    dataset = PairDataset(samples, cfg.data, build_cache(cfg.data), model.reference)
    out = Path(out_dir) if out_dir is not None else model_path.parent
    title = f"TRD ({cfg.model.variant}) on {cfg.data.category or Path(cfg.data.root).name} / {split}"
    border = model.extra.get("border_check")
    with folder_lock(out, "trd test"):  # the report folder has one writer, like a run folder
        return evaluate_detector(model.engine, model.branches, dataset, cfg, model.thresholds, out,
                                 pro_method=pro_method, panels=panels, title=title, explain=explain, split=split,
                                 validation_border=None if border is None else BorderCheck.from_dict(border),
                                 reference=None if reference is None else reference.engine,
                                 precision=(model.precision, model.provider), log=log)


SUMMARY_KEYS = (("i_auroc", "I-AUROC"), ("p_auroc", "P-AUROC"), ("aupro@0.3", "AUPRO@30%"), ("aupro@0.01", "AUPRO@1%"))


def summary_line(result: dict[str, Any]) -> str:
    """One line with the headline metrics of an evaluation, e.g. ``I-AUROC 0.9530  P-AUROC 0.9812 ...``."""
    overall = result["overall"]
    return "  ".join(f"{label} {overall[key]:.4f}" for key, label in SUMMARY_KEYS if key in overall)


def decision_summary(result: dict[str, Any]) -> str:
    """The decisions at the deployment thresholds as printed by ``trd test``: each threshold's
    promise, the realised rate on the split with its 95 % interval, recall per defect type."""
    return "\n".join(result["operating_point"]["statements"])
