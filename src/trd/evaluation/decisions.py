"""Decisions at the deployment thresholds on a labelled split: what the thresholds promised, what happened.

Image level: the false-positive rate on the good test images (with a Clopper-Pearson 95 % interval,
images being the independent unit) beside the promised rate, and the recall per defect type.
Pixel level: the share of good test images with more than ``pixel_fpr`` of their pixels flagged (the
event the pixel threshold bounds, with its interval), the mean per-pixel false-positive rate over
good images, and the recall of defect pixels per defect type (pixels of one image are not
independent, so these two get no interval).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..scoring.threshold import Thresholds, pixels_allowed

#: Confidence level of the binomial intervals.
CI_LEVEL = 0.95


def clopper_pearson(successes: int, trials: int, level: float = CI_LEVEL) -> tuple[float, float]:
    """Exact (Clopper-Pearson) confidence interval of a binomial proportion; NaNs for 0 trials.

    Example:
        >>> [round(v, 4) for v in clopper_pearson(1, 10)]
        [0.0025, 0.445]
    """
    if trials == 0:
        return math.nan, math.nan
    from scipy.stats import binomtest

    ci = binomtest(int(successes), int(trials)).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def _rate(successes: int, trials: int) -> dict[str, Any]:
    lo, hi = clopper_pearson(successes, trials)
    return {"count": int(successes), "of": int(trials), "rate": successes / trials if trials else math.nan,
            "ci95": [lo, hi]}


def operating_point(scores: np.ndarray, defects: Sequence[str], maps: np.ndarray, gts: np.ndarray,
                    thresholds: Thresholds, flagged: np.ndarray | None = None) -> dict[str, Any]:
    """Decisions of ``thresholds`` on N labelled images: scores (N,), defect folder names ("good" for
    good images), fused maps and binary masks (N x H x W); ``flagged`` (N,): the decisions when
    reject rules narrowed them (`trd.scoring.decision`; default: score above the image threshold).

    Returns ``{"image": {...}, "pixel": {...}}`` with the promise (``guaranteed_fpr``, None when
    unknown) and the realised rates as ``{"count", "of", "rate", "ci95": [low, high]}``.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    defects = np.asarray(list(defects), dtype=object)
    good = defects == "good"
    flagged = scores > thresholds.image if flagged is None else np.asarray(flagged, dtype=bool)
    recall = {str(d): _rate(int(flagged[defects == d].sum()), int((defects == d).sum()))
              for d in sorted(set(defects[~good]))}
    image = {"threshold": thresholds.image, "target_fpr": thresholds.target_fpr,
             "guaranteed_fpr": thresholds.guaranteed_fpr, "fpr_bound_90": thresholds.fpr_bound_90(),
             "n_validation": thresholds.n_validation,
             "false_positives": _rate(int(flagged[good].sum()), int(good.sum())), "recall": recall}

    n_pixels = int(np.prod(maps.shape[1:]))
    allowed = pixels_allowed(n_pixels, thresholds.pixel_fpr)
    above = (maps > thresholds.pixel).reshape(len(maps), -1)
    counts = above.sum(axis=1)
    pixel_recall = {}
    for d in recall:
        own = defects == d
        truth = gts[own].reshape(int(own.sum()), -1)
        pixel_recall[d] = float(above[own][truth].mean()) if truth.any() else math.nan
    pixel = {"threshold": thresholds.pixel, "pixel_fpr": thresholds.pixel_fpr,
             "guaranteed_rate": thresholds.guaranteed_fpr,
             "images_over_share": _rate(int((counts[good] > allowed).sum()), int(good.sum())),
             "mean_pixel_fpr": float(counts[good].mean() / n_pixels) if good.any() else math.nan,
             "pixel_recall": pixel_recall}
    return {"image": image, "pixel": pixel}


def _pct(value: float | None) -> str:
    return "?" if value is None or not math.isfinite(value) else f"{100.0 * value:.3g} %"


def decision_lines(point: dict[str, Any], thresholds: Thresholds) -> list[str]:
    """Plain sentences for the console and the report: promise, realised rate (95 % CI), recall."""
    fp = point["image"]["false_positives"]
    lo, hi = fp["ci95"]
    recall = ", ".join(f"{d} {r['count']}/{r['of']} = {_pct(r['rate'])}" for d, r in point["image"]["recall"].items())
    over = point["pixel"]["images_over_share"]
    olo, ohi = over["ci95"]
    lines = [
        thresholds.image_statement(),
        f"  on this split: {fp['count']} of {fp['of']} good images flagged = {_pct(fp['rate'])} "
        f"(95 % CI {_pct(lo)} to {_pct(hi)}); recall {recall or 'no defective images'}",
        thresholds.pixel_statement(),
        f"  on this split: {over['count']} of {over['of']} good images over the share = {_pct(over['rate'])} "
        f"(95 % CI {_pct(olo)} to {_pct(ohi)}); mean pixel false-positive rate {_pct(point['pixel']['mean_pixel_fpr'])}",
    ]
    warning = thresholds.warning()
    return [*lines, f"warning: {warning}"] if warning else lines
