"""Metric tables of one category: overall, per defect type and per branch (docs/METHOD.md §6).

Result layout (JSON-serialisable: plain floats/ints/strings, NaN where a metric is undefined)::

    {"overall": {...}, "per_defect": {defect: {...}}, "per_branch": {branch: {...}},
     "counts": {"images", "defective", "label_mismatches"}, "pro_method": "exact"}

Metric keys: ``i_auroc``, ``i_ap``, ``i_f1max``, ``p_auroc``, ``p_ap``, ``p_f1max``, and AU-PRO
as ``aupro@<limit>`` (exact curve) and/or ``aupro100@<limit>`` (the reference HEAD's 100
thresholds), e.g. ``aupro@0.3``, so the variant is visible in every table that shows the number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .aupro import DEFAULT_LIMITS, au_pro
from .metrics import binary_metrics, image_auroc

IMAGE_KEYS = ("i_auroc", "i_ap", "i_f1max")
PIXEL_KEYS = ("p_auroc", "p_ap", "p_f1max")
PRO_METHODS = {"exact": ("exact",), "thresholds": ("thresholds",), "both": ("exact", "thresholds")}
_PRO_PREFIX = {"exact": "aupro", "thresholds": "aupro100"}


def pro_keys(limits: Sequence[float], pro_method: str) -> list[str]:
    """AU-PRO metric names for the limits, e.g. ["aupro@0.3", "aupro@0.01"]."""
    return [f"{_PRO_PREFIX[m]}@{lim:g}" for m in PRO_METHODS[pro_method] for lim in limits]


def _stack(maps: np.ndarray, n: int, what: str) -> np.ndarray:
    """N x H x W view of N x H x W or N x 1 x H x W arrays."""
    a = np.asarray(maps)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3 or a.shape[0] != n:
        raise ValueError(f"{what} must be N x H x W (or N x 1 x H x W) with N = {n}, got {a.shape}")
    return a


def _aupro(maps: np.ndarray, gts: np.ndarray, limits: Sequence[float], pro_method: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for method in PRO_METHODS[pro_method]:
        for lim, value in au_pro(maps, gts, limits, method).items():
            out[f"{_PRO_PREFIX[method]}@{lim:g}"] = value
    return out


def _metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    maps: np.ndarray | None,
    gts: np.ndarray | None,
    limits: Sequence[float],
    pro_method: str,
) -> dict[str, float]:
    """Image metrics, plus pixel metrics and AU-PRO when maps and masks are given (else NaN)."""
    image = binary_metrics(scores, labels)
    out = dict(zip(IMAGE_KEYS, (image["auroc"], image["ap"], image["f1max"])))
    if maps is None or gts is None:
        return out | dict.fromkeys([*PIXEL_KEYS, *pro_keys(limits, pro_method)], math.nan)
    pixel = binary_metrics(maps, gts)
    out |= dict(zip(PIXEL_KEYS, (pixel["auroc"], pixel["ap"], pixel["f1max"])))
    return out | _aupro(maps, gts, limits, pro_method)


def evaluate_arrays(
    scores: np.ndarray,
    labels: np.ndarray,
    maps: np.ndarray | None,
    gts: np.ndarray | None,
    defects: Sequence[str],
    branch_maps: Mapping[str, np.ndarray] | None = None,
    limits: Sequence[float] = DEFAULT_LIMITS,
    pro_method: str = "exact",
) -> dict[str, Any]:
    """All metric tables of one category's test set.

    scores (N,): image scores (max of the fused map); labels (N,): folder labels; maps / gts:
    N x H x W fused smoothed maps and binary masks (None: pixel metrics are NaN); defects: the
    defect folder of each sample ("good" for normal ones); branch_maps: per-branch maps already
    normalised and smoothed (§5.2), whose image scores are their maxima; pro_method: "exact",
    "thresholds" or "both".

    Image labels are the max of the binarised mask when masks are given (as the reference code,
    docs/METHOD.md §2.7), else ``labels``; ``counts.label_mismatches`` counts samples where the two
    disagree (e.g. a defect that vanishes when the mask is resized). Per defect type: image metrics
    of that defect's samples against all "good" samples, pixel metrics and AU-PRO on that defect's
    images only.
    """
    if pro_method not in PRO_METHODS:
        raise ValueError(f"pro_method must be one of {sorted(PRO_METHODS)}, got {pro_method!r}")
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = scores.size
    given = np.asarray(labels).reshape(-1) > 0.5
    defects = np.asarray(list(defects), dtype=object)
    if given.size != n or defects.size != n:
        raise ValueError(f"scores, labels and defects need one entry per image; got {n}, {given.size}, {defects.size}")
    maps = None if maps is None else _stack(maps, n, "maps")
    gts = None if gts is None else _stack(gts, n, "gts") > 0.5
    y = given if gts is None else gts.reshape(n, -1).any(axis=1)

    result: dict[str, Any] = {"overall": _metrics(scores, y, maps, gts, limits, pro_method)}
    good = defects == "good"
    per_defect: dict[str, dict[str, float]] = {}
    subsets: dict[str, np.ndarray] = {}  # per defect type: its images and all good ones
    for name in sorted(set(defects[~good])):
        own = defects == name
        subset = subsets[str(name)] = own | good
        own_maps = None if maps is None else maps[own]
        own_gts = None if gts is None else gts[own]
        per_defect[str(name)] = {"images": int(own.sum())} | _metrics(
            scores[subset], y[subset], own_maps, own_gts, limits, pro_method
        )
    result["per_defect"] = per_defect
    per_branch: dict[str, dict[str, float]] = {}
    branch_defect: dict[str, dict[str, float]] = {}
    for name, raw in (branch_maps or {}).items():
        bm = _stack(raw, n, f"branch map {name!r}")
        branch_scores = bm.reshape(n, -1).max(axis=1)
        per_branch[str(name)] = _metrics(branch_scores, y, bm, gts, limits, pro_method)
        # Which branch finds which defect type on its own (image level: cheap, and the crossmodal story).
        branch_defect[str(name)] = {d: image_auroc(branch_scores[s], y[s]) for d, s in subsets.items()}
    result["per_branch"] = per_branch
    result["branch_i_auroc_per_defect"] = branch_defect
    result["counts"] = {
        "images": n,
        "defective": int(y.sum()),
        "label_mismatches": int(np.sum(y != given)),
    }
    result["pro_method"] = pro_method
    return result
