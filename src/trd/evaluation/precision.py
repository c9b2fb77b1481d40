"""What a reduced precision (fp16, bf16) changes, measured against fp32 on the same samples.

`trd test --precision fp16` scores the split twice in one run, at the requested precision and at
fp32 on onnxruntime's CPU provider (the reference), and reports the change of every metric, the
largest difference of an image score and of a map value, and how many decisions at the image
threshold flip. Exported scores that quietly differ from the trained model's are what this
prevents: the numbers are in ``metrics.json`` (``precision_check``), the report and the printed
summary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .tables import IMAGE_KEYS, PIXEL_KEYS

#: Metrics shown in the printed line (the others are in metrics.json).
SHOWN = (("i_auroc", "I-AUROC"), ("p_auroc", "P-AUROC"), ("aupro@0.3", "AUPRO@30%"), ("aupro@0.01", "AUPRO@1%"))


def precision_check(precision: str, provider: str, overall: Mapping[str, float], reference: Mapping[str, float],
                    scores: np.ndarray, reference_scores: np.ndarray, maps: np.ndarray, reference_maps: np.ndarray,
                    image_threshold: float) -> dict[str, Any]:
    """The comparison of a run at ``precision`` (on ``provider``) with its fp32 reference.

    ``overall``/``reference``: the two runs' overall metrics; ``scores``/``maps``: image scores and
    fused maps of both runs, sample by sample.
    """
    keys = [k for k in overall if k in reference and (k in IMAGE_KEYS or k in PIXEL_KEYS or k.startswith("aupro"))]
    metrics = {k: {"fp32": float(reference[k]), precision: float(overall[k]),
                   "change": float(overall[k]) - float(reference[k])} for k in keys}
    score_diff = np.abs(np.asarray(scores, np.float64) - np.asarray(reference_scores, np.float64))
    scale = max(float(np.max(np.abs(reference_scores))) if len(reference_scores) else 0.0, 1e-12)
    flips = int(np.sum((np.asarray(scores) > image_threshold) != (np.asarray(reference_scores) > image_threshold)))
    return {"precision": precision, "provider": provider, "reference": "fp32 on CPUExecutionProvider",
            "metrics": metrics, "max_score_diff": float(score_diff.max(initial=0.0)),
            "max_score_diff_rel": float(score_diff.max(initial=0.0)) / scale,
            "max_map_diff": float(np.max(np.abs(np.asarray(maps, np.float64) - reference_maps), initial=0.0)),
            "decisions_changed": flips, "samples": int(len(scores))}


def precision_line(check: Mapping[str, Any]) -> str:
    """One line: ``precision fp16 (CUDAExecutionProvider) vs fp32 (CPU, same run): I-AUROC -0.0010 ...``."""
    parts = []
    for key, label in SHOWN:
        change = check["metrics"].get(key, {}).get("change")
        if change is not None and not math.isnan(change):
            parts.append(f"{label} {change:+.4f}")
    return (f"precision {check['precision']} ({check['provider']}) vs fp32 (CPUExecutionProvider, same run): "
            f"{', '.join(parts)}; largest score difference {check['max_score_diff']:.4g} "
            f"({100 * check['max_score_diff_rel']:.2g} % of the largest score); image-threshold decisions changed on "
            f"{check['decisions_changed']} of {check['samples']} samples (the score alone, before reject rules)")
