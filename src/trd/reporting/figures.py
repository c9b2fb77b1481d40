"""Per-sample pictures: each image of a sample as its own PNG, captioned in the report's HTML.

Streaming by design: each call renders one sample and keeps nothing, so a whole test set can be
drawn without holding its maps in memory. A sample's pictures are its RGB image (the true defect
outlined when there is one), its 3D input as the model sees it, and the fused heatmap and each
branch's heatmap with the flagged regions outlined, all on one colour scale per sample that the
caller fixes (``vmin``/``vmax``, covering the sample's score; the report draws the colour bar in
HTML). Drawn with numpy and Pillow (`trd.runtime.heatmap`: the same pixels as `trd predict` and
`trd serve`); PNGs carry no metadata, so the same input always gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes
from ..runtime.heatmap import draw_outlines, overlay, png_bytes

#: Which student each branch map comes from, in the report's words.
BRANCH_LABELS = {"rgb": "colour student", "geo": "shape (3D) student", "fused": "single student"}
#: Outline colour of the true defect (ground truth) on the RGB picture.
TRUTH_COLOUR = (0, 230, 90)


@dataclass(frozen=True)
class Picture:
    """One picture of a sample: ``path`` relative to the run folder, its caption, and for heatmaps
    the colour scale ``(vmin, vmax, pixel threshold)`` that the report draws as a colour bar."""

    path: str
    caption: str
    scale: tuple[float, float, float] | None = None


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


def _truth_outline(img: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``img`` with the boundary pixels of the true defect ``gt`` painted in `TRUTH_COLOUR`."""
    inner = np.zeros_like(gt)
    inner[1:-1, 1:-1] = gt[1:-1, 1:-1] & gt[:-2, 1:-1] & gt[2:, 1:-1] & gt[1:-1, :-2] & gt[1:-1, 2:]
    out = img.copy()
    out[gt & ~inner] = TRUTH_COLOUR
    return out


def save_sample_images(
    folder: str | Path,
    relative: str,
    *,
    rgb: np.ndarray,
    x3d: np.ndarray,
    gt: np.ndarray | None,
    anomaly_map: np.ndarray,
    branch_maps: Mapping[str, np.ndarray],
    scale: tuple[float, float, float],
    outlines: list[tuple[list[list[tuple[float, float]]], bool]],
    outline_scale: tuple[float, float] = (1.0, 1.0),
) -> list[Picture]:
    """Write a sample's pictures as PNGs under ``folder / relative`` (atomically); their `Picture` s.

    ``rgb`` (uint8 SxSx3) and ``x3d`` (float CHW in [0,1]) as the model saw them; ``gt``: the true
    defect (bool SxS) or None; maps at the same SxS size; ``scale``: (vmin, vmax, pixel threshold)
    of every heatmap; ``outlines``: each flagged region's polygons and whether it counts as a
    defect (`trd.runtime.heatmap.draw_outlines`), in the coordinates of the original image, which
    ``outline_scale`` (S / width, S / height) takes to these pictures.
    """
    rgb = _check_rgb(rgb)
    img3d = to_uint8_image(x3d)
    if img3d.shape != rgb.shape:
        raise ValueError(f"3D image is {img3d.shape[:2]} but the RGB image is {rgb.shape[:2]}")
    truth = None if gt is None else _check_map(gt, rgb.shape, "ground truth") > 0.5
    sx, sy = outline_scale
    scaled = [([[(x * sx, y * sy) for x, y in ring] for ring in polygons], counts) for polygons, counts in outlines]
    vmin, vmax, _ = scale
    pictures = [
        ("rgb.png", _truth_outline(rgb, truth) if truth is not None and truth.any() else rgb,
         "RGB image" + (" (true defect outlined in green)" if truth is not None and truth.any() else ""), None),
        ("3d.png", img3d, "3D scan as the model sees it", None),
        ("heatmap.png", draw_outlines(heatmap_overlay(rgb, anomaly_map, vmin, vmax), scaled),
         "Anomaly heatmap, flagged regions outlined", scale),
    ]
    for name, amap in branch_maps.items():
        label = BRANCH_LABELS.get(name, f"{name} student")
        pictures.append((f"heatmap-{name}.png", draw_outlines(heatmap_overlay(rgb, amap, vmin, vmax), scaled),
                         f"Part from the {label}", scale))
    out = []
    for file, img, caption, bar in pictures:
        path = f"{relative}/{file}"
        atomic_write_bytes(Path(folder) / path, png_bytes(img))
        out.append(Picture(path, caption, bar))
    return out
