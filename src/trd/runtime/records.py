"""The result record of one scored sample, schema ``trd.record/1`` (torch-free).

`trd predict` writes one per line of ``predictions.jsonl``; `trd serve` answers one per
``POST /v1/score``. Both build it here, so the two cannot drift. Keys (docs/SERVE.md)::

    schema            "trd.record/1"
    name, rgb, xyz    sample name (RGB file stem); input paths (predict) or uploaded file names (serve)
    score, anomalous  image anomaly score; score > threshold.image
    image_threshold   threshold.image (the key predict wrote before the schema had a version)
    threshold         {image, pixel, target_fpr, guaranteed_fpr, validation_samples, statement}
    branch_shares     {branch: share of the score}
    modality_attribution  {modality: score drop} (only with --explain)
    timings_ms        {read, score, total} (+ queue in serve)
    model             {sha256, engine, provider, precision, trd_version}

Predict adds ``heatmap`` and ``mask`` (file paths); serve adds ``id`` and, on request, the images.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import __version__
from ..scoring.threshold import Thresholds

SCHEMA = "trd.record/1"


def threshold_record(thresholds: Thresholds) -> dict[str, Any]:
    """The thresholds a decision was taken at, with the guarantee in numbers and in words."""
    return {"image": thresholds.image, "pixel": thresholds.pixel, "target_fpr": thresholds.target_fpr,
            "guaranteed_fpr": thresholds.guaranteed_fpr, "validation_samples": thresholds.n_validation,
            "statement": thresholds.image_statement()}


def model_record(sha256: str, engine: str, provider: str, precision: str = "fp32") -> dict[str, str]:
    """Which model (file content) scored, with which engine, execution provider (onnxruntime's, or
    the torch device) and precision."""
    return {"sha256": sha256, "engine": engine, "provider": provider, "precision": precision,
            "trd_version": __version__}


def _per_sample(outputs: Mapping[str, np.ndarray], prefix: str, j: int) -> dict[str, float]:
    return {k[len(prefix):]: float(v[j]) for k, v in outputs.items() if k.startswith(prefix)}


def build_record(outputs: Mapping[str, np.ndarray], j: int, *, name: str, rgb: str, xyz: str,
                 thresholds: Thresholds, model: Mapping[str, str], timings_ms: Mapping[str, float]) -> dict[str, Any]:
    """The record of sample ``j`` of a batch the engine scored into ``outputs``.

    ``timings_ms``: milliseconds spent on this sample (``read``, ``score``, ``total``, ...), rounded
    here to 0.01 ms.
    """
    score = float(outputs["score"][j])
    record: dict[str, Any] = {
        "schema": SCHEMA, "name": name, "rgb": rgb, "xyz": xyz, "score": score,
        "anomalous": bool(score > thresholds.image), "image_threshold": thresholds.image,
        "threshold": threshold_record(thresholds), "branch_shares": _per_sample(outputs, "share_", j),
    }
    explained = _per_sample(outputs, "attribution_", j)
    if explained:
        record["modality_attribution"] = explained
    record["timings_ms"] = {k: round(float(v), 2) for k, v in timings_ms.items()}
    record["model"] = dict(model)
    return record
