"""The decision on one sample: its image score against the threshold, then the optional reject rules
in physical units, with the reason in words (numpy-free; the runtime decides with it too).

A sample is anomalous when its score is strictly above the image threshold AND, when reject rules
are set (``score.min_area_mm2``, ``score.min_depth_mm``), at least one of its defect regions
(`trd.scoring.regions`) is that large and that deep (or high). The rules can only turn a flag into
"good", never the other way, so a good sample is flagged at most as often as the threshold promises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..config import ScoreConfig
from .regions import Region
from .threshold import Thresholds


@dataclass(frozen=True)
class Rules:
    """The smallest area (mm^2) and depth or height (mm) that count as a defect; 0 switches a rule off."""

    min_area_mm2: float = 0.0
    min_depth_mm: float = 0.0

    @classmethod
    def from_config(cls, score: ScoreConfig) -> Rules:
        return cls(score.min_area_mm2, score.min_depth_mm)

    @property
    def active(self) -> bool:
        return self.min_area_mm2 > 0 or self.min_depth_mm > 0

    def text(self) -> str:
        """E.g. ``at least 2 mm² and 0.2 mm deep or high``."""
        parts = ([f"at least {self.min_area_mm2:g} mm²"] if self.min_area_mm2 > 0 else []) + (
            [f"{'' if self.min_area_mm2 > 0 else 'at least '}{self.min_depth_mm:g} mm deep or high"]
            if self.min_depth_mm > 0 else [])
        return " and ".join(parts)

    def failure(self, region: Region) -> str | None:
        """Why ``region`` is too small to count (None: it passes)."""
        if self.min_area_mm2 > 0 and (region.area_mm2 or 0.0) < self.min_area_mm2:
            return f"{_mm2(region.area_mm2)} is under {self.min_area_mm2:g} mm²"
        if self.min_depth_mm > 0 and (region.depth_mm or 0.0) < self.min_depth_mm:
            return f"{_mm(region.depth_mm)} deep is under {self.min_depth_mm:g} mm"
        return None

    def to_dict(self) -> dict[str, float]:
        return {"min_area_mm2": self.min_area_mm2, "min_depth_mm": self.min_depth_mm}


def _mm2(value: float | None) -> str:
    return "an unknown area" if value is None else f"{value:.3g} mm²"


def _mm(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2g} mm"


@dataclass(frozen=True)
class Decision:
    """``anomalous``: the decision; ``above_threshold``: the score alone; ``reason``: why, in words."""

    anomalous: bool
    above_threshold: bool
    reason: str


def decide(score: float, thresholds: Thresholds, regions: Sequence[Region], rules: Rules) -> Decision:
    """The decision on a sample with image ``score`` and defect ``regions`` (region 1 first).

    Example:
        >>> th = Thresholds(2.0, 1.0, 0.01, 0.01, 99, 1)
        >>> decide(1.5, th, [], Rules()).reason
        'image score 1.5000 is not above the threshold 2.0000: good'
    """
    head = f"image score {score:.4f}"
    if not score > thresholds.image:
        return Decision(False, False, f"{head} is not above the threshold {thresholds.image:.4f}: good")
    above = f"{head} is above the threshold {thresholds.image:.4f}"
    if not rules.active:
        where = f"; region 1 ({regions[0].size_text()}) holds its highest score" if regions else ""
        return Decision(True, True, f"{above}{where}: anomalous")
    first = next((i for i, r in enumerate(regions) if rules.failure(r) is None), None)
    if first is not None:
        return Decision(True, True, f"{above}; region {first + 1} ({regions[first].size_text()}) passes the rules "
                                    f"({rules.text()}): anomalous")
    if not regions:
        return Decision(False, True, f"{above}, but no flagged region lies on the object to check the rules "
                                     f"({rules.text()}) against: good")
    return Decision(False, True, f"{above}, but no region passes the rules ({rules.text()}): region 1 "
                                 f"{rules.failure(regions[0])}: good")
