"""From a `Sample`'s files to the model's inputs, with every check that keeps a score honest (numpy only).

A point cloud is read in the unit the settings state (``data.xyz_unit``, converted to metres so that
``data.plane_threshold`` means the same everywhere) and refused when it cannot be what it claims
(DEPARTURE (docs/METHOD_NOTES.md §14): the reference reads every cloud as metres, silently):

- z < 0: trd expects z = distance in front of the camera; cameras whose z axis points away from the
  scene need ``data.flip_z``;
- a median distance outside 1 mm .. 20 m: the unit is wrong (a millimetre scan read as metres puts
  the object hundreds of metres away);
- a scale, a share of missing points or a 3D foreground outside what the training scans showed
  (`trd.data.plausibility`, recorded in the model): a unit slip is refused, a degenerate scan
  refused or warned about (``data.degenerate_scans``).

Messages name the setting that states the unit of *that* file: ``data.xyz_unit`` for XYZ TIFF, PCD
and PLY files, ``depth_scale`` in the camera file for depth PNGs. A depth PNG without its own
camera.json is read with the camera stored in the model at fit, when there is one (warned).
A scan whose aspect ratio differs from the training images' is stretched to the square model input
like every other; that is warned about once per dataset. Used by the torch Dataset
(`trd.data.dataset.PairDataset`) and by anything that scores without torch.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..config import XYZ_UNITS, DataConfig
from ..errors import DataError
from .cache import PreprocessCache
from .geometry import PlaneFallback, preprocess_3d
from .io import check_pair, read_mask, read_rgb
from .plausibility import (HEALTH_KEYS, SCALE_TOLERANCE, InputStats, Moments, ScanHealth, Spread, brightness,
                           camera_stored, foreground_problem, foreground_share, median_z, missing_problem,
                           missing_share, scale_problem)
from .readers import Reader, ReadOptions, reader
from .readers.depth_png import Camera, depth_step_words, load_camera
from .samples import Sample
from .transforms import resize_mask, resize_rgb, rgb_to_chw01

#: Plausible median distance of a scanned surface from the camera, in metres.
PLAUSIBLE_Z_M = (1e-3, 20.0)
#: Training clouds preprocessed at fit to measure the 3D foreground share (spread evenly).
_FOREGROUND_SAMPLES = 16
#: Training RGB images decoded at fit to measure their brightness for the drift monitor (spread evenly).
_BRIGHTNESS_SAMPLES = 64


__all__ = ["HEALTH_KEYS", "AspectOnce", "AspectWarning", "DegenerateScanWarning", "InputStats", "Moments",
           "PlaneFallbackWarning", "ScanHealth", "StoredCameraWarning", "camera_stored", "load_pair",
           "measure_input_stats", "preprocess_params", "read_cloud", "scan_health"]


class AspectWarning(UserWarning):
    """Scans whose aspect ratio differs from the training images' (they are stretched)."""


class PlaneFallbackWarning(UserWarning):
    """A scan whose background plane needed the fallback (empty corner patch)."""


class StoredCameraWarning(UserWarning):
    """A depth PNG read with the camera stored in the model (no camera.json came with the scan)."""


class DegenerateScanWarning(UserWarning):
    """A scan unlike every training scan (missing points, blank 3D input), scored because
    ``data.degenerate_scans = "warn"``."""


def _camera(sample: Sample, reference: InputStats | None) -> tuple[Camera, str]:
    """The camera of a depth image and where it came from: the scan's own camera.json always wins;
    without one, the camera stored in the model (warned), else the missing file's error."""
    path = sample.camera or sample.xyz.parents[3] / "camera.json"
    stored = None if reference is None else reference.camera
    if stored is None or path.is_file():
        return load_camera(path), str(path)
    warnings.warn(StoredCameraWarning(
        f"{sample.xyz}: no camera.json with this scan ({path} not found): back-projected with the camera the model "
        f"was trained with (fx {stored.fx:g}, fy {stored.fy:g}, cx {stored.cx:g}, cy {stored.cy:g}, 1 count = "
        f"{stored.step}); put the scanner's camera.json beside the scans if it differs"), stacklevel=4)
    return stored, "the camera stored in the model"


def _options(sample: Sample, cfg: DataConfig, reference: InputStats | None,
             rgb_hw: tuple[int, int] | None) -> tuple[ReadOptions, str]:
    """What the reader of ``sample`` needs besides the file, and where its camera came from ("" without one)."""
    if not reader(sample.xyz_kind).camera:
        return ReadOptions(cfg.max_image_pixels, None, rgb_hw), ""
    camera, origin = _camera(sample, reference)
    return ReadOptions(cfg.max_image_pixels, camera, rgb_hw), origin


def _unit_advice(kind: Reader, options: ReadOptions, origin: str, z_m: float, target_m: float, cfg: DataConfig) -> str:
    """What to change so that a scan read at ``z_m`` lands near ``target_m``, naming the setting that
    states the unit of this kind of file (no command-line flag: not every command has one)."""
    factor = target_m / z_m
    if kind.unit == "camera" and options.camera is not None:
        scale = options.camera.depth_scale
        fits = 10.0 ** round(math.log10(scale * factor))
        if abs(math.log(scale * factor / fits)) < math.log(3.0) and not math.isclose(fits, scale):
            return (f"1 count looks like {depth_step_words(fits)}, not {depth_step_words(scale)}: fix depth_scale "
                    f"(or depth_unit) in {origin}")
        return f"check depth_scale in {origin} (1 count = {depth_step_words(scale)})"
    if kind.unit != "xyz_unit":
        return "check the file"
    raw = z_m / cfg.metres_per_unit
    best = min(XYZ_UNITS, key=lambda u: abs(math.log(raw * XYZ_UNITS[u] / target_m)))
    if best != cfg.xyz_unit and abs(math.log(raw * XYZ_UNITS[best] / target_m)) < math.log(3.0):
        return f"the file looks like it is in {best}: read it with data.xyz_unit={best}"
    return f"check the file's unit (data.xyz_unit={cfg.xyz_unit}) and scale"


def _degenerate(path: Path, problem: str, cfg: DataConfig) -> None:
    """Refuse a degenerate scan, or warn about it where ``data.degenerate_scans`` says so."""
    if cfg.degenerate_scans == "warn":
        warnings.warn(DegenerateScanWarning(f"{path}: {problem}; scored anyway (data.degenerate_scans=warn)"),
                      stacklevel=4)
        return
    raise DataError(path, f"{problem}; a model fitted with data.degenerate_scans=warn scores such scans with a warning")


def read_cloud(sample: Sample, cfg: DataConfig, reference: InputStats | None = None,
               rgb_hw: tuple[int, int] | None = None) -> np.ndarray:
    """The organised cloud of a sample in metres (float32 HxWx3), checked as the module describes.

    ``rgb_hw``: the paired RGB image's (H, W), the grid of a cloud file without one (PLY).
    """
    return read_cloud_median(sample, cfg, reference, rgb_hw)[0]


def read_cloud_median(sample: Sample, cfg: DataConfig, reference: InputStats | None = None,
                      rgb_hw: tuple[int, int] | None = None) -> tuple[np.ndarray, float]:
    """`read_cloud`, and the median z (m) of its valid points that the checks computed (a sort of
    every point: what the fit statistics and a scan's health need, computed once)."""
    kind = reader(sample.xyz_kind)
    if not kind.cloud:
        raise DataError(sample.xyz, f"not a point cloud (xyz_kind={sample.xyz_kind!r})")
    options, origin = _options(sample, cfg, reference, rgb_hw)
    xyz = kind.read(sample.xyz, options)
    if kind.unit == "xyz_unit" and cfg.metres_per_unit != 1.0:
        xyz *= np.float32(cfg.metres_per_unit)
    if cfg.flip_z:
        xyz[..., 2] *= -1.0
    z = xyz[..., 2]
    negative = int(np.count_nonzero(z < 0))
    if negative:
        fix = "data.flip_z is set: is it needed?" if cfg.flip_z else \
            "if the camera's z axis points away from the scene, set data.flip_z=true"
        raise DataError(sample.xyz, f"{negative} of {np.count_nonzero(z)} points have z < 0, but z must be the "
                                    f"distance in front of the camera (> 0; 0 = missing); {fix}")
    z_m = median_z(xyz)
    read_as = f"with 1 count = {depth_step_words(options.camera.depth_scale)}" if options.camera is not None else \
        f"read as data.xyz_unit={cfg.xyz_unit}"
    low, high = PLAUSIBLE_Z_M
    if not low <= z_m <= high:
        hint = _unit_advice(kind, options, origin, z_m, 0.5, cfg)
        raise DataError(sample.xyz, f"the scanned surface would be {z_m:.4g} m from the camera (median z, {read_as}), "
                                    f"outside the plausible {low:g}..{high:g} m; {hint}")
    if reference is not None:
        problem, target = scale_problem(z_m, reference)
        if problem:
            hint = _unit_advice(kind, options, origin, z_m, target, cfg)
            raise DataError(sample.xyz, f"{problem}, {read_as}; {hint}")
        problem = missing_problem(missing_share(xyz), reference)
        if problem:
            _degenerate(sample.xyz, problem, cfg)
    return xyz, z_m


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
    if reference is not None and reference.limits():  # an entry checked against other limits is checked again
        params |= {"limits": reference.limits(), "degenerate_scans": cfg.degenerate_scans}
    return params


def _preprocessed(sample: Sample, xyz: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """The 3D input image of a cloud, with geometry's warnings naming the file (geometry does not know it)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PlaneFallback)
        try:
            image = preprocess_3d(xyz, modality=params["modality"], size=params["size"], sobel_k=params["sobel_k"],
                                  plane=params["plane"], plane_threshold=params["plane_threshold"])
        except ValueError as exc:
            raise DataError(sample.xyz, str(exc)) from None
    for record in caught:
        category = PlaneFallbackWarning if issubclass(record.category, PlaneFallback) else record.category
        warnings.warn(category(f"{sample.xyz}: {record.message}"), stacklevel=3)
    return image


def load_3d(sample: Sample, cfg: DataConfig, rgb_hw: tuple[int, int], cache: PreprocessCache | None,
            reference: InputStats | None = None, xyz: np.ndarray | None = None) -> np.ndarray:
    """The 3D input image of a sample: float32 3xSxS in [0,1], before ImageNet normalisation
    (``xyz``: its cloud when already read with `read_cloud`)."""
    kind = reader(sample.xyz_kind)
    if not kind.cloud:
        # Eyecandies: the dataset's own normal map goes through the RGB transform (docs/METHOD.md §2.8).
        normals = kind.read(sample.xyz, _options(sample, cfg, reference, rgb_hw)[0])
        check_pair(sample.rgb, rgb_hw, sample.xyz, normals.shape[:2])
        return rgb_to_chw01(resize_rgb(normals, cfg.image_size))
    params = preprocess_params(cfg, sample.category, reference)

    def compute() -> np.ndarray:
        cloud = read_cloud(sample, cfg, reference, rgb_hw) if xyz is None else xyz
        check_pair(sample.rgb, rgb_hw, sample.xyz, cloud.shape[:2])
        return _preprocessed(sample, cloud, params)

    # The RGB size is part of the key so that the pair check reruns whenever the RGB changes size.
    image = compute() if cache is None else cache.get(sample.xyz, {**params, "rgb_hw": list(rgb_hw)}, compute)
    if reference is not None:  # checked on every read, cached or not: it costs one pass over the image
        problem = foreground_problem(foreground_share(image), reference)
        if problem:
            _degenerate(sample.xyz, problem, cfg)
    return image


@dataclass(frozen=True)
class Scan:
    """A sample as read: ``rgb`` (uint8 HxWx3, the file's resolution), the model's 3D input ``x3d``
    (float32 3xSxS in [0,1]), the resized ground truth ``mask`` (bool SxS) and, when asked for and
    the 3D file is a cloud, the ``cloud`` (float32 HxWx3, metres, z = 0 missing) and the median z of
    its valid points (m)."""

    rgb: np.ndarray
    x3d: np.ndarray
    mask: np.ndarray
    cloud: np.ndarray | None = None
    z_median_m: float | None = None


def load_scan(sample: Sample, cfg: DataConfig, cache: PreprocessCache | None = None,
              reference: InputStats | None = None, with_cloud: bool = False) -> Scan:
    """Read and check a sample (RGB first, then its 3D file); ``with_cloud`` keeps the cloud (read
    once) for measurements at the original resolution (`trd.scoring.regions`)."""
    size = cfg.image_size
    rgb_full = read_rgb(sample.rgb, cfg.max_image_pixels)
    hw = rgb_full.shape[:2]
    cloud, z_median = read_cloud_median(sample, cfg, reference, hw) if with_cloud and reader(sample.xyz_kind).cloud \
        else (None, None)
    x3d = load_3d(sample, cfg, hw, cache, reference, cloud)
    if sample.mask is not None:
        mask = resize_mask(read_mask(sample.mask, shape=hw, max_pixels=cfg.max_image_pixels), size)
    elif sample.label:
        raise DataError(sample.rgb, f"defect sample ({sample.defect}) has no ground-truth mask")
    else:
        mask = np.zeros((size, size), dtype=bool)
    return Scan(rgb_full, x3d, mask, cloud, z_median)


def load_pair(sample: Sample, cfg: DataConfig, cache: PreprocessCache | None = None,
              reference: InputStats | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """(RGB uint8 SxSx3, 3D image float32 3xSxS in [0,1], mask bool SxS, the RGB file's (H, W))."""
    scan = load_scan(sample, cfg, cache, reference)
    return resize_rgb(scan.rgb, cfg.image_size), scan.x3d, scan.mask, scan.rgb.shape[:2]


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
    """What the training inputs look like (`InputStats`): the most common RGB size (from the headers),
    and from every cloud its median z and share of missing points, from up to 16 of them spread over
    the samples the share of object in the 3D input, the camera of depth images, and for the drift
    monitor the moments of the scans' `ScanHealth` (brightness from up to 64 RGB images as the model
    sees them; missing points and median distance from every cloud).

    DataError for a cloud whose scale differs from the others' by more than SCALE_TOLERANCE (mixed
    units in one training set), before any training.
    """
    sizes: dict[Path, tuple[int, int]] = {}
    for sample in samples:
        try:
            with Image.open(sample.rgb) as im:
                sizes[sample.rgb] = (im.height, im.width)
        except Exception:  # noqa: BLE001 - the full read reports this file properly later
            continue
    common = Counter(sizes.values()).most_common(1)
    hw = common[0][0] if common else (cfg.image_size, cfg.image_size)
    shown = list({s.rgb: s for s in samples}.values())
    shown = [shown[int(i)] for i in sorted(set(np.linspace(0, len(shown) - 1, min(_BRIGHTNESS_SAMPLES, len(shown)))
                                                .astype(int).tolist()))] if shown else []
    health = {"brightness": Moments.of([brightness(resize_rgb(read_rgb(s.rgb, cfg.max_image_pixels), cfg.image_size))
                                         for s in shown])} if shown else {}
    clouds = list({s.xyz: s for s in samples if reader(s.xyz_kind).cloud}.values())
    if not clouds:
        return InputStats(None, hw, health=health)
    picks = {int(i) for i in np.linspace(0, len(clouds) - 1, min(_FOREGROUND_SAMPLES, len(clouds)))}
    medians, missing, foreground = {}, [], []
    with warnings.catch_warnings():  # the reader's and geometry's warnings come again when training reads them
        warnings.simplefilter("ignore")
        for i, sample in enumerate(clouds):
            xyz, medians[sample.xyz] = read_cloud_median(sample, cfg, rgb_hw=sizes.get(sample.rgb))
            missing.append(missing_share(xyz))
            if i in picks:
                image = _preprocessed(sample, xyz, preprocess_params(cfg, sample.category))
                foreground.append(foreground_share(image))
    centre = float(np.median(list(medians.values())))
    for path, z in medians.items():
        if not 1.0 / SCALE_TOLERANCE <= z / centre <= SCALE_TOLERANCE:
            raise DataError(path, f"median z is {z:.4g} m but the other training scans are around {centre:.4g} m: "
                                  "one training set must use one unit (data.xyz_unit, or depth_scale in camera.json)")
    camera = None
    if reader(clouds[0].xyz_kind).camera:
        camera = _camera(clouds[0], None)[0]
    health |= {"missing_3d": Moments.of(missing), "z_median_m": Moments.of(list(medians.values()))}
    return InputStats(centre, hw, Spread.of(list(medians.values())), Spread.of(missing), Spread.of(foreground),
                      len(clouds), camera, health)


def scan_health(rgb: np.ndarray, scan: Scan) -> ScanHealth:
    """The `ScanHealth` of a scan read for scoring: ``rgb`` as the model sees it (uint8 SxSx3), and
    the scan's cloud (None for normal-map inputs) with the median z its checks computed."""
    if scan.cloud is None:
        return ScanHealth(brightness(rgb))
    return ScanHealth(brightness(rgb), missing_share(scan.cloud), scan.z_median_m)
