"""3D preprocessing of organised point clouds: plane masks, hole filling, depth and normal images.

Implements docs/METHOD.md §2.3-§2.6 with numpy only. DEPARTURE (docs/METHOD_NOTES.md §3): the
OpenCV behaviours the reference code relies on are reproduced here rather than importing OpenCV:

- ``MORPH_CLOSE`` with a 3x3 ones kernel and ``iterations``: OpenCV's default border value makes
  the image border neutral (it never dilates in and never erodes away), see `close_mask`;
- ``Sobel(img, CV_64F, dx, dy, ksize)``: un-normalised separable kernels, reflect-101 borders;
- ``resize`` ``INTER_NEAREST`` (source index ``floor(dst * in / out)``) and ``INTER_LINEAR``
  (half-pixel centres, clamped at the borders, no anti-aliasing).

Speed (issue 24): the filters are whole-array numpy operations (`trd.data.filters`) that do
scipy.ndimage's arithmetic in its order, so their results are bit for bit those of the scipy
filters this module used before (tests/data/test_geometry_exact.py compares them), without importing
scipy at start-up; and every step after the plane fit works on the smallest window around the
object that gives the same values (`trd.data.filters.box_around`): pixels farther from the object
than the hole filling and the Sobel kernel reach are zero in the output either way.

Every image in this module is HxW (or HxWxC) with the row axis first; ``xyz`` is an organised
HxWx3 cloud whose channel 2 is z, and z == 0 marks a missing point.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from ..config import MODALITIES_3D as MODALITIES
from ..config import PLANES
from .filters import box_around, correlate1d, count3x3, slide, sum3x3_at
from .transforms import NORMALISED_BACKGROUND

_CORNER_NAMES = ("top-left", "top-right", "bottom-left")
_MIN_SCORE_POINTS = 2000  # RANSAC hypotheses are scored on at least this many points
_FILL_PASSES = 2  # hole-filling passes of the depth and normal images (docs/METHOD.md §2.4)


def _check_cloud(xyz: np.ndarray) -> np.ndarray:
    xyz = np.asarray(xyz)
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise ValueError(f"expected an organised HxWx3 point cloud, got shape {xyz.shape}")
    if min(xyz.shape[:2]) < 3:
        raise ValueError(f"point cloud {xyz.shape[:2]} is too small (at least 3x3 pixels)")
    return xyz


#: Points per block of `_beyond_plane` (a block's float64 copy stays in the CPU's cache, and no
#: full-size float64 copy of the cloud is allocated: 5.3 -> 2.1 ms of CPU for an 800 x 800 cloud).
_PLANE_BLOCK = 16384


def _beyond_plane(xyz: np.ndarray, normal: np.ndarray, d: float, threshold: float) -> np.ndarray:
    """Where ``|n . p - d| > threshold`` (``normal`` has unit length), computed a block of whole rows
    at a time with the same float64 product as over the whole cloud (each row is one matrix-vector
    product either way, so the distances are the same to the bit)."""
    h, w = xyz.shape[:2]
    rows = max(1, _PLANE_BLOCK // max(w, 1))
    out = np.empty((h, w), bool)
    points = np.empty((rows, w, 3), np.float64)
    distance = np.empty((rows, w), np.float64)
    for top in range(0, h, rows):
        n = min(rows, h - top)
        points[:n] = xyz[top:top + n]
        np.matmul(points[:n], normal, out=distance[:n])
        distance[:n] -= d
        np.abs(distance[:n], out=distance[:n])
        np.greater(distance[:n], threshold, out=out[top:top + n])
    return out


class PlaneFallback(UserWarning):
    """The reference plane fit could not be used as is for this cloud; a fallback was (see message)."""


def corner_plane(xyz: np.ndarray, threshold: float = 0.005) -> tuple[np.ndarray, float]:
    """Background plane through the mean points of three 3x3 corner patches (docs/METHOD.md §2.3).

    As in the reference code, each patch's 9-pixel xyz sum (missing zeros included) is divided by
    its number of valid pixels (z != 0). With p1, p2, p3 = top-left, top-right, bottom-left,
    n = (p3 - p1) x (p2 - p1) and d = n . p3. Returns the unit normal and d scaled with it, so that
    ``|normal . p - d|`` is the point-to-plane distance.

    DEPARTURE (docs/METHOD_NOTES.md §13): a corner patch without any valid point makes the reference divide by zero, which
    silently yields an empty foreground (a blank 3D image). Here that patch is widened (5x5, 9x9,
    ... up to a quarter of the shorter side) until it holds valid points, and if none of those
    sizes works, or the corner points are collinear, the plane comes from `ransac_plane` (inliers
    within ``threshold``); either fallback is announced with a `PlaneFallback` warning.
    """
    xyz = _check_cloud(xyz)
    limit = max(3, min(xyz.shape[:2]) // 4)
    points, widened = [], []
    for name, (rows, cols) in zip(_CORNER_NAMES, _CORNERS, strict=True):
        size = 3
        while True:
            patch = xyz[rows(size), cols(size)]
            valid = np.count_nonzero(patch[..., 2])
            if valid or size >= limit:
                break
            size = min(2 * size - 1, limit)
        if valid == 0:
            return _ransac_fallback(xyz, f"the {name} corner has no valid 3D points within {size}x{size} px",
                                    threshold)
        if size > 3:
            widened.append(f"{name} {size}x{size}")
        points.append(patch.reshape(-1, 3).astype(np.float64).sum(axis=0) / valid)
    p1, p2, p3 = points
    normal = np.cross(p3 - p1, p2 - p1)
    length = float(np.linalg.norm(normal))
    if length == 0.0:
        return _ransac_fallback(xyz, "the three corner points are collinear", threshold)
    if widened:
        warnings.warn(PlaneFallback(f"corner patches without valid 3D points were widened ({', '.join(widened)})"),
                      stacklevel=2)
    return normal / length, float(normal @ p3) / length


_CORNERS = (
    (lambda k: slice(0, k), lambda k: slice(0, k)),
    (lambda k: slice(0, k), lambda k: slice(-k, None)),
    (lambda k: slice(-k, None), lambda k: slice(0, k)),
)


def _ransac_fallback(xyz: np.ndarray, why: str, threshold: float) -> tuple[np.ndarray, float]:
    warnings.warn(PlaneFallback(f"{why}; background plane fitted with RANSAC instead"), stacklevel=3)
    return ransac_plane(xyz, threshold)


def ransac_plane(
    xyz: np.ndarray,
    threshold: float,
    iterations: int = 200,
    seed: int = 0,
    sample_fraction: float = 0.02,
) -> tuple[np.ndarray, float]:
    """Dominant plane of the valid points (z != 0): RANSAC, then a least-squares refit on inliers.

    For scenes whose corners are not background. All ``iterations`` hypotheses (random point
    triples) are scored at once on a random subset of ``sample_fraction`` of the valid points (at
    least 2000), which keeps an 800x800 cloud fast; the best one's inliers (distance < ``threshold``)
    among all valid points are refitted by total least squares. Deterministic for a ``seed``.
    Returns a unit normal with n_z >= 0 and d, as `corner_plane`. Note: "dominant" means the plane
    holding the most points, so an object larger than the visible background can win.
    """
    xyz = _check_cloud(xyz)
    points = xyz[xyz[..., 2] != 0].astype(np.float64)
    count = len(points)
    if count < 3:
        raise ValueError(f"RANSAC plane fit needs at least 3 valid 3D points, found {count}")
    rng = np.random.default_rng(seed)
    n_score = min(count, max(_MIN_SCORE_POINTS, math.ceil(sample_fraction * count)))
    scoring = points[rng.choice(count, size=n_score, replace=False)]
    a, b, c = (points[i] for i in rng.integers(0, count, size=(3, iterations)))
    normals = np.cross(b - a, c - a)
    lengths = np.linalg.norm(normals, axis=1)
    usable = lengths > 0
    if not usable.any():
        raise ValueError("the valid 3D points define no plane (no three of them are non-collinear)")
    normals[usable] /= lengths[usable, None]
    offsets = np.einsum("ij,ij->i", normals, a)
    inliers = np.abs(scoring @ normals.T - offsets) < threshold
    support = np.where(usable, inliers.sum(axis=0), -1)
    best = int(np.argmax(support))
    chosen = points[np.abs(points @ normals[best] - offsets[best]) < threshold]
    centre = chosen.mean(axis=0)
    deviations = chosen - centre
    _, vectors = np.linalg.eigh(deviations.T @ deviations)
    normal = vectors[:, 0] * (1.0 if vectors[2, 0] >= 0 else -1.0)
    return normal, float(normal @ centre)


def close_mask(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Morphological closing with a 3x3 ones kernel, like OpenCV ``MORPH_CLOSE`` with ``iterations``.

    OpenCV dilates ``iterations`` times and then erodes ``iterations`` times; for a full
    rectangular kernel this equals one pass with a (2*iterations+1)^2 square. Its default border
    value is -inf for dilation and +inf for erosion: pixels outside the image never switch a pixel
    on and never erode one away. (scipy's ``binary_closing`` instead erodes from the border.)
    Only the window around the mask's pixels that the closing can change is computed.
    """
    mask = np.asarray(mask, dtype=bool)
    if iterations <= 0:
        return mask.copy()
    out = np.zeros_like(mask)
    window = box_around(mask, 2 * iterations + 1)
    if window is None:
        return out
    grown = mask[window]
    for axis in (0, 1):
        grown = slide(grown, iterations, axis, False, np.logical_or)
    for axis in (0, 1):
        grown = slide(grown, iterations, axis, True, np.logical_and)
    out[window] = grown
    return out


def foreground_mask(
    xyz: np.ndarray,
    method: str = "corners",
    threshold: float = 0.005,
    closing_iterations: int = 3,
    seed: int = 0,
) -> np.ndarray:
    """Object pixels of a cloud (docs/METHOD.md §2.3): farther than ``threshold`` from the background plane.

    ``method``: "corners" (reference: plane through three corner patches), "ransac" (robust plane
    fit) or "none" (every valid pixel). Missing pixels (z == 0) are background before the closing;
    the closing (`close_mask`) is applied whatever the method.
    """
    xyz = _check_cloud(xyz)
    valid = xyz[..., 2] != 0
    if method == "none":
        fg = valid
    elif method in ("corners", "ransac"):
        normal, d = corner_plane(xyz, threshold) if method == "corners" else ransac_plane(xyz, threshold, seed=seed)
        fg = _beyond_plane(xyz, normal, d, threshold) & valid
    else:
        raise ValueError(f"unknown plane method {method!r}; known: {', '.join(PLANES)}")
    return close_mask(fg, closing_iterations)


def fill_holes(img: np.ndarray, iterations: int = _FILL_PASSES) -> np.ndarray:
    """Fill zero pixels with the mean of the strictly positive values around them (docs/METHOD.md §2.4).

    Each pass, every pixel that is exactly 0 takes the mean of the strictly positive values of its
    3x3 neighbourhood (stays 0 if there are none), all pixels reading the previous pass's values.
    Non-zero pixels are never changed. HxWxC images are filled per channel. Computed in floating
    point and returned in the input dtype (integer results are truncated).

    Only the zero pixels next to a positive one are computed (`sum3x3_at`), each exactly as the
    whole-image filter computed it before (tests/data/test_geometry.py compares the two).
    """
    img = np.asarray(img)
    work = img.astype(np.result_type(img.dtype, np.float32), copy=True)
    for _ in range(iterations):
        positive = work > 0
        counts = count3x3(positive)
        at = np.nonzero((work == 0) & (counts > 0))
        if not at[0].size:
            break
        work[at] = sum3x3_at(np.where(positive, work, 0), at) / counts[at].astype(work.dtype)
    return work.astype(img.dtype, copy=False)


def _minmax_nonzero(z: np.ndarray, gain: float = 1.0, offset: float = 0.0) -> np.ndarray:
    """Min-max scale the non-zero pixels of ``z`` to [0, 1], then ``* gain + offset``; zeros stay 0.

    Computed in float64, returned as float32. DEPARTURE (docs/METHOD_NOTES.md §4): when all non-zero
    values are equal the reference divides by zero (NaN); here they map to ``offset``.
    """
    nonzero = z != 0
    out = np.zeros(z.shape, np.float32)
    if nonzero.any():
        values = z[nonzero].astype(np.float64)
        low, span = values.min(), values.max() - values.min()
        unit = (values - low) / span if span > 0 else np.zeros_like(values)
        out[nonzero] = unit * gain + offset
    return out


def depth_image(xyz: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Depth image (docs/METHOD.md §2.5): float32 HxW, foreground in [0.1, 0.9], background 0.

    z of the foreground pixels is min-max normalised to [0, 1] and mapped to [0.1, 0.9] (larger =
    farther); background and missing pixels are 0; then holes are filled (`fill_holes`), which also
    grows the object by up to 2 pixels.
    """
    xyz = _check_cloud(xyz)
    return fill_holes(_minmax_nonzero(xyz[..., 2] * mask, gain=0.8, offset=0.1))


def sobel_kernels(k: int) -> tuple[np.ndarray, np.ndarray]:
    """(smoothing, derivative) 1-D kernels of OpenCV's first-order Sobel with aperture ``k``.

    Smoothing = binomial coefficients of order k-1; derivative = [-1, 0, 1] convolved with the
    binomial of order k-3. Not normalised, as in OpenCV: the 2-D gain on a unit slope is
    2**(2k-3) = 8, 128, 2048 for k = 3, 5, 7. ``k == 1`` means [-1, 0, 1] with no
    smoothing (gain 2). OpenCV accepts odd k up to 31; so does this.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1 or k > 31 or k % 2 == 0:
        raise ValueError(f"Sobel aperture must be an odd integer in 1..31, got {k!r}")
    if k == 1:
        return np.ones(1), np.array([-1.0, 0.0, 1.0])
    smoothing = np.array([math.comb(k - 1, i) for i in range(k)], dtype=np.float64)
    binomial = np.array([math.comb(k - 3, i) for i in range(k - 2)], dtype=np.float64)
    return smoothing, np.convolve([-1.0, 0.0, 1.0], binomial)


def sobel_xy(img: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(gx, gy) like OpenCV ``Sobel(img, CV_64F, 1, 0, ksize=k)`` and ``(0, 1)``, float64.

    gx differentiates along columns (d/dx), gy along rows (d/dy); correlation (a rising ramp gives
    a positive gradient) with reflect-101 borders (scipy mode "mirror", OpenCV's default).
    """
    smoothing, derivative = sobel_kernels(k)
    img = np.asarray(img)

    def separable(row_kernel: np.ndarray, col_kernel: np.ndarray) -> np.ndarray:
        out = correlate1d(img, row_kernel, 0, "mirror", np.float64)
        return correlate1d(out, col_kernel, 1, "mirror", np.float64)

    return separable(smoothing, derivative), separable(derivative, smoothing)


def normal_image(xyz: np.ndarray, mask: np.ndarray, sobel_k: int) -> np.ndarray:
    """Surface-normal image (docs/METHOD.md §2.6 steps 2-5): float32 HxWx3 in [0, 1].

    z of the foreground is min-max normalised to [0, 1] (no 0.1-0.9 remap: the nearest foreground
    pixel becomes 0 and is filled like a hole), holes are filled, Sobel gradients (aperture
    ``sobel_k``) give n = (-gx, -gy, 1) / (||.|| + 1e-8), encoded as (n + 1) / 2 and multiplied by
    the mask (background = 0, not the "flat" colour). Slopes are in normalised-z units per pixel
    times the Sobel gain, as in the reference.

    Computed on the window around the mask that the hole filling (2 passes) and the Sobel kernel
    reach (`box_around`): outside it the mask is 0, and so is the output.
    """
    xyz = _check_cloud(xyz)
    mask = np.asarray(mask)
    out = np.zeros((*xyz.shape[:2], 3), np.float32)
    window = box_around(mask != 0, max(_FILL_PASSES + 1, sobel_kernels(sobel_k)[1].size // 2))
    if window is None:
        return out
    mask = mask[window]
    gx, gy = sobel_xy(fill_holes(_minmax_nonzero(xyz[window][..., 2] * mask)), sobel_k)
    scale = gx * gx
    scale += gy * gy
    scale += 1.0
    np.sqrt(scale, out=scale)
    scale += 1e-8
    np.divide(1.0, scale, out=scale)  # 1 / (sqrt(gx^2 + gy^2 + 1) + 1e-8), operation by operation
    weight = np.asarray(mask, dtype=np.float64) * 0.5
    part = out[window]
    for channel, slope in ((0, gx), (1, gy)):
        slope *= scale
        np.subtract(1.0, slope, out=slope)
        slope *= weight
        part[..., channel] = slope  # (1 - slope * scale) * weight
    scale += 1.0
    scale *= weight
    part[..., 2] = scale  # (1 + scale) * weight
    return out


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int | np.integer) else size
    if height < 1 or width < 1:
        raise ValueError(f"output size must be positive, got {size!r}")
    return int(height), int(width)


def resize_nearest(arr: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of HxW or HxWxC to ``size`` (int or (height, width)).

    Source index = floor(dst * in / out), as OpenCV ``INTER_NEAREST`` and torch "nearest" (computed
    in exact integer arithmetic).
    """
    arr = np.asarray(arr)
    (in_h, in_w), (out_h, out_w) = arr.shape[:2], _size_hw(size)
    rows = np.arange(out_h) * in_h // out_h
    cols = np.arange(out_w) * in_w // out_w
    return arr[rows[:, None], cols[None, :]]


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower/upper source indices and upper weight (float32) of half-pixel-centre interpolation.

    As OpenCV: the source coordinate is computed in float64 and rounded to float32, and outside
    [0, n_in - 1] it is clamped to the edge pixel.
    """
    src = ((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5).astype(np.float32)
    src = np.clip(src, np.float32(0), np.float32(n_in - 1))
    low = np.floor(src)
    return low.astype(np.intp), np.minimum(low.astype(np.intp) + 1, n_in - 1), src - low


def resize_bilinear(arr: np.ndarray, size: int | tuple[int, int],
                    nonzero: tuple[slice, slice] | None = None) -> np.ndarray:
    """Bilinear resize of HxW or HxWxC without anti-aliasing, like OpenCV ``INTER_LINEAR``.

    Half-pixel centres, source coordinates clamped to the image (equal to torch ``interpolate``
    with align_corners=False, antialias=False). Float32 in, float32 out. ``nonzero``: the rows and
    columns outside which ``arr`` is +0.0 (`box_around`); output rows and columns that read nothing
    inside them are +0.0, which they are without being computed.
    """
    arr = np.asarray(arr)
    dtype = np.result_type(arr.dtype, np.float32)
    out_h, out_w = _size_hw(size)
    extra = (None,) * (arr.ndim - 2)
    out = np.zeros((out_h, out_w, *arr.shape[2:]), dtype)
    low, high, w = _linear_taps(arr.shape[0], out_h)
    at = _reading(low, high, None if nonzero is None else nonzero[0])
    w = w[at].astype(dtype)[(slice(None), None, *extra)]
    rows = arr[low[at]] * (1 - w) + arr[high[at]] * w
    low, high, w = _linear_taps(arr.shape[1], out_w)
    across = _reading(low, high, None if nonzero is None else nonzero[1])
    w = w[across].astype(dtype)[(slice(None), *extra)]
    out[at, across] = rows[:, low[across]] * (1 - w) + rows[:, high[across]] * w
    return out


def _reading(low: np.ndarray, high: np.ndarray, span: slice | None) -> slice:
    """The output positions whose taps (``low``, ``high``: non-decreasing) touch ``span`` of the input."""
    if span is None:
        return slice(0, len(low))
    return slice(int(np.searchsorted(high, span.start)), int(np.searchsorted(low, span.stop)))


def preprocess_3d(
    xyz: np.ndarray,
    *,
    modality: str = "normals",
    size: int = 256,
    sobel_k: int = 5,
    plane: str = "corners",
    plane_threshold: float = 0.005,
    closing_iterations: int = 3,
) -> np.ndarray:
    """The 3D input image of a cloud: float32 3 x size x size in [0, 1] (before ImageNet normalisation).

    "depth" (docs/METHOD.md §2.5): nearest resize of the raw cloud to size x size first, plane mask on
    the resized cloud, `depth_image`, replicated to 3 channels. "normals" (§2.6): plane mask and
    `normal_image` at full resolution, then bilinear resize, HWC -> CHW.
    """
    if modality not in MODALITIES:
        raise ValueError(f"unknown 3D modality {modality!r}; known: {', '.join(MODALITIES)}")
    if plane not in PLANES:
        raise ValueError(f"unknown plane method {plane!r}; known: {', '.join(PLANES)}")
    sobel_kernels(sobel_k)  # validates the aperture whatever the modality: it is part of the config
    xyz = _check_cloud(xyz).astype(np.float32, copy=False)
    if modality == "depth":
        small = resize_nearest(xyz, size)
        mask = foreground_mask(small, plane, plane_threshold, closing_iterations)
        return np.repeat(depth_image(small, mask)[None], 3, axis=0)
    mask = foreground_mask(xyz, plane, plane_threshold, closing_iterations)
    normals = normal_image(xyz, mask, sobel_k)  # +0.0 off the mask
    window = box_around(mask, 0) or (slice(0, 0), slice(0, 0))
    return np.ascontiguousarray(resize_bilinear(normals, size, window).transpose(2, 0, 1))


def input_foreground(x3d: Any) -> Any:
    """B x 1 x H x W bool tensor: the pixels where a batch of normalised 3D inputs has a surface.

    The 3D images are zero off the object (the foreground mask multiplies them, docs/METHOD.md
    §2.5-§2.6), so the object's mask travels inside the 3D input itself; inputs without masking
    (Eyecandies normal maps) count as foreground everywhere. ``x3d`` is a torch tensor
    (B x 3 x H x W, ImageNet-normalised); only tensor methods and Python scalars are used, so this
    module needs no torch import and the op exports to ONNX without constant tensors.
    """
    diffs = [(x3d[:, c : c + 1] - float(b)).abs() for c, b in enumerate(NORMALISED_BACKGROUND)]
    return diffs[0].maximum(diffs[1]).maximum(diffs[2]) > 1e-4
