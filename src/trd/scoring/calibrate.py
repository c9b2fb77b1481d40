"""Calibration on good samples only (the validation split at fit time; never the test split).

1. Per-branch mean/std over all pixels of all raw validation maps (docs/METHOD.md §5.2) -> Scorer
   (also with ``score.foreground_only``, which restricts only where scores may come from).
2. Deployment thresholds by the order-statistic rule (`trd.scoring.threshold`): the image threshold
   from the image scores, the pixel threshold from each image's own ``score.pixel_fpr`` quantile.
3. A border check: where the validation images' maxima sit (`trd.scoring.border`).
4. The good inputs that modality attribution takes nominal content from (`trd.scoring.counterfactual`):
   up to ``BANK_SIZE`` validation inputs, evenly spread over the split.

:func:`rederive_thresholds` repeats steps 2-3 (and 4 when a model has no reference) for a calibrated
detector on new good samples, keeping the normalisation statistics, so scores stay comparable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..config import Config
from ..data.dataset import PairDataset
from ..errors import TRDError
from ..model.trd import TRDModel
from .border import BorderCheck, border_check, border_lines
from .counterfactual import BANK_SIZE
from .infer import Runner, iterate_outputs
from .maps import BranchStats, Scorer
from .threshold import Thresholds, choose_thresholds, fpr_threshold

@dataclass
class Calibration:
    """What good samples tell about a detector: its scorer, thresholds, border check and reference.

    ``reference``: ``{"rgb": KxCxSxS, "x3d": KxCxSxS}`` good inputs (CPU float32), or None where
    they were not collected (`rederive_thresholds` on a model that already has them).
    """

    scorer: Scorer | None
    thresholds: Thresholds
    border: BorderCheck
    reference: dict[str, Tensor] | None
    scores: list[float]  # image scores of the good samples the thresholds were chosen on

    def summary_scores(self) -> list[float]:
        """The good samples' image scores at full precision (stored with the model, so a threshold
        can be explored against them: `trd serve`'s page; the image threshold is one of them)."""
        return [float(v) for v in self.scores]

    def summary(self, cfg: Config) -> list[str]:
        """Log lines: what the thresholds promise (and why not more), then the border check."""
        return [*self.thresholds.statements(), *border_lines(self.border, cfg)]


class _GoodStatistics:
    """Per image: score, its own pixel quantile and where its maximum is; plus some of the inputs."""

    def __init__(self, pixel_fpr: float, n_samples: int, with_reference: bool) -> None:
        self.pixel_fpr = pixel_fpr
        self.scores: list[np.ndarray] = []
        self.pixel_values: list[float] = []
        self.argmax: list[np.ndarray] = []
        keep = np.linspace(0, n_samples - 1, min(n_samples, BANK_SIZE)).round().astype(int) if n_samples else []
        self.keep = set(keep.tolist()) if with_reference else set()
        self.bank: dict[str, list[Tensor]] = {"rgb": [], "x3d": []}
        self.size = 0

    def add_inputs(self, batch: dict[str, Any]) -> None:
        """Keep the inputs of the samples chosen for the reference bank."""
        chosen = [j for j, i in enumerate(batch["index"].tolist()) if i in self.keep]
        for key, kept in self.bank.items():
            kept += [batch[key][j].float().clone() for j in chosen]

    def add_outputs(self, out: dict[str, Tensor]) -> None:
        maps = out["anomaly_map"][:, 0].float().cpu().numpy()
        self.size = maps.shape[-1]
        self.scores.append(out["score"].float().cpu().numpy())
        self.argmax.append(maps.reshape(len(maps), -1).argmax(axis=1))
        self.pixel_values += [fpr_threshold(m, self.pixel_fpr) for m in maps]

    def image_scores(self) -> list[float]:
        return [float(v) for v in np.concatenate(self.scores)] if self.scores else []

    def finish(self, cfg: Config, source: str) -> tuple[Thresholds, BorderCheck, dict[str, Tensor] | None]:
        if not self.scores:
            raise TRDError(f"no good samples to calibrate on ({source})")
        scores = np.concatenate(self.scores)
        thresholds = choose_thresholds(scores, np.asarray(self.pixel_values), cfg.score.target_fpr,
                                       cfg.score.pixel_fpr, source)
        border = border_check(np.concatenate(self.argmax), self.size)
        reference = {k: torch.stack(v) for k, v in self.bank.items()} if self.keep else None
        return thresholds, border, reference


def threshold_source(cfg: Config, split: str) -> str:
    """Where the good samples come from, e.g. ``data/synth/puck (validation split)``."""
    place = f"{cfg.data.root}/{cfg.data.category}" if cfg.data.category else cfg.data.root
    return f"{place} ({split} split)"


def calibrate(model: TRDModel, dataset: PairDataset, cfg: Config, device: torch.device,
              batch_size: int = 8) -> Calibration:
    """Fit the scorer statistics, thresholds, border check and reference on ``dataset`` (validation normals).

    Returns a :class:`Calibration` whose scorer is on ``device``; `trd.detector.Detector` puts the
    model, the scorer and the reference together.
    """
    model.eval()
    branches = list(model.students)
    stats = {b: BranchStats() for b in branches}
    scorer = Scorer.from_config(branches, cfg.score)
    good = _GoodStatistics(cfg.score.pixel_fpr, len(dataset), with_reference=True)
    raw: dict[str, list[torch.Tensor]] = {b: [] for b in branches}
    foregrounds: list[torch.Tensor | None] = []
    # The raw maps are kept (on the host) so the second step does not rerun the model.
    for batch, maps in iterate_outputs(model.raw_maps, dataset, device, batch_size, cfg.data.num_workers):
        foregrounds.append(scorer.foreground(batch["x3d"]))
        good.add_inputs(batch)
        for b in branches:
            stats[b].update(maps[b])
            raw[b].append(maps[b].float().cpu())
    scorer.set_stats(stats)
    with torch.inference_mode():
        for i, foreground in enumerate(foregrounds):
            good.add_outputs(scorer({b: raw[b][i] for b in branches}, foreground))
    thresholds, border, reference = good.finish(cfg, threshold_source(cfg, "validation"))
    return Calibration(scorer.to(device), thresholds, border, reference, good.image_scores())


def rederive_thresholds(run: Runner, dataset: PairDataset, cfg: Config, device: torch.device, source: str,
                        with_reference: bool, batch_size: int = 8) -> Calibration:
    """Thresholds, border check (and, with ``with_reference``, the reference) of a calibrated
    detector ``run`` on the good samples of ``dataset``; the scorer is left as it is (None here)."""
    good = _GoodStatistics(cfg.score.pixel_fpr, len(dataset), with_reference)
    for batch, out in iterate_outputs(run, dataset, device, batch_size, cfg.data.num_workers):
        good.add_inputs(batch)
        good.add_outputs(out)
    thresholds, border, reference = good.finish(cfg, source)
    return Calibration(None, thresholds, border, reference, good.image_scores())
