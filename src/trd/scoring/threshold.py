"""Deployment thresholds with a finite-sample guarantee, chosen on good samples only (never test data).

Decision rule everywhere: a score is anomalous iff it is strictly greater than the threshold.

The order-statistic (split-conformal) rule: with n good validation samples and a new good sample
that is exchangeable with them (same process, no drift), the new sample's score is equally likely to
take any of the n + 1 ranks, so it exceeds the k-th largest validation score with probability at
most k / (n + 1). The toolkit takes the largest k with k / (n + 1) <= the requested rate; when even
k = 1 (the validation maximum) promises more than requested, n is too small and every statement
says so. The promise holds on average over validation sets; the rate of one fixed threshold
scatters around it (Beta(k, n + 1 - k) for continuous scores), see :meth:`Thresholds.fpr_bound_90`.

Pixels within an image are not independent, so the exchangeable unit is the image. The pixel
threshold bounds, per good image, the share of its pixels that are flagged: each validation image
gives the value its own ``pixel_fpr`` share of pixels exceeds (:func:`fpr_threshold` on that image),
and the pixel threshold is the k-th largest of these values. Promise: a good image has more than
``pixel_fpr`` of its pixels above the pixel threshold with probability <= k / (n + 1).

DEPARTURE (docs/METHOD_NOTES.md §8, an addition): the reference reports metrics only and has no
decision threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from ..errors import ConfigError, TRDError

#: Tolerance for rates times counts that are meant to be integers (0.01 * 100 = 1.0000000000000002).
_EPS = 1e-6


def check_rate(rate: float, what: str = "target false-positive rate") -> None:
    """ConfigError unless ``rate`` is in [0, 1)."""
    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"{what} must be in [0, 1), got {rate}")


def _finite_values(values: np.ndarray) -> np.ndarray:
    s = np.asarray(values).reshape(-1)
    if s.size == 0:
        raise TRDError("no validation scores to choose a threshold from (empty validation split?)")
    if not np.isfinite(s).all():
        raise TRDError("validation scores contain NaN or inf; cannot choose a threshold")
    return s


def pixels_allowed(n_pixels: int, share: float) -> int:
    """How many of an image's ``n_pixels`` may exceed a threshold at a ``share`` rate: floor(share * n)."""
    return int(math.floor(share * n_pixels + _EPS))


def fpr_threshold(normal_scores: np.ndarray, target_fpr: float) -> float:
    """Smallest threshold t with at most ``target_fpr`` of the given scores strictly above t.

    The empirical quantile, with no finite-sample guarantee: at most k = floor(target_fpr * n) may
    exceed t, so t is the (k+1)-th largest score. Ties at t stay below it. Used per image for the
    pixel threshold (any shape; flattened, no float64 copy).
    """
    check_rate(target_fpr)
    s = _finite_values(normal_scores)
    k = min(pixels_allowed(s.size, target_fpr), s.size - 1)
    return float(np.partition(s, s.size - 1 - k)[s.size - 1 - k])


def threshold_rank(n: int, target_fpr: float) -> int:
    """k of the order-statistic rule: the largest k >= 1 with k / (n + 1) <= target (1 when none is)."""
    check_rate(target_fpr)
    if n < 1:
        raise TRDError("no validation scores to choose a threshold from (empty validation split?)")
    return min(max(int(math.floor(target_fpr * (n + 1) + _EPS)), 1), n)


def samples_needed(target_fpr: float) -> int:
    """The smallest number of validation samples n for which k / (n + 1) <= target holds with k = 1."""
    check_rate(target_fpr)
    if target_fpr <= 0.0:
        raise ConfigError("a false-positive rate of 0 cannot be guaranteed by any number of samples")
    return max(int(math.ceil(1.0 / target_fpr - _EPS)) - 1, 1)


def order_statistic_threshold(values: np.ndarray, target_fpr: float) -> tuple[float, int]:
    """(the k-th largest of ``values``, k) with k from :func:`threshold_rank`.

    Example:
        >>> order_statistic_threshold(np.arange(1.0, 100.0), 0.05)  # n = 99: k = 5, promise 5 %
        (95.0, 5)
    """
    s = _finite_values(values)
    k = threshold_rank(s.size, target_fpr)
    return float(np.partition(s, s.size - k)[s.size - k]), k


def conformal_p_value(sorted_scores: np.ndarray, score: float) -> float:
    """(1 + #{validation scores >= score}) / (n + 1), from the n validation scores sorted ascending.

    For a new good sample exchangeable with the validation samples, P(p <= a) <= a for every a
    (super-uniform; uniform on {1/(n+1), ..., 1} for continuous scores). A score above the image
    threshold (the k-th largest validation score) has p <= k / (n + 1), one at or below it p > k / (n + 1).

    Example:
        >>> conformal_p_value(np.array([1.0, 2.0, 3.0]), 2.5), conformal_p_value(np.array([1.0, 2.0, 3.0]), 9.0)
        (0.5, 0.25)
    """
    n = len(sorted_scores)
    return (1 + n - int(np.searchsorted(sorted_scores, score, side="left"))) / (n + 1)


def _pct(rate: float) -> str:
    return f"{100.0 * rate:.3g} %"


def bound_90(rank: int | np.ndarray, n: int) -> float | np.ndarray:
    """The false-positive rate that the k-th largest of n validation scores keeps with 90 % probability
    over validation sets: the 90th percentile of Beta(k, n + 1 - k) (continuous scores; ties only
    lower the rate). Vectorised over ``rank``.

    Example:
        >>> round(bound_90(1, 22), 4)  # k/(n+1) = 4.35 % on average; 9.94 % with 90 % confidence
        0.0994
    """
    from scipy.special import betaincinv  # the Beta quantile; light to import, unlike scipy.stats

    rank = np.asarray(rank)
    out = np.asarray(betaincinv(rank, n + 1 - rank, 0.9))
    return float(out) if out.ndim == 0 else out


def rank_of(value: float, scores: np.ndarray) -> int:
    """k for a threshold ``value`` among validation ``scores``: 1 + the scores strictly above it (the
    value is at least the k-th largest, so a new good score exceeds it at most as often)."""
    return 1 + int(np.count_nonzero(np.asarray(scores, dtype=np.float64) > value))


@dataclass(frozen=True)
class Thresholds:
    """Image and pixel thresholds with what they promise on good samples.

    ``target_fpr`` / ``pixel_fpr``: the requested rates (``score.target_fpr`` / ``score.pixel_fpr``).
    ``n_validation``: good samples the thresholds were chosen on; ``rank``: k of the order-statistic
    rule (both thresholds are the k-th largest of their per-image statistic). Both are None for
    thresholds written by trd before the rule existed: their guarantee is unknown.
    ``source``: where the good samples came from (a dataset, category and split).
    ``pixel_rank``: k of the pixel threshold when it differs from the image threshold's (an image
    threshold typed by hand, :meth:`with_image`; None: ``rank``). ``approximate``: the samples also
    gave the normalisation statistics, so the promise is approximate (module docstring).
    """

    image: float
    pixel: float
    target_fpr: float
    pixel_fpr: float
    n_validation: int | None = None
    rank: int | None = None
    source: str = ""
    pixel_rank: int | None = None
    approximate: bool = False

    @property
    def _samples(self) -> str:
        """How the statements name the samples: validation samples, or the samples `trd calibrate` used."""
        parts = self.source.split(" + ") if self.source else []  # a pool: "k of A (validation split) + m of B"
        kind = "validation" if all("(validation split)" in part for part in parts) else "calibration"
        return f"n = {self.n_validation} {kind} samples"

    @property
    def known(self) -> bool:
        """Whether the thresholds carry their guarantee (False for models of older trd versions)."""
        return self.n_validation is not None and self.rank is not None

    @property
    def guaranteed_fpr(self) -> float | None:
        """k / (n + 1): the false-positive rate promised for a new good sample (None: unknown)."""
        return self.rank / (self.n_validation + 1) if self.known else None

    @property
    def pixel_guaranteed_fpr(self) -> float | None:
        """k / (n + 1) of the pixel threshold: the chance that a new good image has more than
        ``pixel_fpr`` of its pixels flagged (None: unknown)."""
        return (self.pixel_rank or self.rank) / (self.n_validation + 1) if self.known else None

    @property
    def smallest_supported_fpr(self) -> float | None:
        """1 / (n + 1): the smallest rate n validation samples can promise."""
        return 1.0 / (self.n_validation + 1) if self.known else None

    @property
    def sufficient(self) -> bool | None:
        """Whether the promise meets the requested rate (None: unknown)."""
        return None if not self.known else self.guaranteed_fpr <= self.target_fpr + 1e-12

    def fpr_bound_90(self) -> float | None:
        """The rate this one image threshold stays below with 90 % probability over validation sets
        (:func:`bound_90` of its rank; None: unknown)."""
        return bound_90(self.rank, self.n_validation) if self.known else None

    def pixel_bound_90(self) -> float | None:
        """:meth:`fpr_bound_90` of the pixel threshold."""
        return bound_90(self.pixel_rank or self.rank, self.n_validation) if self.known else None

    def _promise(self, average: float, bound: float, unit: str = "") -> str:
        """``<= A[unit] on average over validation sets; this threshold <= B with 90 % confidence (n = ...)``."""
        why = ", which also gave the normalisation statistics: approximate" if self.approximate else ""
        return (f"<= {_pct(average)}{unit} on average over validation sets; this threshold <= {_pct(bound)} with 90 % "
                f"confidence ({self._samples}{why})")

    def image_statement(self) -> str:
        """E.g. ``image threshold 2.4672: false-positive rate <= 9.09 % on average over validation
        sets; this threshold <= 20.6 % with 90 % confidence (n = 10 validation samples)``."""
        head = f"image threshold {self.image:.4f}: false-positive rate"
        if not self.known:
            return f"{head} unknown (chosen by an older trd for a {_pct(self.target_fpr)} target, without a guarantee)"
        return f"{head} {self._promise(self.guaranteed_fpr, self.fpr_bound_90())}"

    def pixel_statement(self) -> str:
        """What the pixel threshold promises per good image (the unit that is exchangeable)."""
        head = f"pixel threshold {self.pixel:.4f}: more than {_pct(self.pixel_fpr)} of a good image's pixels flagged"
        if not self.known:
            return f"{head}: how often is unknown (chosen by an older trd, without a guarantee)"
        return f"{head} in {self._promise(self.pixel_guaranteed_fpr, self.pixel_bound_90(), ' of good images')}"

    def with_image(self, value: float, scores: np.ndarray, source: str) -> Thresholds:
        """These thresholds with the image threshold set to ``value`` by hand (the review page's
        explorer), its promise recomputed from the validation ``scores`` it is compared with (k = 1 +
        the scores above it). ConfigError for a value that is not finite or below the lowest
        score (all n samples would be flagged: nothing is promised)."""
        scores = _finite_values(scores)
        if not self.known or scores.size != self.n_validation:
            raise ConfigError(f"the model's {scores.size} stored validation scores do not match its thresholds "
                              f"(n = {self.n_validation}); run `trd calibrate` first")
        if not math.isfinite(value):
            raise ConfigError(f"image threshold {value!r} is not a number")
        rank = rank_of(value, scores)
        if rank > scores.size:
            raise ConfigError(f"image threshold {value:.6g} is below the lowest validation score "
                              f"{float(scores.min()):.6g}: every good validation sample would be flagged, so it "
                              "promises nothing; choose a higher value")
        return replace(self, image=float(value), rank=rank, pixel_rank=self.pixel_rank or self.rank, source=source)

    def warning(self) -> str | None:
        """Why the promise falls short of the request, and how many samples would meet it; else None."""
        if not self.known:
            return ("the thresholds' guarantee is unknown: they were chosen by an older trd (empirical quantile); "
                    "run `trd calibrate` to re-derive them with a stated guarantee")
        if self.sufficient:
            return None
        need = samples_needed(self.target_fpr) if self.target_fpr > 0 else None
        needs = f"{_pct(self.target_fpr)} needs at least {need} good samples" if need else \
            "a rate of 0 cannot be guaranteed"
        return (f"{self._samples.removeprefix('n = ')} cannot support the requested {_pct(self.target_fpr)} false-positive "
                f"rate: the smallest rate they support is {_pct(self.smallest_supported_fpr)}; {needs}")

    def statements(self) -> list[str]:
        """The image and pixel statements, then the warning if any (for logs, reports and metadata)."""
        lines = [self.image_statement(), self.pixel_statement()]
        warning = self.warning()
        return [*lines, f"warning: {warning}"] if warning else lines

    def to_dict(self) -> dict[str, Any]:
        """The stored record: the fields, plus what they promise in numbers and words (for readers
        of model.pt and ONNX metadata; ignored by :meth:`from_dict`)."""
        base = {f.name: getattr(self, f.name) for f in fields(self)}
        return base | {
            "rule": "order statistic: the k-th largest of n validation values, P(false positive) <= k/(n+1) on "
                    "average over validation sets; Beta(k, n+1-k) for one threshold" if self.known else
                    "unknown (older trd)",
            "guaranteed_fpr": self.guaranteed_fpr,
            "fpr_bound_90": self.fpr_bound_90(),
            "pixel_guaranteed_fpr": self.pixel_guaranteed_fpr,
            "pixel_fpr_bound_90": self.pixel_bound_90(),
            "smallest_supported_fpr": self.smallest_supported_fpr,
            "samples_needed": samples_needed(self.target_fpr) if self.target_fpr > 0 else None,
            "sufficient": self.sufficient,
            "statements": self.statements(),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Thresholds:
        """Read a stored record; records of older trd versions lack ``n_validation``/``rank``/``source``
        (and ``pixel_rank``/``approximate``: thresholds chosen on a validation split by an older trd
        came from the samples that gave the normalisation statistics, so they count as approximate)."""
        missing = {"image", "pixel", "target_fpr", "pixel_fpr"} - set(raw)
        if missing:
            raise TRDError(f"thresholds record lacks {sorted(missing)}")
        n, rank, pixel_rank = raw.get("n_validation"), raw.get("rank"), raw.get("pixel_rank")
        if (n is None) != (rank is None) or (n is not None and not 1 <= int(rank) <= int(n)) or (
                pixel_rank is not None and (n is None or not 1 <= int(pixel_rank) <= int(n))):
            raise TRDError(f"thresholds record has an impossible rank {rank!r} of {n!r} validation samples")
        source = str(raw.get("source", ""))
        approximate = raw.get("approximate", n is not None and (not source or source.endswith("(validation split)")))
        return cls(float(raw["image"]), float(raw["pixel"]), float(raw["target_fpr"]), float(raw["pixel_fpr"]),
                   None if n is None else int(n), None if rank is None else int(rank), source,
                   None if pixel_rank is None else int(pixel_rank), bool(approximate))


def choose_thresholds(image_scores: np.ndarray, pixel_values: np.ndarray, target_fpr: float, pixel_fpr: float,
                      source: str, approximate: bool = False) -> Thresholds:
    """Thresholds from n good samples' image scores and per-image pixel values (:func:`fpr_threshold`
    of each image's map at ``pixel_fpr``), both by the order-statistic rule at ``target_fpr``.

    Example:
        >>> th = choose_thresholds(np.arange(10.0), np.arange(10.0) / 10, 0.01, 0.01, "validation")
        >>> th.image, th.rank, round(th.guaranteed_fpr, 4), th.sufficient
        (9.0, 1, 0.0909, False)
    """
    check_rate(pixel_fpr, "pixel false-positive rate")
    image, rank = order_statistic_threshold(image_scores, target_fpr)
    pixel_values = _finite_values(pixel_values)
    if pixel_values.size != np.asarray(image_scores).size:
        raise TRDError("need one pixel value per validation image")
    pixel, _ = order_statistic_threshold(pixel_values, target_fpr)
    return Thresholds(image, pixel, target_fpr, pixel_fpr, int(pixel_values.size), rank, source,
                      approximate=approximate)
