"""Counterfactual inputs for modality attribution: one modality made nominal where the score comes from.

Replacing a whole input by a nominal one (e.g. the per-pixel mean of good inputs) does not work: a
mean image is blurred and misplaced, so the students find it far more anomalous than any defect
(measured on the demo: the score rose by 3-8 z-units whatever the defect). The counterfactual here
is local and made of real good content: around the pixel that sets the image score, one modality's
input is replaced by a patch of a stored good validation input, chosen (among the stored inputs and
small shifts) to match the sample on a ring around that window, so that it fits its surroundings;
the window's edge is blended. The rest of the image, and the other modality, stay as they are.

Geometry, relative to the input side S (at S = 128: window radius 12 px + 8 px blend, matching
ring 12 px wide, shifts up to +-10 px in steps of 2): constants below, in fractions of S.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: Radius of the fully replaced disc, width of its blended edge, width of the matching ring and the
#: largest shift searched, as fractions of the input side.
WINDOW, BLEND, RING, SHIFT = 12 / 128, 8 / 128, 12 / 128, 10 / 128
#: Shifts per axis searched (a grid of SHIFT_STEPS x SHIFT_STEPS).
SHIFT_STEPS = 11
#: Most good inputs a model stores for this (evenly spread over the validation split).
BANK_SIZE = 32


def _px(fraction: float, size: int) -> int:
    return max(1, round(fraction * size))


def window_and_ring(size: int, y: int, x: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """The blended window (S x S in [0, 1], 1 inside the disc) around (y, x) and the ring around it."""
    yy, xx = torch.meshgrid(torch.arange(size, device=device), torch.arange(size, device=device), indexing="ij")
    dist = ((yy - y) ** 2 + (xx - x) ** 2).float().sqrt()
    radius, blend, ring = _px(WINDOW, size), _px(BLEND, size), _px(RING, size)
    window = ((radius + blend - dist) / blend).clamp(0.0, 1.0)
    return window, (dist >= radius + blend) & (dist < radius + blend + ring)


def matched_patch(image: Tensor, bank: Tensor, y: int, x: int) -> tuple[Tensor, Tensor]:
    """(C x S x S good content aligned to ``image`` around (y, x), the S x S window to blend it into).

    ``bank``: K x C x S x S good inputs. The stored input and shift (within +-SHIFT) with the least
    squared difference to ``image`` on the ring around the window are chosen; shifted content past
    the border repeats the edge.
    """
    size = image.shape[-1]
    window, ring = window_and_ring(size, y, x, image.device)
    rows, cols = ring.nonzero(as_tuple=True)
    y0, y1, x0, x1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    weight = ring[y0:y1, x0:x1].to(image.dtype)
    target = image[:, y0:y1, x0:x1]
    reach = _px(SHIFT, size)
    padded = F.pad(bank.to(image.dtype), (reach, reach, reach, reach), mode="replicate")
    steps = torch.linspace(-reach, reach, SHIFT_STEPS).round().int().unique().tolist()
    best = (float("inf"), 0, 0, 0)
    for dy in steps:
        for dx in steps:
            crop = padded[:, :, reach + dy + y0: reach + dy + y1, reach + dx + x0: reach + dx + x1]
            cost = (((crop - target) ** 2).sum(dim=1) * weight).sum(dim=(1, 2))
            k = int(cost.argmin())
            if float(cost[k]) < best[0]:
                best = (float(cost[k]), k, dy, dx)
    _, k, dy, dx = best
    return padded[k, :, reach + dy: reach + dy + size, reach + dx: reach + dx + size], window


def nominal_inputs(inputs: Tensor, bank: Tensor, peaks: Tensor) -> Tensor:
    """``inputs`` (B x C x S x S) with the window around each flat ``peaks`` index replaced by a
    matched good patch from ``bank`` (K x C x S x S), blended at its edge."""
    size = inputs.shape[-1]
    out = inputs.clone()
    for i, peak in enumerate(peaks.tolist()):
        patch, window = matched_patch(inputs[i], bank, peak // size, peak % size)
        out[i] = inputs[i] * (1 - window) + patch * window
    return out
