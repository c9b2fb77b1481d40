"""From a `Sample`'s files to the model's inputs, with every check that keeps a score honest (numpy only).

A point cloud is read in the unit the settings state (``data.xyz_unit``, converted to metres so that
``data.plane_threshold`` means the same everywhere) and refused when it cannot be what it claims
(DEPARTURE (docs/METHOD_NOTES.md §14): the reference reads every cloud as metres, silently):

- z < 0: trd expects z = distance in front of the camera; cameras whose z axis points away from the
  scene need ``data.flip_z``;
- a median distance outside 1 mm .. 20 m: the unit is wrong (a millimetre scan read as metres puts
  the object hundreds of metres away);
- a scale 10x away from the training scans' (`InputStats`, recorded in the model): the same scans
  in millimetres would otherwise be scored as defective.

A scan whose aspect ratio differs from the training images' is stretched to the square model input
like every other; that is warned about once per dataset. Used by the torch Dataset
(`trd.data.dataset.PairDataset`) and by anything that scores without torch.

Input health: reading a pair also measures what the drift monitor (`trd.runtime.monitor`) compares
with the training scans, at no extra decode (`ScanHealth`: RGB brightness, the share of missing 3D
points, the median distance); the model stores the training scans' spread of the same values
(`InputStats.spread`).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from ..config import XYZ_UNITS, DataConfig
from ..errors import DataError
from .cache import PreprocessCache
from .geometry import PlaneFallback, preprocess_3d
from .io import check_pair, read_mask, read_rgb
from .readers import ReadOptions, reader
from .readers.depth_png import load_camera
from .samples import Sample
from .transforms import resize_mask, resize_rgb, rgb_to_chw01

#: Plausible median distance of a scanned surface from the camera, in metres.
PLAUSIBLE_Z_M = (1e-3, 20.0)
#: A scan whose median distance differs from the training scans' by more than this factor is refused.
SCALE_TOLERANCE = 10.0
#: Training pairs read to measure the training scale and input health (spread evenly over the split).
_MEASURED_SAMPLES = 64
#: The per-scan values of `ScanHealth` that the drift monitor compares with the training scans.
HEALTH_KEYS = ("brightness", "missing_3d", "z_median_m")


class AspectWarning(UserWarning):
    """Scans whose aspect ratio differs from the training images' (they are stretched)."""


class PlaneFallbackWarning(UserWarning):
    """A scan whose background plane needed the fallback (empty corner patch)."""


@dataclass(frozen=True)
class Spread:
    """Mean, standard deviation (ddof 1) and count of one per-scan value over the training scans."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        v = np.asarray(values, dtype=np.float64)
        return cls(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size))

    def to_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "std": self.std, "n": self.n}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Spread:
        return cls(float(raw["mean"]), float(raw["std"]), int(raw["n"]))


@dataclass(frozen=True)
class ScanHealth:
    """What one scan looked like, for the drift monitor. ``brightness``: mean grey level (0-255) of
    the RGB image as the model sees it; ``missing_3d``: share of the cloud's points that are missing
    (z = 0); ``z_median_m``: median distance of its valid points, in metres. The 3D values are None
    for inputs without clouds (normal maps) and where the 3D input came from the preprocessing cache."""

    brightness: float
    missing_3d: float | None = None
    z_median_m: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return {key: getattr(self, key) for key in HEALTH_KEYS}


@dataclass(frozen=True)
class InputStats:
    """What the training inputs looked like, kept in the model so that later inputs can be checked.

    ``z_median_m``: median z of the valid points of the training clouds, in metres (None for inputs
    without clouds, e.g. Eyecandies normal maps); ``image_hw``: the most common training image size;
    ``spread``: the training scans' `Spread` of each `ScanHealth` value (keys of `HEALTH_KEYS`;
    empty for models saved before it was recorded).
    """

    z_median_m: float | None
    image_hw: tuple[int, int]
    spread: dict[str, Spread] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"z_median_m": self.z_median_m, "image_hw": list(self.image_hw),
                "spread": {key: value.to_dict() for key, value in self.spread.items()}}

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> InputStats | None:
        """None for models saved before the statistics were recorded."""
        if not raw:
            return None
        z = raw.get("z_median_m")
        spread = {key: Spread.from_dict(value) for key, value in (raw.get("spread") or {}).items() if key in HEALTH_KEYS}
        return cls(None if z is None else float(z), (int(raw["image_hw"][0]), int(raw["image_hw"][1])), spread)


def brightness(rgb: np.ndarray) -> float:
    """Mean grey level (0-255) of a uint8 RGB image (the `ScanHealth` and training value)."""
    return float(rgb.mean())


class Cloud(NamedTuple):
    """A checked organised cloud in metres with what was measured on it while checking."""

    xyz: np.ndarray
    z_median_m: float
    missing_3d: float


def _options(sample: Sample, cfg: DataConfig) -> ReadOptions:
    """What the reader of ``sample`` needs besides the file (its camera, for depth images)."""
    camera = None
    if reader(sample.xyz_kind).camera:
        camera = load_camera(sample.camera or sample.xyz.parents[3] / "camera.json")
    return ReadOptions(cfg.max_image_pixels, camera)


def _unit_hint(z_m: float, target_m: float, cfg: DataConfig) -> str:
    """Which ``data.xyz_unit`` would bring ``z_m`` (read with cfg's unit) near ``target_m``."""
    raw = z_m / cfg.metres_per_unit
    best = min(XYZ_UNITS, key=lambda u: abs(math.log(raw * XYZ_UNITS[u] / target_m)))
    if best != cfg.xyz_unit and abs(math.log(raw * XYZ_UNITS[best] / target_m)) < math.log(3.0):
        return f"the file looks like it is in {best}: set data.xyz_unit={best} (trd predict/test: --xyz-unit {best})"
    return "check the file's unit (data.xyz_unit) and scale"


def read_cloud(sample: Sample, cfg: DataConfig, reference: InputStats | None = None) -> Cloud:
    """The organised cloud of a sample in metres (float32 HxWx3), checked as the module describes,
    with its median distance and share of missing points (measured for the checks anyway)."""
    kind = reader(sample.xyz_kind)
    if not kind.cloud:
        raise DataError(sample.xyz, f"not a point cloud (xyz_kind={sample.xyz_kind!r})")
    xyz = kind.read(sample.xyz, _options(sample, cfg))
    if kind.unit == "xyz_unit" and cfg.metres_per_unit != 1.0:
        xyz *= np.float32(cfg.metres_per_unit)
    if cfg.flip_z:
        xyz[..., 2] *= -1.0
    z = xyz[..., 2]
    negative = int(np.count_nonzero(z < 0))
    if negative:
        fix = ("data.flip_z is set: is it needed?" if cfg.flip_z else
               "if the camera's z axis points away from the scene, set data.flip_z=true (trd predict/test: --flip-z)")
        raise DataError(sample.xyz, f"{negative} of {np.count_nonzero(z)} points have z < 0, but z must be the "
                                    f"distance in front of the camera (> 0; 0 = missing); {fix}")
    valid = z[z != 0]
    z_m = float(np.median(valid))
    low, high = PLAUSIBLE_Z_M
    if not low <= z_m <= high:
        hint = _unit_hint(z_m, 0.5, cfg)
        raise DataError(sample.xyz, f"the scanned surface would be {z_m:.4g} m from the camera (median z, read as "
                                    f"data.xyz_unit={cfg.xyz_unit}), outside the plausible {low:g}..{high:g} m; {hint}")
    if reference is not None and reference.z_median_m:
        ratio = z_m / reference.z_median_m
        if not 1.0 / SCALE_TOLERANCE <= ratio <= SCALE_TOLERANCE:
            hint = _unit_hint(z_m, reference.z_median_m, cfg)
            raise DataError(sample.xyz, f"median z is {z_m:.4g} m (data.xyz_unit={cfg.xyz_unit}) but the training "
                                        f"scans were around {reference.z_median_m:.4g} m ({ratio:.3g}x); {hint}")
    return Cloud(xyz, z_m, 1.0 - valid.size / z.size)


def preprocess_params(cfg: DataConfig, category: str, reference: InputStats | None = None) -> dict[str, Any]:
    """Everything that changes (or checks) the 3D image; it is part of the cache key."""
    params = {
        "modality": cfg.modality_3d,
        "size": cfg.image_size,
        "sobel_k": cfg.sobel_for(category),
        "plane": cfg.plane,
        "plane_threshold": cfg.plane_threshold,
    }
    if cfg.xyz_unit != "m" or cfg.flip_z:  # (keys of earlier cache entries stay valid for the default)
        params |= {"xyz_unit": cfg.xyz_unit, "flip_z": cfg.flip_z}
    if reference is not None and reference.z_median_m:
        params["scale_decade"] = round(math.log10(reference.z_median_m))  # a model of another scale re-checks
    return params


def load_3d(sample: Sample, cfg: DataConfig, rgb_hw: tuple[int, int], cache: PreprocessCache | None,
            reference: InputStats | None = None) -> tuple[np.ndarray, Cloud | None]:
    """The 3D input image of a sample (float32 3xSxS in [0,1], before ImageNet normalisation) and the
    cloud it was made from (None for normal maps, and when the image came from the cache)."""
    kind = reader(sample.xyz_kind)
    if not kind.cloud:
        # Eyecandies: the dataset's own normal map goes through the RGB transform (docs/METHOD.md §2.8).
        normals = kind.read(sample.xyz, _options(sample, cfg))
        check_pair(sample.rgb, rgb_hw, sample.xyz, normals.shape[:2])
        return rgb_to_chw01(resize_rgb(normals, cfg.image_size)), None
    params = preprocess_params(cfg, sample.category, reference)
    read: list[Cloud] = []

    def compute() -> np.ndarray:
        cloud = read_cloud(sample, cfg, reference)
        read.append(cloud)
        check_pair(sample.rgb, rgb_hw, sample.xyz, cloud.xyz.shape[:2])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", PlaneFallback)
            try:
                image = preprocess_3d(cloud.xyz, modality=params["modality"], size=params["size"],
                                      sobel_k=params["sobel_k"], plane=params["plane"],
                                      plane_threshold=params["plane_threshold"])
            except ValueError as exc:
                raise DataError(sample.xyz, str(exc)) from None
        for record in caught:  # name the file (geometry does not know it)
            category = PlaneFallbackWarning if issubclass(record.category, PlaneFallback) else record.category
            warnings.warn(category(f"{sample.xyz}: {record.message}"), stacklevel=2)
        return image

    if cache is None:
        image = compute()
    else:  # the RGB size is part of the key so that the pair check reruns whenever the RGB changes size
        image = cache.get(sample.xyz, {**params, "rgb_hw": list(rgb_hw)}, compute)
    return image, (read[0] if read else None)


class Pair(NamedTuple):
    """A sample as the model's inputs: RGB uint8 SxSx3, 3D image float32 3xSxS in [0,1], mask bool
    SxS, the RGB file's (H, W), and the scan's `ScanHealth` measured while reading it."""

    rgb: np.ndarray
    x3d: np.ndarray
    mask: np.ndarray
    hw: tuple[int, int]
    health: ScanHealth


def load_pair(sample: Sample, cfg: DataConfig, cache: PreprocessCache | None = None,
              reference: InputStats | None = None) -> Pair:
    """Read, check and preprocess the files of ``sample`` (`Pair`)."""
    size = cfg.image_size
    rgb_full = read_rgb(sample.rgb, cfg.max_image_pixels)
    hw = rgb_full.shape[:2]
    x3d, cloud = load_3d(sample, cfg, hw, cache, reference)
    if sample.mask is not None:
        mask = resize_mask(read_mask(sample.mask, shape=hw, max_pixels=cfg.max_image_pixels), size)
    elif sample.label:
        raise DataError(sample.rgb, f"defect sample ({sample.defect}) has no ground-truth mask")
    else:
        mask = np.zeros((size, size), dtype=bool)
    rgb = resize_rgb(rgb_full, size)
    health = ScanHealth(brightness(rgb), *((cloud.missing_3d, cloud.z_median_m) if cloud else ()))
    return Pair(rgb, x3d, mask, hw, health)


class AspectOnce:
    """Warns (`AspectWarning`) the first time an image's aspect ratio differs from the training images'."""

    def __init__(self, reference: InputStats | None) -> None:
        self.reference = reference
        self.warned = False

    def check(self, hw: tuple[int, int], path: Path) -> None:
        if self.warned:
            return
        text = aspect_mismatch(hw, self.reference)
        if text:
            self.warned = True
            warnings.warn(AspectWarning(f"{path}: {text}"), stacklevel=3)


def aspect_mismatch(hw: tuple[int, int], reference: InputStats | None) -> str:
    """A warning text when an image of size ``hw`` has another aspect ratio than training ("" if not)."""
    if reference is None:
        return ""
    (h, w), (rh, rw) = hw, reference.image_hw
    if abs(math.log((w / h) / (rw / rh))) <= math.log(1.02):
        return ""
    return (f"scans of {w}x{h} px (aspect {w / h:.2f}) differ from the training images ({rw}x{rh}, aspect "
            f"{rw / rh:.2f}): they are stretched to the model's square input, which changes their scores")


def measure_input_stats(samples: list[Sample], cfg: DataConfig) -> InputStats:
    """The training inputs' scale, image size and input-health spread: image sizes from the headers
    of every RGB image; scale and spread from up to 64 pairs spread evenly over the split (their RGB
    images decoded for the brightness, their clouds read for the missing share and median distance).
    DataError for a training cloud whose scale differs from the others' by more than
    SCALE_TOLERANCE (mixed units in one training set)."""
    sizes: Counter[tuple[int, int]] = Counter()
    for sample in samples:
        try:
            with Image.open(sample.rgb) as im:
                sizes[(im.height, im.width)] += 1
        except Exception:  # noqa: BLE001 - the full read reports this file properly later
            continue
    hw = sizes.most_common(1)[0][0] if sizes else (cfg.image_size, cfg.image_size)
    if not samples:
        return InputStats(None, hw)
    picks = [samples[i] for i in np.linspace(0, len(samples) - 1, min(_MEASURED_SAMPLES, len(samples))).astype(int)]
    picks = list(dict.fromkeys(picks))
    values: dict[str, list[float]] = {key: [] for key in HEALTH_KEYS}
    for sample in picks:
        values["brightness"].append(brightness(resize_rgb(read_rgb(sample.rgb, cfg.max_image_pixels), cfg.image_size)))
        if reader(sample.xyz_kind).cloud:
            cloud = read_cloud(sample, cfg)
            values["missing_3d"].append(cloud.missing_3d)
            values["z_median_m"].append(cloud.z_median_m)
    spread = {key: Spread.of(v) for key, v in values.items() if v}
    medians = dict(zip((s.xyz for s in picks if reader(s.xyz_kind).cloud), values["z_median_m"], strict=True))
    if not medians:
        return InputStats(None, hw, spread)
    centre = float(np.median(list(medians.values())))
    for path, z in medians.items():
        if not 1.0 / SCALE_TOLERANCE <= z / centre <= SCALE_TOLERANCE:
            raise DataError(path, f"median z is {z:.4g} m but the other training scans are around {centre:.4g} m: "
                                  "one training set must use one unit (data.xyz_unit)")
    return InputStats(centre, hw, spread)
