"""Distillation loss of method.md §4.1."""

from __future__ import annotations

import pytest
import torch

from trd.model.student import StudentOutput
from trd.training.loss import cosine_distill, student_loss


def _levels(batch: int = 3) -> list[torch.Tensor]:
    return [torch.rand(batch, 4, 8, 8), torch.rand(batch, 8, 4, 4), torch.rand(batch, 16, 2, 2)]


def _orthogonal(levels: list[torch.Tensor]) -> list[torch.Tensor]:
    """Features with disjoint channel support -> cosine 0 with the result of ``_split``."""
    return [torch.cat([t[:, : t.shape[1] // 2], torch.zeros_like(t[:, t.shape[1] // 2 :])], 1) for t in levels]


def _split(levels: list[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.cat([torch.zeros_like(t[:, : t.shape[1] // 2]), t[:, t.shape[1] // 2 :]], 1) for t in levels]


def test_identical_and_scaled_features_cost_nothing() -> None:
    feats = _levels()
    assert cosine_distill(feats, feats).item() == pytest.approx(0, abs=1e-6)
    assert cosine_distill([2.5 * t for t in feats], feats).item() == pytest.approx(0, abs=1e-6)


def test_orthogonal_features_cost_one_per_level() -> None:
    feats = _levels()
    assert cosine_distill(_orthogonal(feats), _split(feats)).item() == pytest.approx(3.0, abs=1e-6)
    assert cosine_distill(_orthogonal(feats)[:1], _split(feats)[:1]).item() == pytest.approx(1.0, abs=1e-6)


def test_cosine_is_per_sample_over_the_whole_map_not_per_pixel() -> None:
    torch.manual_seed(0)
    preds, targets = _levels(), _levels()
    expected = 0.0
    for p, t in zip(preds, targets):
        for i in range(len(p)):
            a, b = p[i].flatten().double(), t[i].flatten().double()
            expected += (1 - a @ b / (a.norm() * b.norm())).item() / len(p)
    assert cosine_distill(preds, targets).item() == pytest.approx(expected, rel=1e-5)
    channels_last = [t.to(memory_format=torch.channels_last) for t in preds]
    assert cosine_distill(channels_last, targets).item() == pytest.approx(expected, rel=1e-5)


def test_bad_inputs_are_rejected() -> None:
    feats = _levels()
    with pytest.raises(ValueError, match="equally long"):
        cosine_distill(feats[:2], feats)
    with pytest.raises(ValueError, match="differ in shape"):
        cosine_distill(feats[::-1], feats)


def test_student_loss_sums_the_present_terms() -> None:
    feats = _levels()
    off = _orthogonal(feats)  # Dist(off, on) == 3
    on = _split(feats)
    full = StudentOutput(filtered=off, amplified=off, decoded=on, fused=off)
    assert student_loss(full, on).item() == pytest.approx(9.0, abs=1e-5)
    no_filter = full._replace(filtered=None)
    assert student_loss(no_filter, on).item() == pytest.approx(6.0, abs=1e-5)
    no_amplifier = StudentOutput(filtered=off, amplified=None, decoded=off, fused=None)  # no S: D counted once
    assert student_loss(no_amplifier, on).item() == pytest.approx(6.0, abs=1e-5)
