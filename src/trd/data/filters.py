"""Image filters of scipy.ndimage, done in numpy with scipy's arithmetic in scipy's order.

`trd.data.geometry` needs a few 1-D correlations (3-tap sums, Sobel kernels), a box count and a
morphological closing. scipy.ndimage computes them line by line over whole images; here they are
whole-array numpy operations that accumulate in float64 in the order of scipy's C loop (the centre
tap, then each pair of taps from the outermost inwards, summed before it is weighted), so their
results are bit for bit scipy's (tests/data/test_geometry_exact.py), and they can be restricted to
a window of the image (`box_around`) or to single pixels (`sum3x3_at`). Written here rather than
taken from scipy because hole filling needs the 3x3 sums at single pixels, which scipy has no call
for, and because importing scipy.ndimage was ~0.3 s of every scoring process's start (profiled with
``python -X importtime`` on the loaded 2-vCPU VM of benchmarks/README.md); on whole images these are
about as fast as scipy's filters (the speed-up of the 3D preprocessing comes from the windows).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def along(arr: np.ndarray, axis: int, start: int, stop: int) -> np.ndarray:
    """The view ``arr[..., start:stop, ...]`` with the slice on ``axis``."""
    return arr[(slice(None),) * axis + (slice(start, stop),)]


def slide(mask: np.ndarray, radius: int, axis: int, outside: bool, reduce: np.ufunc) -> np.ndarray:
    """``reduce`` (np.logical_or or np.logical_and) over each pixel's 2*radius+1 neighbours along
    ``axis``, with ``outside`` for pixels beyond the image; windows grow by doubling (3 passes for 7)."""
    pad = [(0, 0)] * mask.ndim
    pad[axis] = (radius, radius)
    out = np.pad(mask, pad, constant_values=outside)
    span, size = 1, 2 * radius + 1
    while span < size:
        step = min(span, size - span)
        n = out.shape[axis] - step
        out = reduce(along(out, axis, 0, n), along(out, axis, step, step + n))
        span += step
    return out


def box_around(nonzero: np.ndarray, margin: int) -> tuple[slice, slice] | None:
    """Rows and columns of the box around the True pixels of ``nonzero`` (HxW or HxWxC: any
    channel), widened by ``margin`` and cut at the image border; None when there are none."""
    flat = nonzero if nonzero.ndim == 2 else nonzero.any(axis=2)
    rows, cols = np.flatnonzero(flat.any(axis=1)), np.flatnonzero(flat.any(axis=0))
    if rows.size == 0:
        return None
    return (slice(max(rows[0] - margin, 0), rows[-1] + margin + 1),
            slice(max(cols[0] - margin, 0), cols[-1] + margin + 1))


def correlate1d(img: np.ndarray, weights: np.ndarray, axis: int, mode: str, dtype: Any) -> np.ndarray:
    """``scipy.ndimage.correlate1d(img, weights, axis, output=dtype, mode=mode)`` for odd symmetric or
    antisymmetric kernels, bit for bit: in float64, the centre tap times its weight, then each pair
    of taps from the outermost inwards, summed (antisymmetric: subtracted) before it is weighted,
    as scipy's C loop does. ``mode``: "constant" (zeros outside) or "mirror" (reflect-101)."""
    weights = np.asarray(weights, np.float64)
    half = len(weights) // 2
    symmetric = bool(np.all(weights == weights[::-1]))
    if not symmetric and not np.all(weights == -weights[::-1]):
        raise ValueError("only odd symmetric or antisymmetric kernels")
    pad = [(0, 0)] * img.ndim
    pad[axis] = (half, half)
    padded = np.pad(np.asarray(img, np.float64), pad, mode="reflect" if mode == "mirror" else "constant")
    n = img.shape[axis]

    def tap(offset: int) -> np.ndarray:
        return along(padded, axis, half + offset, half + offset + n)

    out = tap(0) * weights[half]
    pair = np.empty_like(out)
    for j in range(half, 0, -1):
        (np.add if symmetric else np.subtract)(tap(-j), tap(j), out=pair)
        if weights[half - j] != 1.0:  # x * 1.0 == x exactly: skipped
            pair *= weights[half - j]
        out += pair
    return out.astype(dtype, copy=False)


def count3x3(positive: np.ndarray) -> np.ndarray:
    """How many of each pixel's 3x3 neighbours (itself included, none outside the image) are True, per channel (uint8)."""
    counts = positive.astype(np.uint8)
    for axis in (0, 1):
        pad = [(0, 0)] * counts.ndim
        pad[axis] = (1, 1)
        padded = np.pad(counts, pad)
        n = counts.shape[axis]
        counts = along(padded, axis, 0, n) + along(padded, axis, 1, n + 1) + along(padded, axis, 2, n + 2)
    return counts


def sum3x3_at(values: np.ndarray, at: tuple[np.ndarray, ...]) -> np.ndarray:
    """The 3x3 neighbourhood sums (zeros outside the image) of ``values`` at the pixels ``at``
    (`np.nonzero`'s index arrays), in ``values``' dtype, with the arithmetic of two passes of
    ``scipy.ndimage.correlate1d`` with ones(3) (rows, then columns; each in float64 as centre +
    (before + after), rounded to the dtype), computed at those pixels only."""
    padded = np.pad(values, [(1, 1), (1, 1)] + [(0, 0)] * (values.ndim - 2))
    rows, cols, rest = at[0] + 1, at[1] + 1, at[2:]

    def tap(dr: int, dc: int) -> np.ndarray:
        return padded[(rows + dr, cols + dc, *rest)].astype(np.float64)

    column = [(tap(0, dc) + (tap(-1, dc) + tap(1, dc))).astype(values.dtype).astype(np.float64) for dc in (-1, 0, 1)]
    return (column[1] + (column[0] + column[2])).astype(values.dtype)
