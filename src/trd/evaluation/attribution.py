"""Modality attribution of a set of images, summarised per defect type (`trd.detector.Detector.explain`).

Each image has two counterfactual score drops: make the RGB image (colour) or the 3D image
(geometry) nominal where the score comes from (`trd.detector.counterfactual`) and see how much the
score falls. The modality with the larger
positive drop is the one the score is attributed to mainly; when neither drop is positive, neither
input alone explains the score ("neither").

On a defective image the attribution explains the score, which is about the defect only when the
fused map's maximum lies on it; per defect type the summary therefore counts only the images whose
maximum lies on the defect (its mask grown by the smoothing radius), and says how many those are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

MODALITIES = ("colour", "geometry")


def main_modality(colour: float, geometry: float) -> str:
    """"colour", "geometry" or "neither" (no positive drop, or not a number)."""
    if not (math.isfinite(colour) and math.isfinite(geometry)) or max(colour, geometry) <= 0.0:
        return "neither"
    return "colour" if colour >= geometry else "geometry"


def colour_share(colour: float, geometry: float) -> float:
    """The colour drop's part of the positive drops, in [0, 1] (NaN when neither is positive)."""
    c, g = max(colour, 0.0), max(geometry, 0.0)
    return c / (c + g) if c + g > 0 else math.nan


def peak_on_defect(maps: np.ndarray, gts: np.ndarray, margin: int) -> np.ndarray:
    """(N,) whether each map's maximum lies in its mask grown by ``margin`` px (False without a mask)."""
    from scipy import ndimage

    n = len(maps)
    grown = ndimage.binary_dilation(gts, structure=np.ones((1, 2 * margin + 1, 2 * margin + 1), bool)) if margin else gts
    return grown.reshape(n, -1)[np.arange(n), maps.reshape(n, -1).argmax(axis=1)]


def attribution_by_defect(defects: Sequence[str], colour: np.ndarray, geometry: np.ndarray,
                          on_defect: np.ndarray) -> dict[str, Any]:
    """Per defect type: images, images whose maximum lies on the defect (``on_defect``), and over
    those (over all images for "good"): the mean score drop per modality and how many images are
    attributed mainly to colour, to geometry or to neither."""
    defects = np.asarray(list(defects), dtype=object)
    out: dict[str, Any] = {}
    for d in sorted(set(defects), key=lambda name: (name == "good", name)):
        own = defects == d
        used = own if d == "good" else own & on_defect
        mains = [main_modality(float(c), float(g)) for c, g in zip(colour[used], geometry[used])]
        out[str(d)] = {"images": int(own.sum()), "peak_on_defect": None if d == "good" else int(used.sum()),
                       "mean_drop_colour": float(np.mean(colour[used])) if used.any() else math.nan,
                       "mean_drop_geometry": float(np.mean(geometry[used])) if used.any() else math.nan,
                       **{f"mainly_{m}": mains.count(m) for m in (*MODALITIES, "neither")}}
    return out
