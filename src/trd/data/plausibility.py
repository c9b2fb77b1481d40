"""Is a scan plausible for a model? Judged against the scans the model was trained on (numpy only).

At fit, `InputStats` records what the training inputs looked like: the most common image size and,
per scan, the 3D scale (median z of the valid points, metres), the share of missing 3D points and
the 3D foreground share (how much of the model's 3D input is object, not background). Their range
over the training scans is kept, and each later scan is judged against it with a margin: a scan may
lie beyond the training range by a factor as large as the range itself (lowest to highest), and at
least by the floor below, so that a few alike training scans do not refuse normal ones.

- Scale: ``SCALE_FLOOR`` = 2. A unit slip is a factor of 10 or more (mm <-> cm, a depth scale one
  decade off), so it is refused whenever the training scans' distances vary less than ~2x, which
  holds on a line (the camera does not move). Models saved before the range was recorded are
  checked as before: within ``SCALE_TOLERANCE`` = 10 of the training median.
- Missing points: ``PRESENT_FLOOR`` = 1.5 on the share of points present. Training at 2 % missing
  accepts scans up to 35 % missing; 60 % or 90 % missing are degenerate scans.
- Foreground: ``FOREGROUND_FLOOR`` = 4, lower side only. A scan whose 3D input holds a quarter of
  the object share of the emptiest training scan shows no product (a blank 3D input): a real
  defect changes far less of the object than that. (A larger share is not judged: with
  ``data.plane = "none"`` it only means fewer missing points.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .readers.depth_png import Camera

#: Models without the recorded range: a scan whose median z is this factor from the training
#: median is refused (and one training set may not mix scales beyond it).
SCALE_TOLERANCE = 10.0
SCALE_FLOOR = 2.0
PRESENT_FLOOR = 1.5
FOREGROUND_FLOOR = 4.0


@dataclass(frozen=True)
class Spread:
    """The lowest and highest value of one per-scan quantity over the measured training scans."""

    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(float(min(values)), float(max(values)))

    def factor(self, floor: float) -> float:
        """How far beyond the range a later scan may lie: the range's own width, at least ``floor``."""
        return max(floor, self.high / self.low) if self.low > 0 else math.inf

    def to_list(self) -> list[float]:
        return [self.low, self.high]


#: The per-scan values of `ScanHealth` that the drift monitor compares with the training scans.
HEALTH_KEYS = ("brightness", "missing_3d", "z_median_m")


@dataclass(frozen=True)
class Moments:
    """Mean, standard deviation (ddof 1) and count of one per-scan value over the training scans
    (what the drift monitor's t-tests compare a window of scans with)."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Moments:
        v = np.asarray(values, dtype=np.float64)
        return cls(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size))

    def to_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "std": self.std, "n": self.n}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Moments:
        return cls(float(raw["mean"]), float(raw["std"]), int(raw["n"]))


@dataclass(frozen=True)
class ScanHealth:
    """What one scan looked like, for the drift monitor. ``brightness``: mean grey level (0-255) of
    the RGB image as the model sees it; ``missing_3d``: share of the cloud's points that are missing
    (z = 0); ``z_median_m``: median distance of its valid points, in metres. The 3D values are None
    for inputs without clouds (normal maps)."""

    brightness: float
    missing_3d: float | None = None
    z_median_m: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return {key: getattr(self, key) for key in HEALTH_KEYS}


def brightness(rgb: np.ndarray) -> float:
    """Mean grey level (0-255) of a uint8 RGB image (the `ScanHealth` and training value)."""
    return float(rgb.mean())


def _spread(raw: Any) -> Spread | None:
    return None if raw is None else Spread(float(raw[0]), float(raw[1]))


@dataclass(frozen=True)
class InputStats:
    """What the training inputs looked like, kept in the model so that later inputs can be checked.

    ``z_median_m``: median over the training scans of their median z, in metres (None for inputs
    without clouds, e.g. Eyecandies normal maps); ``image_hw``: the most common training image size.
    Recorded since the spread was (None in older models, which are checked by ``z_median_m``
    alone): ``z_range_m``, ``missing_share`` and ``foreground_share`` over ``n_scans`` scans, and
    ``camera``: the depth camera of training depth PNGs, used for scans that come without one;
    ``health``: the training scans' `Moments` of each `ScanHealth` value (keys of `HEALTH_KEYS`),
    which the drift monitor compares later scans with (empty for older models).
    """

    z_median_m: float | None
    image_hw: tuple[int, int]
    z_range_m: Spread | None = None
    missing_share: Spread | None = None
    foreground_share: Spread | None = None
    n_scans: int = 0
    camera: Camera | None = None
    health: dict[str, Moments] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"z_median_m": self.z_median_m, "image_hw": list(self.image_hw)}
        for key in ("z_range_m", "missing_share", "foreground_share"):
            spread = getattr(self, key)
            if spread is not None:
                out[key] = spread.to_list()
        if self.n_scans:
            out["n_scans"] = self.n_scans
        if self.camera is not None:
            out["camera"] = self.camera.to_dict()
        if self.health:
            out["health"] = {key: value.to_dict() for key, value in self.health.items()}
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> InputStats | None:
        """None for models saved before the statistics were recorded; older records lack the spread."""
        if not raw:
            return None
        z = raw.get("z_median_m")
        return cls(None if z is None else float(z), (int(raw["image_hw"][0]), int(raw["image_hw"][1])),
                   _spread(raw.get("z_range_m")), _spread(raw.get("missing_share")),
                   _spread(raw.get("foreground_share")), int(raw.get("n_scans", 0)),
                   None if raw.get("camera") is None else Camera.from_dict(raw["camera"]),
                   {k: Moments.from_dict(v) for k, v in (raw.get("health") or {}).items() if k in HEALTH_KEYS})

    def limits(self) -> dict[str, list[float]]:
        """The accepted ranges in numbers (part of the preprocessing cache key: an entry checked
        against other limits is checked again); {} for models without the recorded spread."""
        out = {}
        if self.z_range_m is not None:
            out["z_m"] = [round(v, 9) for v in scale_band(self.z_range_m)]
        if self.missing_share is not None:
            out["missing_max"] = [round(missing_limit(self.missing_share), 6)]
        return out


def camera_stored(reference: InputStats | None) -> bool:
    """Whether a model keeps the depth camera it was trained with (scans may then come without camera.json)."""
    return reference is not None and reference.camera is not None


def median_z(xyz: np.ndarray) -> float:
    """Median z of the valid points (z != 0) of an organised cloud."""
    z = xyz[..., 2]
    return float(np.median(z[z != 0]))


def missing_share(xyz: np.ndarray) -> float:
    """Share of the cloud's points that are missing (z == 0)."""
    return 1.0 - np.count_nonzero(xyz[..., 2]) / (xyz.shape[0] * xyz.shape[1])


def foreground_share(x3d: np.ndarray) -> float:
    """Share of a 3D input image (3 x S x S in [0, 1], before normalisation) that is object: the
    preprocessing sets every channel of the background to 0 (docs/METHOD.md §2.5-§2.6)."""
    return float(np.count_nonzero(np.any(x3d != 0, axis=0))) / (x3d.shape[1] * x3d.shape[2])


def scale_band(z_range: Spread) -> tuple[float, float]:
    """The median distances (m) accepted for a model whose training scans span ``z_range``."""
    factor = z_range.factor(SCALE_FLOOR)
    return z_range.low / factor, z_range.high * factor


def missing_limit(missing: Spread) -> float:
    """The largest share of missing points accepted: the training scans' lowest share of points
    present, divided by the margin factor of the present shares."""
    present = Spread(1.0 - missing.high, 1.0 - missing.low)
    return 1.0 - present.low / present.factor(PRESENT_FLOOR)


def scale_problem(z_m: float, reference: InputStats) -> tuple[str, float]:
    """Why a scan's median z (metres) does not fit the model ("" if it does) and the distance it
    should have been near (for the unit advice)."""
    if reference.z_range_m is not None:
        low, high = scale_band(reference.z_range_m)
        if low <= z_m <= high:
            return "", 0.0
        seen = reference.z_range_m
        target = seen.high if z_m > high else seen.low
        where = f"at {seen.low:.4g}..{seen.high:.4g} m" if seen.high > seen.low * 1.0005 else f"around {seen.low:.4g} m"
        return (f"median z is {z_m:.4g} m, but the training scans were {where} ({z_m / target:.3g}x; accepted: "
                f"{low:.3g}..{high:.3g} m)"), target
    if reference.z_median_m:
        ratio = z_m / reference.z_median_m
        if not 1.0 / SCALE_TOLERANCE <= ratio <= SCALE_TOLERANCE:
            return (f"median z is {z_m:.4g} m, but the training scans were around {reference.z_median_m:.4g} m "
                    f"({ratio:.3g}x)"), reference.z_median_m
    return "", 0.0


def missing_problem(share: float, reference: InputStats) -> str:
    """Why a scan's share of missing 3D points makes it degenerate for the model ("" if it does not)."""
    if reference.missing_share is None or share <= missing_limit(reference.missing_share):
        return ""
    seen = reference.missing_share
    return (f"{100 * share:.0f} % of its 3D points are missing, but the training scans had {100 * seen.low:.1f}.."
            f"{100 * seen.high:.1f} % (accepted: up to {100 * missing_limit(seen):.0f} %): a degenerate scan "
            "(occluded, out of the sensor's range or overexposed?)")


def foreground_problem(share: float, reference: InputStats) -> str:
    """Why a scan's 3D input shows too little object for the model ("" if it does not)."""
    seen = reference.foreground_share
    if seen is None or seen.low <= 0 or share >= seen.low / seen.factor(FOREGROUND_FLOOR):
        return ""
    return (f"its 3D input is {100 * share:.1f} % object, but the training scans' were {100 * seen.low:.0f}.."
            f"{100 * seen.high:.0f} % (accepted: from {100 * seen.low / seen.factor(FOREGROUND_FLOOR):.1f} %): the "
            "scan shows no product above the background plane (an empty or flat scan, or another background?)")
