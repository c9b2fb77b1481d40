"""Where do image maxima sit? A check for border artefacts, run on good (validation) samples.

The image score is the maximum of the fused map. Students of a small or briefly trained model (or
one with random teachers) err most at the image border, where convolutions see zero padding; then
the maximum of almost every image, good or defective, sits at the border and the image score
measures the border instead of the product. This module counts how many image maxima lie within
``band`` pixels of the border and compares that share with the band's share of the image area
(what maxima spread over the whole image would give).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..config import Config

#: Width of the border band, in pixels of the model's input (``data.image_size``).
BORDER_BAND_PX = 8


@dataclass(frozen=True)
class BorderCheck:
    """How many of ``images`` maxima lie within ``band_px`` of the border, and the band's area share."""

    images: int
    near_border: int
    band_px: int
    band_area: float

    @property
    def share(self) -> float:
        return self.near_border / self.images if self.images else float("nan")

    @property
    def suspicious(self) -> bool:
        """At least half of the maxima in the band, and at least twice the band's area share."""
        return self.images > 0 and self.share >= 0.5 and self.share >= 2.0 * self.band_area

    def finding(self, what: str = "validation") -> str:
        """One sentence with the numbers, e.g. ``9 of 10 validation image maxima (90 %) lie ...``."""
        return (f"{self.near_border} of {self.images} {what} image maxima ({100 * self.share:.0f} %) lie within "
                f"{self.band_px} px of the image border, which covers {100 * self.band_area:.0f} % of the image")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"share": self.share, "suspicious": self.suspicious}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> BorderCheck:
        return cls(int(raw["images"]), int(raw["near_border"]), int(raw["band_px"]), float(raw["band_area"]))


def border_check(argmax: np.ndarray, size: int, band: int = BORDER_BAND_PX) -> BorderCheck:
    """Count the flat argmax indices (of size x size maps) that fall within ``band`` px of the border.

    Example:
        >>> border_check(np.array([0, 2 * 64 + 30, 32 * 64 + 32]), 64).near_border  # corner, top band, centre
        2
    """
    idx = np.asarray(argmax, dtype=np.int64).reshape(-1)
    rows, cols = np.divmod(idx, size)
    edge = np.minimum(np.minimum(rows, cols), np.minimum(size - 1 - rows, size - 1 - cols))
    inner = max(size - 2 * band, 0)
    return BorderCheck(int(idx.size), int(np.count_nonzero(edge < band)), band, 1.0 - (inner / size) ** 2)


def border_advice(check: BorderCheck, cfg: Config) -> list[str]:
    """What to do when ``check`` is suspicious (nothing otherwise), given the run's settings."""
    if not check.suspicious:
        return []
    steps = []
    if not cfg.score.foreground_only:
        steps.append("score only the object (`--set score.foreground_only=true`, docs/METHOD_NOTES.md §12)")
    steps.append(f"train longer (now train.epochs={cfg.train.epochs})")
    if cfg.model.weights != "imagenet":
        steps.append(f"use ImageNet teachers (now model.weights={cfg.model.weights!r})")
    return ["the image score is measuring border artefacts of the students, not the product; try: "
            + "; ".join(steps)]


def border_lines(check: BorderCheck, cfg: Config, what: str = "validation") -> list[str]:
    """The finding and, when suspicious, the advice (for the fit log and the report)."""
    verdict = "" if check.suspicious else ": no sign of border artefacts"
    return [f"border check: {check.finding(what)}{verdict}", *(f"warning: {a}" for a in border_advice(check, cfg))]
