"""Per-sample pictures: heatmap overlays and side-by-side panels.

Streaming by design: each call renders one sample and keeps nothing, so a whole test set can be
drawn without holding its maps in memory. Colour scales are fixed by the caller (``vmin``/``vmax``)
so that every image of a run is comparable. Matplotlib is used through its object API with the Agg
canvas (no pyplot, no display, no global state), and PNG metadata is stripped so that the same input
always gives the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..atomic import atomic_write_bytes
from ..runtime.heatmap import overlay, png_bytes

#: Panel geometry: inches per column and figure height at a fixed dpi (5 columns -> 1250x330 px).
PANEL_COL_INCHES = 2.5
PANEL_HEIGHT_INCHES = 3.3
PANEL_DPI = 100
#: The column titles of the branch maps (other branch names are shown as they are).
BRANCH_LABELS = {"rgb": "colour (RGB branch)", "geo": "geometry (3D branch)", "fused": "fused branch"}


def to_uint8_image(x3d: np.ndarray) -> np.ndarray:
    """A 3D input image (float CHW in [0,1], 1 or 3 channels; normals or depth) as uint8 HxWx3."""
    x = np.asarray(x3d, dtype=np.float64)
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"3D image must be CHW with 1 or 3 channels, got shape {x.shape}")
    x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0)
    img = np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(1, 2, 0)
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else np.ascontiguousarray(img)


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"image must be uint8 HxWx3, got {rgb.dtype} {rgb.shape}")
    return rgb


def _check_map(amap: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    amap = np.asarray(amap, dtype=np.float64)
    if amap.shape != shape[:2]:
        raise ValueError(f"{what} has shape {amap.shape}, expected {shape[:2]} (the image's HxW)")
    return amap


def heatmap_overlay(
    rgb: np.ndarray, amap: np.ndarray, vmin: float, vmax: float, alpha: float = 0.5
) -> np.ndarray:
    """Blend ``amap`` (HxW, coloured with "jet" on the fixed scale [vmin, vmax]) over ``rgb``
    (`trd.runtime.heatmap.overlay`: the same pixels with or without matplotlib)."""
    rgb = _check_rgb(rgb)
    return overlay(rgb, _check_map(amap, rgb.shape, "anomaly map"), vmin, vmax, alpha)


def save_heatmap_png(
    path: str | Path, rgb: np.ndarray, amap: np.ndarray, vmin: float, vmax: float
) -> None:
    """Write the overlay of ``amap`` on ``rgb`` as a PNG of the image's size (atomically)."""
    atomic_write_bytes(path, png_bytes(heatmap_overlay(rgb, amap, vmin, vmax)))


def _show(ax: Axes, img: np.ndarray, title: str) -> None:
    ax.imshow(img, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def save_panel_png(
    path: str | Path,
    *,
    rgb: np.ndarray,
    x3d: np.ndarray,
    gt: np.ndarray | None,
    anomaly_map: np.ndarray,
    branch_maps: Mapping[str, np.ndarray],
    vmin: float,
    vmax: float,
    branch_ranges: Mapping[str, tuple[float, float]],
    title: str,
) -> None:
    """One side-by-side figure of a sample, written as a PNG (atomically).

    Columns: RGB, 3D image (float CHW in [0,1]), ground truth (or "no mask"), the fused map over the
    RGB image with the GT outline, then one overlay per branch on its own input image (RGB for
    "rgb"/"fused", the 3D image otherwise) on that branch's fixed scale from ``branch_ranges``.
    """
    rgb = _check_rgb(rgb)
    img3d = to_uint8_image(x3d)
    if img3d.shape != rgb.shape:
        raise ValueError(f"3D image is {img3d.shape[:2]} but the RGB image is {rgb.shape[:2]}")
    missing = sorted(set(branch_maps) - set(branch_ranges))
    if missing:
        raise ValueError(f"no colour range given for branch maps {missing}")
    gt_mask = None if gt is None else _check_map(gt, rgb.shape, "ground truth") > 0.5

    ncols = 4 + len(branch_maps)
    fig = Figure(figsize=(PANEL_COL_INCHES * ncols, PANEL_HEIGHT_INCHES), dpi=PANEL_DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    fig.subplots_adjust(left=0.005, right=0.995, bottom=0.01, top=0.80, wspace=0.03)
    fig.suptitle(title, fontsize=9)

    _show(axes[0], rgb, "RGB")
    _show(axes[1], img3d, "3D input")
    if gt_mask is None:
        _show(axes[2], np.full_like(rgb, 255), "ground truth")
        axes[2].text(0.5, 0.5, "no mask", ha="center", va="center", transform=axes[2].transAxes)
    else:
        _show(axes[2], np.repeat(gt_mask[..., None].astype(np.uint8) * 255, 3, axis=2), "ground truth")
    _show(axes[3], heatmap_overlay(rgb, anomaly_map, vmin, vmax), f"fused map\n[{vmin:.3g}, {vmax:.3g}]")
    if gt_mask is not None and gt_mask.any():
        axes[3].contour(gt_mask.astype(np.float64), levels=[0.5], colors="white", linewidths=1.0)

    for ax, (name, bmap) in zip(axes[4:], branch_maps.items(), strict=True):
        lo, hi = branch_ranges[name]
        base = rgb if name in ("rgb", "fused") else img3d
        label = BRANCH_LABELS.get(name, name)
        _show(ax, heatmap_overlay(base, bmap, lo, hi), f"{label}\n[{lo:.3g}, {hi:.3g}]")

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PANEL_DPI, metadata={"Software": None})
    atomic_write_bytes(path, buf.getvalue())
