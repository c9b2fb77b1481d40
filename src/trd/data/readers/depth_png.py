"""Depth PNG: 16-bit depth per pixel (0 = missing), back-projected to an organised cloud with the
camera's intrinsics and depth scale from ``camera.json`` (returned in metres).

The depth step is given either as ``depth_scale`` (metres per count, as RealSense and Open3D state
it: 0.001 for millimetres) or as ``depth_unit``, the length of one count with its unit ("1 mm",
"0.1 mm", "1 um"), which is what sensor manuals list. A scan whose depth steps are coarse for its
surface is read, and warned about (`CoarseDepthWarning`).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ...config import XYZ_UNITS
from ...errors import DataError
from ..io import DEFAULT_MAX_PIXELS, SIXTEEN_BIT_MODES, image_size, open_image
from .base import Reader, ReadOptions

#: ``depth_unit`` values: a positive number (default 1) and a unit of `XYZ_UNITS` ("µm" = "um").
_DEPTH_UNIT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)?\s*(m|cm|mm|um|µm)\s*$")
#: Share of neighbouring valid pixels with the same depth count from which steps count as coarse.
COARSE_SHARE = 0.5


class CoarseDepthWarning(UserWarning):
    """A depth PNG whose steps are coarse for its surface: the 3D input is made of flat terraces."""


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics of a depth camera: focal lengths and principal point in pixels.

    ``depth_scale`` is metres per depth-PNG count (0.001: the PNG stores millimetres).
    """

    fx: float
    fy: float
    cx: float
    cy: float
    depth_scale: float = 0.001

    def __post_init__(self) -> None:
        problem = _camera_problem({f.name: getattr(self, f.name) for f in fields(self)})
        if problem:
            raise ValueError(problem)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @property
    def step(self) -> str:
        """One count in words: "0.1 mm"."""
        return depth_step_words(self.depth_scale)

    @classmethod
    def from_json(cls, path: str | Path) -> Camera:
        """Load ``{"fx": .., "fy": .., "cx": .., "cy": .., "depth_scale": ..}``, the depth step given as
        ``depth_scale`` (metres per count) or ``depth_unit`` ("0.1 mm"), or neither (1 mm)."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            needed = "needed for depth PNGs: fx, fy, cx, cy, depth_scale"
            raise DataError(path, f"camera file not found ({needed})") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(path, f"cannot read camera file: {exc}") from None
        except json.JSONDecodeError as exc:
            raise DataError(path, f"not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise DataError(path, "expected a JSON object with keys fx, fy, cx, cy, depth_scale")
        known = [f.name for f in fields(cls)] + ["depth_unit"]
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise DataError(path, f"unknown camera keys {unknown}; known: {known}")
        missing = [k for k in ("fx", "fy", "cx", "cy") if k not in raw]
        if missing:
            raise DataError(path, f"missing camera keys {missing}")
        if "depth_unit" in raw:
            if "depth_scale" in raw:
                raise DataError(path, "give the depth step once: depth_scale (metres per count) or depth_unit "
                                      "(e.g. \"0.1 mm\"), not both")
            unit = raw.pop("depth_unit")
            raw["depth_scale"] = parse_depth_unit(path, unit)
        problem = _camera_problem(raw)
        if problem:
            raise DataError(path, problem)
        return cls(**{k: float(v) for k, v in raw.items()})

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Camera:
        """The camera of `to_dict` (stored in a model); ValueError when it is damaged."""
        return cls(**{f.name: float(raw[f.name]) for f in fields(cls)})


def parse_depth_unit(path: Path, value: object) -> float:
    """Metres per count of a ``depth_unit`` such as "0.1 mm", "1 um" or "mm"; DataError naming ``path``."""
    found = _DEPTH_UNIT.match(value) if isinstance(value, str) else None
    if found is None or float(found.group(1) or 1.0) <= 0:
        raise DataError(path, f"depth_unit {value!r} is not a length per count: write it like \"1 mm\", \"0.1 mm\" "
                              f"or \"1 um\" (units {', '.join(XYZ_UNITS)})")
    return float(found.group(1) or 1.0) * XYZ_UNITS[found.group(2).replace("µ", "u")]


def _camera_problem(values: dict[str, object]) -> str:
    """Why these intrinsics are unusable ("" if they are fine)."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return f"camera value {key}={value!r} is not a finite number"
        if key in ("fx", "fy", "depth_scale") and value <= 0:
            return f"camera value {key}={value!r} must be > 0"
    return ""


def depth_step_words(metres: float) -> str:
    """A depth step in the unit that reads best: 0.0001 -> "0.1 mm", 1e-06 -> "1 um"."""
    unit = "mm" if metres >= 0.999e-5 else "um"
    return f"{metres / XYZ_UNITS[unit]:.4g} {unit}"


def read_depth_png(path: str | Path, camera: Camera, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Back-project a 16-bit depth PNG (0 = missing) to an organised float32 HxWx3 cloud in metres.

    Pixel (row v, column u) with depth d becomes (x, y, z) = ((u-cx) z/fx, (v-cy) z/fy, d*depth_scale);
    missing pixels stay (0, 0, 0) as in MVTec 3D-AD clouds. Coarse steps are warned about
    (`coarse_steps`).
    """
    path = Path(path)
    im = open_image(path, max_pixels)
    if im.mode not in SIXTEEN_BIT_MODES:
        raise DataError(path, f"expected a 16-bit single-channel depth PNG, found mode {im.mode}")
    counts = np.asarray(im)
    if counts.min() < 0 or counts.max() > 65535:
        raise DataError(path, f"depth values {counts.min():.0f}..{counts.max():.0f} are outside 0..65535")
    if not np.any(counts):
        raise DataError(path, "no valid depth: every pixel is 0 (missing)")
    coarse = coarse_steps(counts, camera.depth_scale)
    if coarse:
        warnings.warn(CoarseDepthWarning(f"{path}: {coarse}"), stacklevel=2)
    z = counts.astype(np.float64) * camera.depth_scale
    rows, cols = np.indices(z.shape, dtype=np.float64)
    xyz = np.stack([(cols - camera.cx) * z / camera.fx, (rows - camera.cy) * z / camera.fy, z], axis=2)
    return xyz.astype(np.float32)


def coarse_steps(counts: np.ndarray, depth_scale: float) -> str:
    """Why the depth steps of ``counts`` are coarse for the surface ("" when they are not).

    The rule: at least `COARSE_SHARE` of the pairs of neighbouring valid pixels (left-right and
    up-down) have the same count. The surface then changes by less than one step from pixel to
    pixel, so the depth image is made of flat terraces and their edges, whatever the sensor's
    noise or the camera's distance; measured on synthetic scans at 0.02, 0.2 and 1 mm of noise
    (benchmarks/depth_steps.py), at that share the steps change the 3D input by ~3/4 as much as
    the sensor's own noise does, and by more beyond it. Costs two comparisons per pixel.
    """
    share = same_count_share(counts)
    if share < COARSE_SHARE:
        return ""
    finest = _round_up(float(counts.max()) * depth_scale / 65535.0)  # the finest step that holds the farthest point
    advice = (f"store depth in finer steps (16 bits hold this scan in steps of {depth_step_words(finest)}: camera.json "
              f"depth_unit \"{depth_step_words(finest)}\") or export an XYZ TIFF, PCD or PLY") if finest < depth_scale \
        else "16-bit counts cannot hold this scan in finer steps: export an XYZ TIFF, PCD or PLY instead"
    return (f"depth steps are coarse for the surface: {100 * share:.0f} % of neighbouring pixels have the same "
            f"depth count (1 count = {depth_step_words(depth_scale)}, the camera's depth_scale), so the 3D input is "
            f"made of flat terraces; {advice}")


def same_count_share(counts: np.ndarray) -> float:
    """Share of the pairs of neighbouring valid pixels (left-right, up-down) with the same depth count."""
    valid = counts > 0
    pairs = same = 0
    for a, b, ok in ((counts[:, 1:], counts[:, :-1], valid[:, 1:] & valid[:, :-1]),
                     (counts[1:], counts[:-1], valid[1:] & valid[:-1])):
        pairs += int(np.count_nonzero(ok))
        same += int(np.count_nonzero((a == b) & ok))
    return same / pairs if pairs else 0.0


def _round_up(step: float) -> float:
    """The smallest of 1, 2, 5 x 10^k that is >= ``step``."""
    decade = 10.0 ** math.floor(math.log10(step))
    return next(m * decade for m in (1, 2, 5, 10) if m * decade >= step * (1 - 1e-9))


@lru_cache(maxsize=16)
def load_camera(path: Path) -> Camera:
    """The camera of ``path`` (read once per file and process); DataError naming it when it is missing."""
    if not path.is_file():
        raise DataError(path, "missing: depth PNGs need the camera intrinsics (fx, fy, cx, cy, depth_scale)")
    return Camera.from_json(path)


def _read(path: Path, options: ReadOptions) -> np.ndarray:
    if options.camera is None:
        raise DataError(path, "depth PNGs need camera.json (fx, fy, cx, cy, depth_scale)")
    return read_depth_png(path, options.camera, options.max_pixels)


READER = Reader(kind="depth_png", folder="depth", suffixes=(".png",), formats=("folder",),
                description="16-bit depth PNG", read=_read, size=image_size, unit="camera",
                camera=True)
