"""Built-in synthetic RGB + point-cloud dataset, written in the exact MVTec 3D-AD layout.

Scene: a depth camera ~0.40 m above a slightly tilted conveyor plane looks at one object; the
image spans ~0.1 m. Each category is a different object shape with its own printed texture. The
RGB image is the texture lit by a Lambertian light using the defect-free geometry; the cloud is
organised float32 HxWx3 in metres with ~0.2 mm z noise and small clusters of missing points
((0, 0, 0), mostly at the silhouette). Objects stand >= 10 mm above the plane and never reach the
image border, so the three-corner plane fit with a 5 mm threshold separates them.

Defects (mask = every pixel the defect changes):
  color  a stain: RGB changes, geometry does not;
  dent   a 2-4 mm smooth depression or bump: geometry changes, RGB does not (not re-shaded);
  crack  a 1.5-3 mm deep narrow groove with dark colour: both change.

:func:`render_sample` draws the same random numbers in the same order whatever the defect, so one
seed rendered as "good" and as a defect differs only inside the defect mask.

:func:`write_line` writes the scans of a simulated production line, optionally drifting (`Drift`:
darker light, a moved scanner, lost 3D points, a defect rate), for the drift monitor's tests and
benchmark (docs/MONITOR.md).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from scipy import ndimage

from ..errors import ConfigError
from ..atomic import atomic_write_text
from .io import staged_dir

SYNTH_CATEGORIES: tuple[str, ...] = ("puck", "tile")
#: Per category: the true size and depth of every test defect (`DefectTruth`), by "split/defect/name".
DEFECTS_FILE = "defects.json"
DEFECT_TYPES: tuple[str, ...] = ("color", "dent", "crack")

_Z0 = 0.40  # camera-to-plane distance (m)
_FOV = 0.10  # width of the scene seen at the plane (m)
_Z_NOISE = 0.0002  # sensor noise on z (m)
_LIGHT = np.array([-0.35, -0.5, -1.0]) / np.linalg.norm([-0.35, -0.5, -1.0])  # towards the light


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field (sigma in pixels)."""
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return field / (field.std() + 1e-12)


def _puck(p: np.ndarray, q: np.ndarray, scale: float, tint: np.ndarray) -> tuple[np.ndarray, ...]:
    """Flat cylinder with a low dome and two printed rings: (height, albedo, inner distance, size)."""
    radius, height, dome, bevel = 0.028 * scale, 0.012 * scale, 0.003, 0.002
    r = np.hypot(p, q)
    h = (height + dome * np.clip(1.0 - (r / radius) ** 2, 0.0, None)) * _smoothstep((radius - r) / bevel)
    base = np.array([0.80, 0.62, 0.35]) + tint
    ink = np.array([0.45, 0.18, 0.10])
    band = sum(np.exp(-(((r - k * radius) / 0.0012) ** 2)) for k in (0.45, 0.75))
    albedo = base * (1.0 - band[..., None]) + ink * band[..., None]
    return h, albedo, radius - r - bevel, radius


def _tile(p: np.ndarray, q: np.ndarray, scale: float, tint: np.ndarray) -> tuple[np.ndarray, ...]:
    """Rounded box with a printed checker: (height, albedo, inner distance, size)."""
    half_x, half_y, corner, height, bevel = 0.030 * scale, 0.020 * scale, 0.005, 0.010 * scale, 0.0025
    dx, dy = np.abs(p) - half_x + corner, np.abs(q) - half_y + corner
    outside = np.hypot(np.maximum(dx, 0.0), np.maximum(dy, 0.0))
    sdf = outside + np.minimum(np.maximum(dx, dy), 0.0) - corner  # < 0 inside the footprint
    h = height * _smoothstep(-sdf / bevel)
    period = 0.008
    check = 0.5 + 0.5 * np.tanh(4.0 * np.sin(2 * np.pi * p / period) * np.sin(2 * np.pi * q / period))
    light, dark = np.array([0.86, 0.85, 0.80]) + tint, np.array([0.28, 0.42, 0.68]) + tint
    albedo = light * check[..., None] + dark * (1.0 - check[..., None])
    return h, albedo, -sdf - bevel, float(np.sqrt(half_x * half_y))


_SHAPES = {"puck": _puck, "tile": _tile}


def _check_args(size: int, category: str, defect: str) -> None:
    if category not in SYNTH_CATEGORIES:
        raise ConfigError(f"unknown synthetic category {category!r}; known: {list(SYNTH_CATEGORIES)}")
    if defect != "good" and defect not in DEFECT_TYPES:
        raise ConfigError(f"unknown synthetic defect {defect!r}; known: good, {', '.join(DEFECT_TYPES)}")
    if not isinstance(size, int) or size < 32:
        raise ConfigError(f"synthetic image size must be an integer >= 32, got {size!r}")


@dataclass(frozen=True)
class DefectTruth:
    """What a rendered defect really is, from the noise-free geometry (the yardstick of
    `trd.scoring.regions`): its mask's ``pixels``, centre (``centre_x``, ``centre_y``: column and
    row, pixel units), ``area_mm2`` (the area the mask covers on the defect-free surface) and
    ``depth_mm`` (the largest displacement of the surface from where it would be without the
    defect, measured along the defect-free surface's normal; 0 for a colour stain) with its sign
    ``height_mm`` (> 0: towards the camera, a bump; < 0: a depression)."""

    pixels: int
    centre_x: float
    centre_y: float
    area_mm2: float
    depth_mm: float
    height_mm: float


def render_sample(
    rng: np.random.Generator, size: int, category: str, defect: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one sample: (rgb uint8 HxWx3, xyz float32 HxWx3 in metres, mask bool HxW).

    ``defect`` is "good" (empty mask) or one of :data:`DEFECT_TYPES`.
    """
    rgb, xyz, mask, _ = render_with_truth(rng, size, category, defect)
    return rgb, xyz, mask


def _truth(mask: np.ndarray, xn: np.ndarray, yn: np.ndarray, z_clean: np.ndarray, dz: np.ndarray,
           pitch: float) -> DefectTruth:
    """The defect's size and depth from the noise-free clouds without (``z_clean``) and with (``+ dz``) it.

    The cloud is P(x, y) = (x z / Z0, y z / Z0, z) over the plane coordinates (x, y); a patch of one
    pixel covers |P_x x P_y| pitch^2 of the surface, and moving z by dz moves a point along the ray
    (x / Z0, y / Z0, 1) dz, i.e. by (ray . n) dz along the surface normal n.
    """
    if not mask.any():  # a good sample: nothing to measure (no random numbers are drawn here)
        return DefectTruth(0, float("nan"), float("nan"), 0.0, 0.0, 0.0)
    zy, zx = np.gradient(z_clean, pitch)
    px = np.stack([(z_clean + xn * zx) / _Z0, yn * zx / _Z0, zx], axis=2)
    py = np.stack([xn * zy / _Z0, (z_clean + yn * zy) / _Z0, zy], axis=2)
    normal = np.cross(px, py)
    patch = np.linalg.norm(normal, axis=2) * pitch**2
    normal /= np.linalg.norm(normal, axis=2, keepdims=True)
    normal *= -np.sign(normal[..., 2:3])  # towards the camera (z < 0 direction)
    ray = np.stack([xn / _Z0, yn / _Z0, np.ones_like(xn)], axis=2)
    along = dz * np.einsum("ijk,ijk->ij", ray, normal)  # > 0 towards the camera
    rows, cols = np.nonzero(mask)
    signed = along[mask]
    peak = float(signed[np.argmax(np.abs(signed))])
    return DefectTruth(int(mask.sum()), float(cols.mean()), float(rows.mean()), float(patch[mask].sum() * 1e6),
                       abs(peak) * 1e3, peak * 1e3)


def render_with_truth(
    rng: np.random.Generator, size: int, category: str, defect: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, DefectTruth]:
    """:func:`render_sample` plus the defect's :class:`DefectTruth` (pixels 0 for "good")."""
    _check_args(size, category, defect)
    pitch = _FOV / size
    coords = (np.arange(size) + 0.5 - size / 2.0) * pitch
    xn, yn = np.meshgrid(coords, coords)  # metric position on the plane, row = y, column = x

    # Every random number is drawn here, in a fixed order, whatever the defect.
    shift = rng.uniform(-0.004, 0.004, 2)
    angle = rng.uniform(0.0, 2 * np.pi) if category == "puck" else rng.uniform(-0.3, 0.3)
    scale = rng.uniform(0.96, 1.04)
    tilt = rng.uniform(-0.03, 0.03, 2)
    offset = rng.uniform(-0.002, 0.002)
    tint = rng.uniform(-0.04, 0.04, 3)
    object_noise = _smooth_noise(rng, size, size / 16)
    belt_noise = _smooth_noise(rng, size, 1.0)
    d_where, d_size, d_depth, d_sign, d_dir, d_bend = rng.uniform(0.0, 1.0, 6)
    d_harm = rng.uniform(-0.15, 0.15, 2)
    d_phase = rng.uniform(0.0, 2 * np.pi, 2)
    stain = rng.uniform(0.05, 0.35, 3)
    z_noise = rng.standard_normal((size, size))
    drop_count = rng.uniform(0.0, 1.0, 2)
    drop_where = rng.uniform(0.0, 1.0, 6)
    drop_radius = rng.uniform(1.0, 2.5, 6) * max(1.0, size / 128)
    drop_sparse = rng.uniform(0.0, 1.0, (size, size))
    rgb_noise = rng.standard_normal((size, size, 3))

    # Clean geometry and texture.
    cos, sin = np.cos(angle), np.sin(angle)
    rx, ry = xn - shift[0], yn - shift[1]
    p, q = cos * rx + sin * ry, -sin * rx + cos * ry  # object frame
    height, albedo, inner, extent = _SHAPES[category](p, q, scale, tint)
    footprint = height > 0
    albedo = albedo * (1.0 + 0.05 * object_noise[..., None])
    belt = (0.28 + 0.035 * belt_noise)[..., None] * np.array([1.0, 1.0, 1.05])
    albedo = np.where(footprint[..., None], albedo, belt)
    plane = _Z0 + offset + tilt[0] * xn + tilt[1] * yn
    z_clean = plane - height
    gy, gx = np.gradient(z_clean, pitch)
    normal = np.stack([gx, gy, -np.ones_like(gx)], axis=2)
    normal /= np.linalg.norm(normal, axis=2, keepdims=True)
    shade = 0.3 + 0.7 * np.clip(normal @ _LIGHT, 0.0, None)

    # The defect: a profile in [0, 1], confined to the mask.
    mask = np.zeros((size, size), dtype=bool)
    dz = np.zeros((size, size))
    if defect != "good":
        if defect == "crack":
            reach = extent * (0.30 + 0.15 * d_size)
        else:
            reach = extent * (0.15 + 0.08 * d_size)
        room = inner - 1.3 * reach - 0.001
        candidates = np.flatnonzero(room > 0) if np.any(room > 0) else np.array([np.argmax(room)])
        centre = candidates[min(int(d_where * candidates.size), candidates.size - 1)]
        cx, cy = xn.flat[centre], yn.flat[centre]
        if defect == "crack":
            profile = _groove(xn, yn, cx, cy, reach, 2 * np.pi * d_dir, d_bend - 0.5, max(0.0009, pitch))
        else:
            phi = np.arctan2(yn - cy, xn - cx)
            wobble = 1.0 + d_harm[0] * np.sin(2 * phi + d_phase[0]) + d_harm[1] * np.sin(3 * phi + d_phase[1])
            dist = np.hypot(xn - cx, yn - cy) / (reach * wobble)
            profile = _smoothstep((1.0 - dist) / 0.45)
        mask = (profile > 0.02) & footprint
        profile = profile * mask
        if defect in ("color", "crack"):
            alpha = (0.85 * profile)[..., None]
            colour = stain if defect == "color" else np.array([0.10, 0.07, 0.05])
            albedo = albedo * (1.0 - alpha) + colour * alpha
        if defect == "dent":  # dz > 0 is away from the camera: a depression; dz < 0 a bump
            dz = (0.002 + 0.002 * d_depth) * (1.0 if d_sign < 0.5 else -1.0) * profile
        elif defect == "crack":
            dz = (0.0015 + 0.0015 * d_depth) * profile

    # Point cloud: defect geometry, sensor noise, dropouts.
    z = z_clean + dz + _Z_NOISE * z_noise
    xyz = np.stack([xn * z / _Z0, yn * z / _Z0, z], axis=2)
    xyz[_dropouts(footprint, drop_count, drop_where, drop_radius, drop_sparse)] = 0.0

    rgb = np.clip(albedo * shade[..., None] * 255.0 + 2.0 * rgb_noise, 0.0, 255.0)
    truth = _truth(mask, xn, yn, z_clean, dz, pitch)
    return np.round(rgb).astype(np.uint8), xyz.astype(np.float32), mask, truth


def _groove(
    xn: np.ndarray, yn: np.ndarray, cx: float, cy: float, half: float, angle: float, bend: float, width: float
) -> np.ndarray:
    """Profile of a narrow curved groove (quadratic Bezier through the centre) of half-width ``width``."""
    axis, side = np.array([np.cos(angle), np.sin(angle)]), np.array([-np.sin(angle), np.cos(angle)])
    centre = np.array([cx, cy])
    start, end, ctrl = centre - half * axis, centre + half * axis, centre + 2 * bend * half * side
    t = np.linspace(0.0, 1.0, 48)[:, None]
    curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * ctrl + t**2 * end
    near = np.hypot(np.abs(xn - cx), np.abs(yn - cy)) < 2.5 * half + width  # skip far pixels
    dist = np.full(xn.shape, np.inf)
    px, py = xn[near][:, None], yn[near][:, None]
    dist[near] = np.min(np.hypot(px - curve[:, 0], py - curve[:, 1]), axis=1)
    return _smoothstep(1.0 - dist / width)


def _dropouts(
    footprint: np.ndarray, count: np.ndarray, where: np.ndarray, radius: np.ndarray, sparse: np.ndarray
) -> np.ndarray:
    """Missing points: sparse ones along the silhouette plus a few small clusters (mostly there too)."""
    size = footprint.shape[0]
    edge = footprint ^ ndimage.binary_erosion(footprint)
    edge |= ndimage.binary_dilation(footprint) & ~footprint
    edge_idx = np.flatnonzero(edge)
    drop = edge & (sparse < 0.2)
    n_edge, n_free = 2 + int(count[0] * 3), int(count[1] * 3)
    rows, cols = np.indices(footprint.shape)
    for k in range(n_edge + n_free):
        if k < n_edge and edge_idx.size:
            centre = edge_idx[min(int(where[k] * edge_idx.size), edge_idx.size - 1)]
        else:
            centre = min(int(where[k] * size * size), size * size - 1)
        r0, c0 = divmod(int(centre), size)
        drop |= (rows - r0) ** 2 + (cols - c0) ** 2 <= radius[k] ** 2
    for r_sl in (slice(0, 4), slice(size - 4, size)):  # keep the corner patches intact
        for c_sl in (slice(0, 4), slice(size - 4, size)):
            drop[r_sl, c_sl] = False
    return drop


def _sample_rng(seed: int, category: str, split: str, defect: str, index: int) -> np.random.Generator:
    """Generator for one sample, independent of how many other samples are generated."""
    key = [seed] + [zlib.crc32(s.encode()) for s in (category, split, defect)] + [index]
    return np.random.default_rng(np.random.SeedSequence(key))


def _write_sample(folder: Path, name: str, rgb: np.ndarray, xyz: np.ndarray, mask: np.ndarray | None) -> None:
    for sub in ("rgb", "xyz") + (("gt",) if mask is not None else ()):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(folder / "rgb" / f"{name}.png", format="PNG")
    tifffile.imwrite(folder / "xyz" / f"{name}.tiff", xyz, photometric="rgb", metadata=None)
    if mask is not None:
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "gt" / f"{name}.png", format="PNG")


def generate(
    out: Path,
    categories: list[str] | None = None,
    *,
    size: int = 128,
    n_train: int = 40,
    n_validation: int = 10,
    n_test_good: int = 10,
    n_test_per_defect: int = 8,
    seed: int = 0,
) -> dict[str, dict[str, dict[str, int]]]:
    """Write ``<out>/<category>/{train,validation,test}/<defect>/{rgb,xyz,gt}`` like MVTec 3D-AD.

    train and validation hold only ``good`` (rgb + xyz); test holds ``good`` and every defect type,
    each with an 8-bit 0/255 ``gt`` mask (all zero for good, as in MVTec 3D-AD). Files are named
    000, 001, ... ``<category>/defects.json`` gives each test defect's :class:`DefectTruth`
    (``{"test/dent/000": {"pixels", "area_mm2", "depth_mm", ...}}``). The output is byte-identical for the same arguments; each sample's random numbers
    come from (seed, category, split, defect, index) only. A category is written into a hidden
    folder and moved into place when complete (replacing an older one). Returns the counts as
    ``{category: {split: {defect: n}}}``.
    """
    cats = list(SYNTH_CATEGORIES if categories is None else categories)
    for cat in cats:
        _check_args(size, cat, "good")
    counts_in = {"n_train": n_train, "n_validation": n_validation, "n_test_good": n_test_good,
                 "n_test_per_defect": n_test_per_defect, "seed": seed}
    for key, value in counts_in.items():
        if not isinstance(value, int) or value < 0:
            raise ConfigError(f"synthetic {key} must be a non-negative integer, got {value!r}")
    if n_train < 1:
        raise ConfigError("synthetic n_train must be at least 1")
    plan = [("train", "good", n_train), ("validation", "good", n_validation), ("test", "good", n_test_good)]
    plan += [("test", d, n_test_per_defect) for d in DEFECT_TYPES]
    result: dict[str, dict[str, dict[str, int]]] = {}
    for cat in cats:
        counts: dict[str, dict[str, int]] = {}
        truths: dict[str, dict[str, float]] = {}
        with staged_dir(Path(out) / cat) as tmp:
            for split, defect, n in plan:
                for i in range(n):
                    rgb, xyz, mask, truth = render_with_truth(_sample_rng(seed, cat, split, defect, i), size, cat,
                                                              defect)
                    gt = mask if split == "test" else None
                    _write_sample(tmp / split / defect, f"{i:03d}", rgb, xyz, gt)
                    if defect != "good":
                        truths[f"{split}/{defect}/{i:03d}"] = asdict(truth)
                if n:
                    counts.setdefault(split, {})[defect] = n
            atomic_write_text(tmp / DEFECTS_FILE, json.dumps(truths, indent=1) + "\n")
        result[cat] = counts
    return result


@dataclass(frozen=True)
class Drift:
    """What changes in every scan of a drifting line: the RGB image times ``brightness``; every valid
    point's z plus ``z_offset_m``; a random ``dropped`` share of the 3D points lost (set to 0); a
    ``defect_rate`` share of the scans with a defect (its type drawn uniformly)."""

    brightness: float = 1.0
    z_offset_m: float = 0.0
    dropped: float = 0.0
    defect_rate: float = 0.0

    def apply(self, rgb: np.ndarray, xyz: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The drifted copy of one rendered scan (``rng`` draws the lost points)."""
        rgb = np.clip(np.round(rgb * self.brightness), 0, 255).astype(np.uint8) if self.brightness != 1.0 else rgb
        xyz = xyz.copy()
        valid = xyz[..., 2] != 0
        xyz[..., 2][valid] += np.float32(self.z_offset_m)
        if self.dropped:
            xyz[rng.random(valid.shape) < self.dropped] = 0.0
        return rgb, xyz


def write_line(folder: Path, count: int, *, start: int = 0, size: int = 64, category: str = "puck",
               drift: Drift | None = None, seed: int = 0) -> list[str]:
    """Write scans ``start .. start + count - 1`` of a simulated line into ``folder/{rgb,xyz}``
    (names ``00000``, ...; the layout `trd predict --input` reads); returns the defect of each scan
    ("good" or its type). Scan i is the same whatever else is written; a drift changes it as
    `Drift` says."""
    drift = drift or Drift()
    kinds: list[str] = []
    for i in range(start, start + count):
        pick = np.random.default_rng([seed, i, 1])
        defect = DEFECT_TYPES[int(pick.integers(len(DEFECT_TYPES)))] if pick.random() < drift.defect_rate else "good"
        rgb, xyz, _ = render_sample(np.random.default_rng([seed, i]), size, category, defect)
        rgb, xyz = drift.apply(rgb, xyz, pick)
        _write_sample(Path(folder), f"{i:05d}", rgb, xyz, None)
        kinds.append(defect)
    return kinds
