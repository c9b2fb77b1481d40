"""Scoring: validation normalisation, fusion, smoothing and deployment thresholds (docs/METHOD.md §5)."""

from .maps import BRANCHES, STD_EPS, BranchStats, GaussianBlur, Scorer
from .threshold import Thresholds, choose_thresholds, fpr_threshold, order_statistic_threshold

__all__ = ["BRANCHES", "STD_EPS", "BranchStats", "GaussianBlur", "Scorer", "Thresholds", "choose_thresholds",
           "fpr_threshold", "order_statistic_threshold"]
