"""Calibration on the validation split (normal samples only; never the test split).

1. Per-branch mean/std over all pixels of all raw validation maps (docs/METHOD.md §5.2) -> Scorer
   (also with ``score.foreground_only``, which restricts only where scores may come from).
2. Deployment thresholds: the image-score and pixel-score values that ``score.target_fpr`` /
   ``score.pixel_fpr`` of the validation normals exceed.
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import Config
from ..data.dataset import PairDataset
from ..model.trd import TRDModel
from .infer import iterate_outputs
from .maps import BranchStats, Scorer
from .threshold import Thresholds, fpr_threshold


def calibrate(model: TRDModel, dataset: PairDataset, cfg: Config, device: torch.device,
              batch_size: int = 8) -> tuple[Scorer, Thresholds]:
    """Fit the scorer statistics and thresholds on ``dataset`` (validation normals).

    Returns the calibrated scorer (on ``device``) and the thresholds; `trd.detector.Detector`
    puts the model and the scorer together.
    """
    model.eval()
    branches = list(model.students)
    stats = {b: BranchStats() for b in branches}
    scorer = Scorer.from_config(branches, cfg.score)
    raw: dict[str, list[torch.Tensor]] = {b: [] for b in branches}
    foregrounds: list[torch.Tensor | None] = []
    # The raw maps are kept (on the host) so the second step does not rerun the model.
    for batch, maps in iterate_outputs(model.raw_maps, dataset, device, batch_size, cfg.data.num_workers):
        foregrounds.append(scorer.foreground(batch["x3d"]))
        for b in branches:
            stats[b].update(maps[b])
            raw[b].append(maps[b].float().cpu())
    scorer.set_stats(stats)
    scores, pixels = [], []
    with torch.inference_mode():
        for i, foreground in enumerate(foregrounds):
            out = scorer({b: raw[b][i] for b in branches}, foreground)
            scores.append(out["score"].numpy())
            pixels.append(out["anomaly_map"].numpy().ravel())
    thresholds = Thresholds(
        image=fpr_threshold(np.concatenate(scores), cfg.score.target_fpr),
        pixel=fpr_threshold(np.concatenate(pixels), cfg.score.pixel_fpr),
        target_fpr=cfg.score.target_fpr,
        pixel_fpr=cfg.score.pixel_fpr,
    )
    return scorer.to(device), thresholds
