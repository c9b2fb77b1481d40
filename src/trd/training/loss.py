"""Distillation loss of docs/METHOD.md §4.1: per-sample cosine distance of whole flattened feature maps."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from ..model.student import StudentOutput


def cosine_distill(preds: Sequence[Tensor], targets: Sequence[Tensor]) -> Tensor:
    """Dist(S, T) = sum over levels of mean over the batch of 1 - cos(vec(S_l[i]), vec(T_l[i])).

    vec flattens C*H*W of one sample (RD4AD's loss, not per pixel); computed in fp32 because the
    vectors have up to ~1 M entries.
    """
    if len(preds) != len(targets) or not preds:
        raise ValueError(f"need two equally long, non-empty lists of levels, got {len(preds)} and {len(targets)}")
    total = None
    for pred, target in zip(preds, targets):
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        cos = F.cosine_similarity(pred.float().reshape(len(pred), -1), target.float().reshape(len(target), -1), dim=1)
        level = (1.0 - cos).mean()
        total = level if total is None else total + level
    return total


def student_loss(out: StudentOutput, targets: Sequence[Tensor]) -> Tensor:
    """L = Dist(D, T) + Dist(F, T) + Dist(A, T) + Dist(S, T); absent modules (None) add no term.

    Without an Amplifier there is no S (``out.fused`` is None), so D is counted once.
    """
    loss = cosine_distill(out.decoded, targets)
    for extra in (out.filtered, out.amplified, out.fused):
        if extra is not None:
            loss = loss + cosine_distill(extra, targets)
    return loss
