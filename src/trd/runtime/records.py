"""The result record of one scored sample, schema ``trd.record/2`` (torch-free).

`trd predict` writes one per line of ``predictions.jsonl``; `trd serve` answers one per
``POST /v1/score``. Both build it here, so the two cannot drift. Keys (docs/SERVE.md)::

    schema            "trd.record/2"
    name              sample name (RGB file stem)
    key               the scan's identity: `trd.data.identity.content_key` of its files
    rgb, xyz          input paths relative to predict's --input (file names for --rgb/--xyz), or
                      uploaded file names (serve): never an absolute path of this machine
    score             image anomaly score
    anomalous         the decision: score > threshold.image and, with reject rules, a region passes them
    score_above_threshold  score > threshold.image (the decision of trd.record/1)
    decided_by        why, in words
    rules             {min_area_mm2, min_depth_mm} (only when set)
    image_threshold   threshold.image (the key predict wrote before the schema had a version)
    threshold         {image, pixel, target_fpr, guaranteed_fpr, fpr_bound_90, validation_samples,
                       approximate, statement}
    image_px          {width, height} of the RGB image: regions are in its pixels
    regions           [{pixels, box, centre_px, peak_score, area_mm2, depth_mm, height_mm, centre_mm,
                        outline, passes_rules}], region 1 (the first) holds the highest score
    regions_omitted   regions beyond the first MAX_REGIONS
    heatmap_range     {vmin, vmax}: the colour scale of the heatmaps (it covers the score)
    branch_shares     {branch: share of the score}
    modality_attribution  {modality: score drop} (only with --explain)
    timings_ms        {read, score, total} (+ queue in serve)
    model             {sha256, engine, provider, precision, trd_version}
    p_value           (1 + #{validation scores >= score}) / (n + 1); null for models without stored
                      validation scores (written by an older trd)
    input_health      {brightness, missing_3d, z_median_m, training: {key: {mean, std, n}}}: this scan's
                      `trd.data.inputs.ScanHealth` and the training scans' moments (the drift monitor's inputs)

Predict adds ``heatmap``, ``mask`` and ``outline`` (file paths); serve adds ``id`` and, on request,
the images. Version 1 had no ``key``, no regions, and predict's ``rgb``/``xyz`` were the paths as
typed; version 2 added them and changed the meaning of ``anomalous`` (reject rules may narrow it).
:func:`record_identity` reads both versions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..data.inputs import InputStats, Moments, ScanHealth
from ..scoring.threshold import Thresholds, conformal_p_value
from .findings import Findings
from .heatmap import map_range

SCHEMA = "trd.record/2"


def path_identity(rgb: str | Path, xyz: str | Path) -> str:
    """The identity of a record written before records carried a ``key``: its files' resolved paths
    (relative ones resolved from the current folder, as trd did then)."""
    return f"paths:{Path(rgb).resolve()}\n{Path(xyz).resolve()}"


def record_identity(record: Mapping[str, Any]) -> str:
    """Which scan a record is of: its content ``key``; for version-1 lines without one, `path_identity`.
    Two records of one scan have the same identity (the question "is this scan done?" of
    `trd.workflows.predict.Ledger`, and of any store of records)."""
    key = record.get("key")
    return key if isinstance(key, str) and key else path_identity(record["rgb"], record["xyz"])


def threshold_record(thresholds: Thresholds) -> dict[str, Any]:
    """The thresholds a decision was taken at, with the guarantee in numbers and in words."""
    return {"image": thresholds.image, "pixel": thresholds.pixel, "target_fpr": thresholds.target_fpr,
            "guaranteed_fpr": thresholds.guaranteed_fpr, "fpr_bound_90": thresholds.fpr_bound_90(),
            "validation_samples": thresholds.n_validation, "approximate": thresholds.approximate,
            "statement": thresholds.image_statement()}


def findings_record(findings: Findings, score: float, pixel_threshold: float) -> dict[str, Any]:
    """The decision, the regions and the heatmaps' colour scale, as record keys."""
    decision = findings.decision
    vmin, vmax = map_range(pixel_threshold, score)
    h, w = findings.hw
    out: dict[str, Any] = {"anomalous": decision.anomalous, "score_above_threshold": decision.above_threshold,
                           "decided_by": decision.reason}
    if findings.rules.active:
        out["rules"] = findings.rules.to_dict()
    return out | {
        "image_px": {"width": w, "height": h},
        "regions": [r.to_dict() | {"passes_rules": findings.rules.failure(r) is None} for r in findings.regions],
        "regions_omitted": findings.omitted, "heatmap_range": {"vmin": vmin, "vmax": vmax}}


def model_record(sha256: str, engine: str, provider: str, precision: str = "fp32") -> dict[str, str]:
    """Which model (file content) scored, with which engine, execution provider (onnxruntime's, or
    the torch device) and precision."""
    return {"sha256": sha256, "engine": engine, "provider": provider, "precision": precision,
            "trd_version": __version__}


@dataclass(frozen=True)
class Baseline:
    """What a model's new scans are compared with: its validation image scores (sorted; None for
    models of an older trd) and the training scans' input-health moments (empty for older models)."""

    validation: np.ndarray | None = None
    health: Mapping[str, Moments] = field(default_factory=dict)

    @classmethod
    def of(cls, validation_scores: Sequence[float] | None, inputs: InputStats | None) -> Baseline:
        scores = None if validation_scores is None else np.sort(np.asarray(validation_scores, dtype=np.float64))
        return cls(scores, dict(inputs.health) if inputs is not None else {})


def _per_sample(outputs: Mapping[str, np.ndarray], prefix: str, j: int) -> dict[str, float]:
    return {k[len(prefix):]: float(v[j]) for k, v in outputs.items() if k.startswith(prefix)}


def build_record(outputs: Mapping[str, np.ndarray], j: int, *, name: str, key: str, rgb: str, xyz: str,
                 thresholds: Thresholds, findings: Findings, model: Mapping[str, str],
                 timings_ms: Mapping[str, float], baseline: Baseline | None = None,
                 health: ScanHealth | None = None) -> dict[str, Any]:
    """The record of sample ``j`` of a batch the engine scored into ``outputs``, with its
    ``findings`` (`trd.runtime.findings.find`).

    ``key``: the scan's `trd.data.identity.content_key`; ``timings_ms``: milliseconds spent on this
    sample (``read``, ``score``, ``total``, ...), rounded here to 0.01 ms. ``baseline`` (the
    model's) and ``health`` (the scan's, from `trd.runtime.batches.Batch.health`) give ``p_value``
    and ``input_health``.
    """
    score = float(outputs["score"][j])
    record: dict[str, Any] = {
        "schema": SCHEMA, "name": name, "key": key, "rgb": rgb, "xyz": xyz, "score": score,
        **findings_record(findings, score, thresholds.pixel), "image_threshold": thresholds.image,
        "threshold": threshold_record(thresholds), "branch_shares": _per_sample(outputs, "share_", j),
    }
    explained = _per_sample(outputs, "attribution_", j)
    if explained:
        record["modality_attribution"] = explained
    record["timings_ms"] = {k: round(float(v), 2) for k, v in timings_ms.items()}
    record["model"] = dict(model)
    baseline = baseline or Baseline()
    record["p_value"] = None if baseline.validation is None else conformal_p_value(baseline.validation, score)
    if health is not None:
        record["input_health"] = health.to_dict() | {
            "training": {key: moments.to_dict() for key, moments in baseline.health.items()}}
    return record
