"""What a scored sample shows at its own resolution: its defect regions and the decision on it.

Shared by `trd predict` and `trd serve` (and drawn by the report): the fused map is taken back to
the image's resolution, its regions above the pixel threshold are measured in the sample's point
cloud (`trd.scoring.regions`) and the reject rules decide (`trd.scoring.decision`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..config import Config
from ..scoring.decision import Decision, Rules, decide
from ..scoring.regions import Region, find_regions, full_resolution, object_pixels
from ..scoring.threshold import Thresholds


@dataclass(frozen=True)
class Findings:
    """``regions`` (region 1 holds the highest score; at most `MAX_REGIONS`, ``omitted`` more),
    the ``decision`` and the rules it applied, and the image's (height, width)."""

    regions: list[Region]
    omitted: int
    decision: Decision
    rules: Rules
    hw: tuple[int, int]


def find(amap: np.ndarray, score: float, image_hw: tuple[int, int], cloud: np.ndarray | None, cfg: Config,
         thresholds: Thresholds) -> Findings:
    """The findings of one sample: its fused map ``amap`` (model resolution), image score, the RGB
    image's (H, W) and its cloud (metres; None for normal-map inputs), under the model's settings."""
    full = full_resolution(amap, image_hw)
    on_object = None
    if cloud is not None:
        on_object = object_pixels(cloud, object_only=cfg.score.foreground_only, plane=cfg.data.plane,
                                  plane_threshold=cfg.data.plane_threshold)
    regions, omitted = find_regions(full, thresholds.pixel, xyz=cloud, on_object=on_object)
    if cfg.data.flip_z:  # the centre in the scanner's own axes, as its files store them
        regions = [dataclasses.replace(r, centre_mm=(r.centre_mm[0], r.centre_mm[1], -r.centre_mm[2]))
                   if r.centre_mm is not None else r for r in regions]
    rules = Rules.from_config(cfg.score)
    return Findings(regions, omitted, decide(score, thresholds, regions, rules), rules, tuple(image_hw))
