"""Depth PNG: 16-bit depth per pixel (0 = missing), back-projected to an organised cloud with the
camera's intrinsics and depth scale from ``camera.json`` (returned in metres)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path

import numpy as np

from ...errors import DataError
from ..io import DEFAULT_MAX_PIXELS, SIXTEEN_BIT_MODES, open_image
from .base import Reader, ReadOptions


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics of a depth camera: focal lengths and principal point in pixels.

    ``depth_scale`` is metres per depth-PNG unit (0.001: the PNG stores millimetres).
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

    @classmethod
    def from_json(cls, path: str | Path) -> Camera:
        """Load ``{"fx": .., "fy": .., "cx": .., "cy": .., "depth_scale": ..}`` (depth_scale optional)."""
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
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise DataError(path, f"unknown camera keys {unknown}; known: {known}")
        missing = [k for k in ("fx", "fy", "cx", "cy") if k not in raw]
        if missing:
            raise DataError(path, f"missing camera keys {missing}")
        problem = _camera_problem(raw)
        if problem:
            raise DataError(path, problem)
        return cls(**{k: float(v) for k, v in raw.items()})


def _camera_problem(values: dict[str, object]) -> str:
    """Why these intrinsics are unusable ("" if they are fine)."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return f"camera value {key}={value!r} is not a finite number"
        if key in ("fx", "fy", "depth_scale") and value <= 0:
            return f"camera value {key}={value!r} must be > 0"
    return ""


def read_depth_png(path: str | Path, camera: Camera, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Back-project a 16-bit depth PNG (0 = missing) to an organised float32 HxWx3 cloud in metres.

    Pixel (row v, column u) with depth d becomes (x, y, z) = ((u-cx) z/fx, (v-cy) z/fy, d*depth_scale);
    missing pixels stay (0, 0, 0) as in MVTec 3D-AD clouds.
    """
    path = Path(path)
    im = open_image(path, max_pixels)
    if im.mode not in SIXTEEN_BIT_MODES:
        raise DataError(path, f"expected a 16-bit single-channel depth PNG, found mode {im.mode}")
    depth = np.asarray(im).astype(np.float64)
    if depth.min() < 0 or depth.max() > 65535:
        raise DataError(path, f"depth values {depth.min():.0f}..{depth.max():.0f} are outside 0..65535")
    if not np.any(depth):
        raise DataError(path, "no valid depth: every pixel is 0 (missing)")
    z = depth * camera.depth_scale
    rows, cols = np.indices(z.shape, dtype=np.float64)
    xyz = np.stack([(cols - camera.cx) * z / camera.fx, (rows - camera.cy) * z / camera.fy, z], axis=2)
    return xyz.astype(np.float32)


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
                description="16-bit depth PNG", read=_read, unit="camera", camera=True)
