"""Anomaly maps, validation normalisation, fusion and deployment thresholds (method.md §5)."""

from .maps import (
    BRANCHES,
    STD_EPS,
    BranchStats,
    GaussianBlur,
    Scorer,
    branch_contributions,
    cosine_distance_map,
    fuse_maps,
)
from .threshold import Thresholds, fpr_threshold

__all__ = [
    "BRANCHES",
    "STD_EPS",
    "BranchStats",
    "GaussianBlur",
    "Scorer",
    "Thresholds",
    "branch_contributions",
    "cosine_distance_map",
    "fpr_threshold",
    "fuse_maps",
]
