"""Deployment thresholds, chosen on the VALIDATION split only (normal samples), never on test data.

Decision rule everywhere: a score is anomalous iff it is strictly greater than the threshold.
DEPARTURE (docs/METHOD_NOTES.md §8, an addition): the reference reports metrics only and has no
decision threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ConfigError, TRDError


def fpr_threshold(normal_scores: np.ndarray, target_fpr: float) -> float:
    """Smallest threshold t with at most ``target_fpr`` of the normal scores strictly above t.

    Quantile convention: with n scores, at most k = floor(target_fpr * n) may exceed t, so t is the
    (k+1)-th largest score (an actual score: any lower value would let k+1 or more through). Ties
    at t stay below it, so the realised rate can be lower than the target; target 0 gives the max.
    Works for image scores (1-D) and pixel maps (any shape; flattened, no float64 copy).
    """
    if not 0.0 <= target_fpr < 1.0:
        raise ConfigError(f"target false-positive rate must be in [0, 1), got {target_fpr}")
    s = np.asarray(normal_scores).reshape(-1)
    if s.size == 0:
        raise TRDError("no validation scores to choose a threshold from (empty validation split?)")
    if not np.isfinite(s).all():
        raise TRDError("validation scores contain NaN or inf; cannot choose a threshold")
    # tolerance: target_fpr * n is often meant to be an integer (0.29 * 100 = 28.999999999999996)
    k = min(int(math.floor(target_fpr * s.size + 1e-6)), s.size - 1)
    return float(np.partition(s, s.size - 1 - k)[s.size - 1 - k])


@dataclass(frozen=True)
class Thresholds:
    """Image and pixel thresholds for binary decisions, with the validation FPRs they target."""

    image: float
    pixel: float
    target_fpr: float
    pixel_fpr: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, float]) -> Thresholds:
        missing = {"image", "pixel", "target_fpr", "pixel_fpr"} - set(raw)
        if missing:
            raise TRDError(f"thresholds record lacks {sorted(missing)}")
        return cls(float(raw["image"]), float(raw["pixel"]), float(raw["target_fpr"]), float(raw["pixel_fpr"]))
