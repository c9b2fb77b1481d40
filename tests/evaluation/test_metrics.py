"""Image/pixel AUROC, AP and F1-max: hand-computed values and equality with sklearn (ties included)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from trd.evaluation.metrics import (
    ClassScores,
    average_precision,
    binary_metrics,
    f1_max,
    image_auroc,
    pixel_auroc,
)


def _sklearn_f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    """The reference recipe (method.md §6) on sklearn's curve."""
    p, r, _ = precision_recall_curve(labels, scores)
    return float(np.max((2 * p * r / (p + r + 1e-7))[:-1]))


def test_hand_computed_example() -> None:
    scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
    # pairs (pos, neg): 0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4 -> 3/4
    assert image_auroc(scores, labels) == 0.75
    # thresholds 0.8: P=1, R=1/2; 0.35: P=2/3, R=1 -> AP = 1/2 * 1 + 1/2 * 2/3 = 5/6
    assert average_precision(scores, labels) == pytest.approx(5 / 6, abs=1e-15)
    # best F1 at 0.35: 2 * (2/3) * 1 / (2/3 + 1 + 1e-7)
    assert f1_max(scores, labels) == pytest.approx((4 / 3) / (5 / 3 + 1e-7), abs=1e-15)


def test_ties_count_half() -> None:
    # one positive tied with one of two negatives, above the other: (1 + 1/2) / 2
    assert image_auroc(np.array([1.0, 1.0, 0.0]), np.array([1, 0, 0])) == 0.75


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 300), st.integers(1, 8), st.integers(0, 2**16))
def test_equal_to_sklearn_with_ties(n: int, levels: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.3
    labels[:2] = [True, False]
    scores = rng.integers(0, levels, n).astype(np.float32) + labels * rng.random()  # many ties
    got = binary_metrics(scores, labels)
    assert got["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert got["ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert got["f1max"] == pytest.approx(_sklearn_f1_max(labels, scores), abs=1e-12)


def test_pixel_metrics_on_maps_keep_float32() -> None:
    rng = np.random.default_rng(3)
    gts = rng.random((6, 32, 32)) < 0.05
    maps = (rng.normal(size=gts.shape) + 1.5 * gts).astype(np.float32)
    split = ClassScores.from_arrays(maps, gts)
    assert split.pos.dtype == np.float32 and split.neg.dtype == np.float32
    assert split.pos.size == gts.sum() and np.all(np.diff(split.neg) >= 0)
    assert pixel_auroc(maps, gts) == pytest.approx(roc_auc_score(gts.ravel(), maps.ravel()), abs=1e-12)
    # 0/1 float masks are accepted like bool ones
    assert pixel_auroc(maps, gts.astype(np.float32)) == pixel_auroc(maps, gts)


def test_undefined_and_invalid() -> None:
    assert math.isnan(image_auroc(np.array([0.1, 0.2]), np.array([0, 0])))
    assert all(math.isnan(v) for v in binary_metrics(np.array([0.1, 0.2]), np.array([1, 1])).values())
    assert math.isnan(f1_max(np.array([]), np.array([])))
    with pytest.raises(ValueError, match="NaN"):
        image_auroc(np.array([0.1, np.nan, 0.3]), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="shape"):
        image_auroc(np.array([0.1, 0.2]), np.array([0, 1, 1]))
