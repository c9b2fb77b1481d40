"""Defect regions: where the flagged pixels lie, how large and how deep, in the scanner's units.

numpy/scipy only (the runtime install measures regions too), one implementation for `trd predict`,
`trd serve` and the report. The method (docs/REGIONS.md):

1. The fused anomaly map (model resolution, the image squeezed to a square) is resized back to the
   original image (bilinear, half-pixel centres: the inverse of the input's resize), where the
   organised point cloud gives a 3D point for every pixel.
2. Flagged pixels: above the pixel threshold, and on the object (`object_pixels`: where the scan has
   points, small holes closed; with object-only scoring the preprocessing's object mask). Regions
   are their 8-connected components (`scipy.ndimage.label`); region 1 holds the highest score.
3. Area (mm^2): each pixel's surface patch is spanned by the vectors to its neighbouring points
   (per axis the shorter of the two one-sided differences, so a silhouette edge does not count the
   jump to the background); its area is that patch projected on the surrounding surface (step 4),
   which z noise barely moves. Pixels without a point take the region's median patch.
4. Depth (mm): a ring of points around the region (a few pixels out, on the object, not flagged)
   gives the surrounding surface: a plane (SVD), and within it a quadratic height when the ring
   surrounds the region (curved parts), refitted once without outliers. Each region point's
   deviation from that surface is averaged with its 3x3 neighbours (sensor noise), and the largest
   absolute deviation is the depth; its sign says bump (towards the camera) or depression.
5. Centre: the mean pixel (x = column, y = row) and the mean 3D point, in mm.

DEPARTURE (docs/METHOD_NOTES.md §8, an addition): the reference localises defects as heatmaps
only, without regions or units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data.geometry import close_mask, foreground_mask, resize_bilinear

#: Regions kept per image (the highest-scoring ones); the count of the others is reported.
MAX_REGIONS = 20
#: Points an outline keeps at most (evenly thinned beyond).
MAX_OUTLINE_POINTS = 200
_EIGHT = np.ones((3, 3), bool)
_RING_GAP = 2  # px between a region and its ring (the flanks of a defect reach a little beyond its flags)
_RING_MAX = 10  # px: the ring's largest width (half the region's radius, at least 3)
_RING_POINTS = 2000  # ring points the surface is fitted to at most (evenly thinned beyond)


@dataclass(frozen=True)
class Region:
    """One connected region of flagged pixels, in original image pixels and millimetres.

    ``box``: (x, y, width, height) of its bounding box; ``centre_px``: (x, y); ``peak``: its highest
    score; ``area_mm2``, ``depth_mm`` (largest deviation from the surrounding surface, >= 0),
    ``height_mm`` (the same, signed: > 0 a bump towards the camera, < 0 a depression) and
    ``centre_mm`` (x, y, z of the mean point) are None without a point cloud (normal-map inputs) or,
    for depth, without a surrounding surface to compare with. ``outline``: closed polygons of (x, y)
    pixel-edge coordinates (the image spans 0..width, 0..height).
    """

    pixels: int
    box: tuple[int, int, int, int]
    centre_px: tuple[float, float]
    peak: float
    area_mm2: float | None = None
    depth_mm: float | None = None
    height_mm: float | None = None
    centre_mm: tuple[float, float, float] | None = None
    outline: list[list[tuple[float, float]]] = field(default_factory=list)

    def size_text(self) -> str:
        """E.g. ``3.2 mm², 0.41 mm deep`` (``12 px`` without a cloud)."""
        if self.area_mm2 is None:
            return f"{self.pixels} px"
        if self.depth_mm is None:
            return f"{self.area_mm2:.3g} mm², depth unknown"
        kind = "high" if (self.height_mm or 0.0) > 0 else "deep"
        return f"{self.area_mm2:.3g} mm², {self.depth_mm:.2g} mm {kind}"

    def to_dict(self) -> dict[str, Any]:
        """The region as JSON (numbers rounded to what they can mean)."""
        x, y, w, h = self.box
        return {
            "pixels": self.pixels, "box": {"x": x, "y": y, "width": w, "height": h},
            "centre_px": {"x": round(self.centre_px[0], 1), "y": round(self.centre_px[1], 1)},
            "peak_score": self.peak,
            "area_mm2": None if self.area_mm2 is None else round(self.area_mm2, 4),
            "depth_mm": None if self.depth_mm is None else round(self.depth_mm, 4),
            "height_mm": None if self.height_mm is None else round(self.height_mm, 4),
            "centre_mm": None if self.centre_mm is None else dict(zip("xyz", (round(v, 3) for v in self.centre_mm))),
            "outline": [[[round(px, 1), round(py, 1)] for px, py in ring] for ring in self.outline],
        }


def full_resolution(amap: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """The model-resolution map ``amap`` (S x S) at the original image's ``hw`` (bilinear)."""
    amap = np.asarray(amap, dtype=np.float32)
    return amap if amap.shape == tuple(hw) else resize_bilinear(amap, hw)


def object_pixels(xyz: np.ndarray, *, object_only: bool = False, plane: str = "corners",
                  plane_threshold: float = 0.005) -> np.ndarray:
    """Where a region may lie: pixels with a 3D point, holes of a few pixels closed (a defect can
    swallow points); with ``object_only`` the object found as the preprocessing finds it
    (`trd.data.geometry.foreground_mask`, at full resolution)."""
    if object_only:
        return foreground_mask(xyz, plane, plane_threshold)
    return close_mask(xyz[..., 2] != 0, 3)


def _step(xyz: np.ndarray, valid: np.ndarray, axis: int) -> np.ndarray:
    """Per pixel, the vector to its neighbour along ``axis`` (1: columns, 0: rows): the shorter of
    the forward and backward differences between valid points (NaN where neither exists). In the
    cloud's own precision (float32 resolves 0.1 um steps at 1 m)."""
    pts = np.where(valid[..., None], xyz, np.nan)
    ahead = np.full_like(pts, np.nan)
    behind = np.full_like(pts, np.nan)
    lo, hi = [slice(None)] * 3, [slice(None)] * 3
    lo[axis], hi[axis] = slice(None, -1), slice(1, None)
    ahead[tuple(lo)] = pts[tuple(hi)] - pts[tuple(lo)]
    behind[tuple(hi)] = ahead[tuple(lo)]
    la, lb = np.einsum("...k,...k->...", ahead, ahead), np.einsum("...k,...k->...", behind, behind)
    use_behind = np.isnan(la) | (lb < la)
    return np.where(use_behind[..., None], behind, ahead)


def _robust_lstsq(design: np.ndarray, target: np.ndarray, rounds: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Least squares refitted without points more than 3 robust sigmas (MAD) off, a few times:
    (coefficients, the points kept). A ring that reaches over an edge onto another surface keeps
    only the surface most of it lies on."""
    keep = np.ones(len(target), bool)
    coef = np.zeros(design.shape[1])
    for _ in range(rounds):
        coef, *_ = np.linalg.lstsq(design[keep], target[keep], rcond=None)
        residual = target - design @ coef
        mad = 1.4826 * np.median(np.abs(residual[keep] - np.median(residual[keep])))
        new = np.abs(residual - np.median(residual[keep])) <= max(3.0 * mad, 1e-7)
        if new.sum() < design.shape[1] * 2 or np.array_equal(new, keep):
            break
        keep = new
    return coef, keep


def _fit_surface(points: np.ndarray, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(origin, normal towards the camera, in-plane axes 2x3, quadratic height coefficients (6,)) of
    the surface through ``points`` (N x 3): a plane (robust), then within it a quadratic height when
    the kept points surround ``centre`` (else the height stays 0)."""
    origin = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - origin, full_matrices=False)
    # a robust plane: z as a linear function in the frame of the first fit, outliers dropped
    uv = (points - origin) @ vt[:2].T
    h = (points - origin) @ vt[2]
    _, keep = _robust_lstsq(_quadratic(uv)[:, :3], h)
    origin = points[keep].mean(axis=0)
    _, _, vt = np.linalg.svd(points[keep] - origin, full_matrices=False)
    normal = vt[2] if vt[2] @ origin < 0 else -vt[2]  # the camera sits at the origin, z > 0 in front
    axes = vt[:2]
    coef = np.zeros(6)
    kept = points[keep]
    angles = np.arctan2(*(((kept - centre) @ axes.T).T[::-1]))
    sectors = np.unique(((angles + np.pi) / (2 * np.pi) * 8).astype(int) % 8).size
    if len(kept) >= 12 and sectors >= 7:
        coef, _ = _robust_lstsq(_quadratic((kept - origin) @ axes.T), (kept - origin) @ normal)
    return origin, normal, axes, coef


def _quadratic(uv: np.ndarray) -> np.ndarray:
    u, v = uv[:, 0], uv[:, 1]
    return np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=1)


def _outline(mask: np.ndarray, x0: int, y0: int) -> list[list[tuple[float, float]]]:
    """Closed polygons around ``mask`` (a crop whose top-left pixel is (x0, y0)), in image coordinates."""
    from contourpy import contour_generator

    padded = np.pad(mask.astype(np.float64), 1)
    lines = contour_generator(z=padded, line_type="Separate").lines(0.5)
    out = []
    for line in lines:
        step = max(1, math.ceil(len(line) / MAX_OUTLINE_POINTS))
        pts = line[::step]
        out.append([(float(px) - 1 + x0 + 0.5, float(py) - 1 + y0 + 0.5) for px, py in pts])
    return out


def find_regions(amap: np.ndarray, threshold: float, *, xyz: np.ndarray | None = None,
                 on_object: np.ndarray | None = None) -> tuple[list[Region], int]:
    """The regions of ``amap`` (original resolution, `full_resolution`) above ``threshold``.

    ``xyz``: the organised cloud (H x W x 3, metres, z = 0 missing) for sizes in mm; ``on_object``:
    where regions may lie (`object_pixels`; default: everywhere). Returns the `MAX_REGIONS`
    highest-scoring regions (region 1 holds the map's maximum) and how many more there were.
    """
    amap = np.asarray(amap)
    flagged = np.greater(amap, np.float64(threshold))  # compared in float64 whatever the map's type; NaN: never
    if on_object is not None:
        flagged &= on_object
    if not flagged.any():
        return [], 0
    from scipy import ndimage  # here, not at import: 0.27 s that a scan without flagged pixels never needs

    labels, count = ndimage.label(flagged, structure=_EIGHT)
    if count == 0:
        return [], 0
    slices = ndimage.find_objects(labels)
    # per region within its box (ndimage.maximum sorts the whole image: 0.6 s at 800 x 800)
    peaks = np.array([amap[box][labels[box] == i].max() for i, box in enumerate(slices, start=1)], np.float64)
    order = 1 + np.argsort(-peaks, kind="stable")[:MAX_REGIONS]
    geometry = _Geometry(xyz, flagged, on_object) if xyz is not None else None
    regions = [_region(labels, int(i), slices[i - 1], float(peaks[i - 1]), geometry) for i in order]
    return regions, count - len(regions)


class _Geometry:
    """The cloud, and per region's window where it has points and where a ring may lie (on the object,
    not flagged): measured per window, not over the whole scan, since most regions are small."""

    def __init__(self, xyz: np.ndarray, flagged: np.ndarray, on_object: np.ndarray | None) -> None:
        self.xyz = np.asarray(xyz)  # windows are taken to float64 when measured (no full-size copy)
        if self.xyz.shape[:2] != flagged.shape:
            raise ValueError(f"point cloud is {self.xyz.shape[:2]} but the map is {flagged.shape}")
        self.flagged = flagged
        self.on_object = on_object

    def window(self, window: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(points, where they are valid, where a ring may lie) of ``window``."""
        xyz = self.xyz[window]
        z = xyz[..., 2]
        valid = np.isfinite(z) & (z != 0) & np.isfinite(xyz[..., :2]).all(axis=2)
        surroundings = valid & ~self.flagged[window]
        if self.on_object is not None:
            surroundings &= self.on_object[window]
        return xyz, valid, surroundings


def _region(labels: np.ndarray, label: int, box: tuple[slice, slice], peak: float,
            geometry: _Geometry | None) -> Region:
    ys, xs = box
    mask = labels[box] == label
    rows, cols = np.nonzero(mask)
    pixels = int(mask.sum())
    base = dict(pixels=pixels, box=(xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start),
                centre_px=(float(cols.mean()) + xs.start + 0.5, float(rows.mean()) + ys.start + 0.5), peak=peak,
                outline=_outline(mask, xs.start, ys.start))
    if geometry is None:
        return Region(**base)
    # Everything below looks at a window around the region: the region, its ring, the smoothing.
    radius = math.sqrt(pixels / math.pi)
    width = min(max(3, int(round(0.5 * radius))), _RING_MAX)
    pad = _RING_GAP + width + 1
    h, w = labels.shape
    window = (slice(max(ys.start - pad, 0), min(ys.stop + pad, h)), slice(max(xs.start - pad, 0), min(xs.stop + pad, w)))
    return Region(**base, **_measure(geometry, window, labels[window] == label, width))


def _measure(g: _Geometry, window: tuple[slice, slice], region: np.ndarray, width: int) -> dict[str, Any]:
    """Area, depth and centre of one region (a mask of ``window``) from the cloud."""
    from scipy import ndimage  # here, not at import: 0.27 s that a scan without flagged pixels never needs

    xyz, valid, surroundings = g.window(window)
    points = xyz[region & valid].astype(np.float64)
    if len(points) == 0:
        return {}
    centre = points.mean(axis=0)
    inner = ndimage.binary_dilation(region, _EIGHT, iterations=_RING_GAP)
    ring = ndimage.binary_dilation(inner, _EIGHT, iterations=width) & ~inner & surroundings
    ring_points = xyz[ring][:: max(1, int(ring.sum()) // _RING_POINTS)].astype(np.float64)
    # without surroundings (a region covering the whole object): the region's own plane, fitted on an
    # even subsample as the ring is (a 6-coefficient surface needs thousands of points, not 640,000)
    surface = ring_points if len(ring_points) >= 3 else points[:: max(1, len(points) // _RING_POINTS)]
    if len(surface) < 3:
        return {"centre_mm": tuple(float(v) * 1e3 for v in centre)}
    origin, normal, axes, coef = _fit_surface(surface, centre)
    du, dv = _step(xyz, valid, axis=1)[region], _step(xyz, valid, axis=0)[region]  # the window has a margin
    patch = np.abs(np.cross(du.astype(np.float64), dv.astype(np.float64)) @ normal)
    known = np.isfinite(patch)
    area = float(patch[known].sum() + (~known).sum() * (np.median(patch[known]) if known.any() else 0.0)) * 1e6
    out: dict[str, Any] = {"area_mm2": area, "centre_mm": tuple(float(v) * 1e3 for v in centre)}
    if len(ring_points) < 3:
        return out
    deviation = np.full(region.shape, np.nan)
    rel = points - origin
    deviation[region & valid] = rel @ normal - _quadratic(rel @ axes.T) @ coef
    thickness = float(ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1].max())
    sigma = min(max(SMOOTH_MIN_PX, SMOOTH_SHARE * thickness), SMOOTH_MAX_PX)
    smooth = _local_mean(deviation, sigma)[region & valid]
    peak = float(smooth[np.nanargmax(np.abs(smooth))])
    out |= {"depth_mm": abs(peak) * 1e3, "height_mm": peak * 1e3}
    return out


#: The deviations are averaged with a Gaussian of this share of the region's thickness (its largest
#: inscribed radius), at least SMOOTH_MIN_PX and at most SMOOTH_MAX_PX (a wider one averages no more
#: noise away that matters, and costs time on large regions): sensor noise would otherwise add itself
#: to the largest deviation; a narrow groove is measured shallower than it is (docs/REGIONS.md).
SMOOTH_SHARE = 0.25
SMOOTH_MIN_PX = 0.7
SMOOTH_MAX_PX = 4.0


def _local_mean(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-weighted mean of the finite values around each pixel (NaN where there are none)."""
    from scipy import ndimage  # here, not at import: 0.27 s that a scan without flagged pixels never needs

    finite = np.isfinite(values)
    sums = ndimage.gaussian_filter(np.where(finite, values, 0.0), sigma, mode="constant")
    counts = ndimage.gaussian_filter(finite.astype(np.float64), sigma, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 1e-12, sums / counts, np.nan)
