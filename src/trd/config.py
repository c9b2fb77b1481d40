"""Run configuration: small dataclasses, a TOML file, and ``section.key=value`` overrides.

Defaults follow docs/METHOD.md §9 (the reference code's HEAD), so an empty config is the paper protocol.
Every value is checked at the door (`validate_config`): a wrong type or a value out of range stops
with one line naming the setting and what it accepts, before anything is read or written.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from .atomic import atomic_write_text
from .errors import ConfigError

#: Per-class Sobel apertures of the reference code (docs/METHOD.md §2.6; undocumented there and
#: possibly tuned on test data, §10.3), selected with ``data.sobel_preset = "trd-per-class"``: a
#: preset is the whole table, (apertures by category, aperture of every other category), so it
#: equals the reference whatever ``data.sobel_k`` says.
SOBEL_PRESETS: dict[str, tuple[dict[str, int], int]] = {
    "trd-per-class": ({"cookie": 3, "dowel": 7, "foam": 7, "tire": 7}, 5),
}
#: Dataset layouts, 3D input images, background-plane methods (see trd.data).
FORMATS: tuple[str, ...] = ("mvtec3d", "eyecandies", "folder")
MODALITIES_3D: tuple[str, ...] = ("normals", "depth")
PLANES: tuple[str, ...] = ("corners", "ransac", "none")
#: Units a point cloud may be stored in, with their size in metres (clouds are converted to metres).
XYZ_UNITS: dict[str, float] = {"m": 1.0, "cm": 1e-2, "mm": 1e-3, "um": 1e-6}
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
#: What happens to a scan unlike every training scan (most 3D points missing, a blank 3D input).
DEGENERATE_SCANS: tuple[str, ...] = ("refuse", "warn")
#: Branch names of older files (checkpoint format 1, early ONNX exports) and their names today.
LEGACY_BRANCH_NAMES = {"3d": "geo"}


def legacy_branch(name: str) -> str:
    """The current name of a branch that an older file may call otherwise."""
    return LEGACY_BRANCH_NAMES.get(name, name)

#: Training epochs of the reference per dataset format (docs/METHOD.md §4.2): 200 on MVTec 3D-AD,
#: 100 on Eyecandies; your own folder data gets MVTec's 200. `load_config` and `Config.from_dict`
#: apply it when ``train.epochs`` is not given explicitly; an explicit value always wins.
PAPER_EPOCHS: dict[str, int] = {"mvtec3d": 200, "eyecandies": 100, "folder": 200}


@dataclass
class DataConfig:
    root: str = ""
    format: str = "mvtec3d"  # mvtec3d | eyecandies | folder
    category: str = ""
    image_size: int = 256
    modality_3d: str = "normals"  # normals | depth
    # DEPARTURE (docs/METHOD_NOTES.md §2): one global Sobel aperture by default; the reference's
    # per-class table (possibly tuned on test data) is the opt-in preset "trd-per-class".
    sobel_k: int = 5
    sobel_preset: str = ""  # "" or a key of SOBEL_PRESETS
    plane: str = "corners"  # corners (reference) | ransac (robust) | none
    plane_threshold: float = 0.005  # distance to the background plane, in metres
    xyz_unit: str = "m"  # unit of the XYZ TIFF values (m, cm, mm, um): clouds are converted to metres
    flip_z: bool = False  # negate z, for cameras whose z axis points away from the scene
    max_image_pixels: int = 64_000_000  # larger images and clouds are refused before decoding
    # refuse | warn: scans unlike every training scan (trd.data.plausibility) are refused, or scored and warned about
    degenerate_scans: str = "refuse"
    cache_dir: str = ""  # "" -> $TRD_CACHE or ~/.cache/trd/preprocess; "none" disables the cache
    num_workers: int = 0

    def sobel_for(self, category: str) -> int:
        """Sobel aperture for a category: the global ``sobel_k``, or with a preset the preset's
        table alone (``sobel_k`` is then not used).

        Example:
            >>> DataConfig(sobel_k=3, sobel_preset="trd-per-class").sobel_for("bagel")
            5
        """
        if not self.sobel_preset:
            return self.sobel_k
        if self.sobel_preset not in SOBEL_PRESETS:
            raise ConfigError(f"unknown data.sobel_preset {self.sobel_preset!r}; known: {sorted(SOBEL_PRESETS)}")
        table, other = SOBEL_PRESETS[self.sobel_preset]
        return table.get(category, other)

    @property
    def metres_per_unit(self) -> float:
        """The factor that converts the clouds' stored values to metres (``xyz_unit``)."""
        return XYZ_UNITS[self.xyz_unit]


@dataclass
class ModelConfig:
    backbone: str = "wide_resnet50_2"  # see trd.model.backbone.BACKBONES
    weights: str = "imagenet"  # imagenet | none | path to a state-dict file
    variant: str = "trd"  # see trd.model.VARIANTS
    fuse_stopgrad: bool = False  # docs/METHOD.md §3.6, the pre-2025-05 reference variant
    decoder_blocks: list[int] = field(default_factory=lambda: [3, 4, 6])
    bottleneck_blocks: int = 3


@dataclass
class TrainConfig:
    epochs: int = 200  # when not set explicitly: PAPER_EPOCHS[data.format] (100 on Eyecandies)
    batch_size: int = 16
    lr: float = 0.005
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    gamma: float = 0.95  # ExponentialLR, stepped once per epoch
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # fp32 (the reference) | bf16 | auto (bf16 on CUDA GPUs with native bf16, else fp32): bf16 is an
    # opt-in speed setting, a departure (docs/METHOD_NOTES.md §10), see trd.training.device.
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    # DEPARTURE (docs/METHOD_NOTES.md §10b): torch's fused Adam kernel, on by default: the same
    # update rule as the reference's Adam, different last bits; ~7x faster step on CPU.
    fused_adam: bool = True
    cache_teacher: bool = True  # teacher features of fixed inputs are deterministic: compute once
    teacher_cache_gb: float = 8.0  # memory the cached teacher features may take on the device
    # The resumable train state (RUN/state.pt) is written at an epoch boundary once both hold:
    # the epoch is a multiple of checkpoint_every (>= 1) and checkpoint_minutes (>= 0; 0: no time
    # floor) of wall time have passed since the last write; always after the last epoch. It is
    # removed once model.pt is written, unless keep_state.
    checkpoint_every: int = 1
    checkpoint_minutes: float = 10.0
    keep_state: bool = False


@dataclass
class ScoreConfig:
    sigma: float = 4.0  # Gaussian smoothing of the fused map (scipy truncate 4.0, mode reflect)
    target_fpr: float = 0.01  # image threshold: this false-positive rate on validation normals
    pixel_fpr: float = 0.01  # pixel threshold for binary masks, also from validation normals
    aupro_limits: list[float] = field(default_factory=lambda: [0.3, 0.1, 0.05, 0.01])
    # Opt-in departure: scores come only from the object (the 3D input's foreground grown by a
    # margin in px); normalisation statistics still use every pixel. Off = the paper protocol.
    foreground_only: bool = False
    foreground_margin: int = 2
    # DEPARTURE (docs/METHOD_NOTES.md §15): share of the validation samples whose maps give the
    # normalisation statistics; the others choose the thresholds, so their promise is exact (1.0: all
    # give both, as the reference normalises; the thresholds are then approximate).
    stats_share: float = 0.2
    # Reject rules in physical units (0: off): a flagged image counts as defective only when one of
    # its regions is at least this large (mm^2) and this deep or high (mm). They can only narrow the
    # decision, so the false-positive promise still holds (trd.scoring.decision).
    min_area_mm2: float = 0.0
    min_depth_mm: float = 0.0


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> Config:
        """Defaults, then the settings of ``raw`` ({section: {key: value}}); the per-dataset
        defaults (`PAPER_EPOCHS`) apply to what ``raw`` does not set."""
        cfg = cls()
        for section, values in raw.items():
            if not hasattr(cfg, section) or not isinstance(values, dict):
                hint = difflib.get_close_matches(section, SECTIONS, n=1)
                maybe = f"did you mean [{hint[0]}]? " if hint else ""
                raise ConfigError(f"{source}: unknown section [{section}]; {maybe}known: {', '.join(SECTIONS)}")
            for key, value in values.items():
                _set(cfg, f"{section}.{key}", value, source)
        _apply_dataset_defaults(cfg, {f"{s}.{k}" for s, values in raw.items() for k in values})
        return cfg


def _apply_dataset_defaults(cfg: Config, explicit: set[str]) -> None:
    """Settings whose default depends on the dataset, where ``explicit`` (dotted keys) does not set them."""
    if "train.epochs" not in explicit and cfg.data.format in PAPER_EPOCHS:
        cfg.train.epochs = PAPER_EPOCHS[cfg.data.format]


SECTIONS = ("data", "model", "train", "score")


def setting_names() -> list[str]:
    """Every setting as ``section.key``, in the order of the dataclasses."""
    defaults = Config()
    return [f"{s}.{f.name}" for s in SECTIONS for f in dataclasses.fields(getattr(defaults, s))]


def _suggest(dotted: str) -> str:
    """" did you mean X?" for a mistyped ``section.key`` (difflib), or "" when nothing is close."""
    names = setting_names()
    section, _, key = dotted.rpartition(".")
    if section in SECTIONS:  # a known section: only its own keys
        keys = [name.split(".", 1)[1] for name in names if name.startswith(section + ".")]
        close = [f"{section}.{k}" for k in difflib.get_close_matches(key, keys, n=1, cutoff=0.6)]
    else:  # a mistyped section, or none: the whole name, else the key alone
        close = difflib.get_close_matches(dotted, names, n=1, cutoff=0.75)
        if not close:
            by_key = {name.split(".", 1)[1]: name for name in names}
            close = [by_key[k] for k in difflib.get_close_matches(key, list(by_key), n=1, cutoff=0.75)]
    return f"; did you mean {close[0]}?" if close else ""


def _set(cfg: Config, dotted: str, value: Any, source: str) -> None:
    section_name, _, key = dotted.partition(".")
    section = getattr(cfg, section_name, None)
    if section_name not in SECTIONS or not key:
        raise ConfigError(f"{source}: unknown setting {dotted!r}{_suggest(dotted)} ('trd settings' lists them all)")
    fields = {f.name: f for f in dataclasses.fields(section)}
    if key not in fields:
        hint = _suggest(dotted) or f"; known in [{section_name}]: {', '.join(fields)}"
        raise ConfigError(f"{source}: unknown setting {dotted!r}{hint} ('trd settings' lists them all)")
    current = getattr(section, key)
    setattr(section, key, _coerce(value, current, dotted, source))


_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}
_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _scalar(value: Any, kind: type) -> Any:
    """``value`` as ``kind``, strictly: no bool as a number, no 1.9 or "1.9" as an integer."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(value)
    if isinstance(value, bool):
        raise ValueError(value)
    if kind is int:
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            return int(value.strip())
        raise ValueError(value)
    if kind is float:
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            return float(value.strip())
        raise ValueError(value)
    if not isinstance(value, str):
        raise ValueError(value)
    return value


def _coerce(value: Any, current: Any, dotted: str, source: str) -> Any:
    """Convert ``value`` (from TOML or a ``key=value`` string) to the type of the current value."""
    try:
        if isinstance(current, list):
            items = [v for v in value.split(",")] if isinstance(value, str) else list(value)
            kind = type(current[0]) if current else str
            return [_scalar(v, kind) for v in items]
        return _scalar(value, type(current))
    except (TypeError, ValueError):
        kind = type(current[0]) if isinstance(current, list) and current else type(current)
        what = _TYPE_WORDS.get(kind, kind.__name__)
        expected = f"a list of {what.removeprefix('an ').removeprefix('a ')}s" if isinstance(current, list) else what
        raise ConfigError(f"{source}: {dotted}={value!r} is not valid: expected {expected}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the TOML file (if any), then ``section.key=value`` overrides, in that order.

    Settings neither the file nor an override gives keep their default; the default of
    ``train.epochs`` depends on ``data.format`` (`PAPER_EPOCHS`). The result is what a run saves
    as ``RUN/config.toml``, every value resolved.

    Example:
        >>> load_config(None, ["data.format=eyecandies"]).train.epochs
        100
    """
    cfg = Config()
    explicit: set[str] = set()
    if path is not None:
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8-sig"))  # a byte-order mark (Windows editors) is read
        except FileNotFoundError:
            raise ConfigError(f"{p}: config file not found") from None
        except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p}: cannot read config file ({type(exc).__name__})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: not valid TOML ({exc})") from None
        cfg = Config.from_dict(raw, source=str(p))
        explicit = {f"{s}.{k}" for s, values in raw.items() for k in values}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, value = item.split("=", 1)
        _set(cfg, key.strip(), value.strip(), "override")
        explicit.add(key.strip())
    _apply_dataset_defaults(cfg, explicit)
    validate_config(cfg)
    return cfg


# --- validation -------------------------------------------------------------------------------

Check = tuple[Callable[[Any], bool], str]  # (accepts the value, what is allowed)
#: Upper bounds past which a setting can only fail later (memory, hours of building) or mean nothing:
#: the paper trains 256 px images; the deepest torchvision ResNet stage has 36 blocks; a data loader
#: gains nothing from more worker processes than a large machine has cores.
MAX_IMAGE_SIZE, MAX_BLOCKS, MAX_WORKERS = 2048, 64, 64


def _finite(v: Any) -> bool:
    return isinstance(v, float) and math.isfinite(v)


def _one_of(choices: Any) -> Check:
    return (lambda v: v in choices), f"one of {', '.join(str(c) if c != '' else repr(c) for c in choices)}"


def _int_at_least(low: int) -> Check:
    return (lambda v: v >= low), f"an integer >= {low}"


def _rate() -> Check:
    return (lambda v: _finite(v) and 0.0 < v < 1.0), "a number in (0, 1)"


#: What each setting accepts. Every field of Config has an entry (tests/pipeline/test_config.py).
RULES: dict[str, Check] = {
    "data.root": ((lambda v: True), "a folder"),
    "data.format": _one_of(FORMATS),
    "data.category": ((lambda v: "/" not in v and "\\" not in v), "a category folder name"),
    "data.image_size": ((lambda v: 32 <= v <= MAX_IMAGE_SIZE and v % 32 == 0),
                        f"a multiple of 32 in 32..{MAX_IMAGE_SIZE}"),
    "data.modality_3d": _one_of(MODALITIES_3D),
    "data.sobel_k": ((lambda v: 1 <= v <= 31 and v % 2 == 1), "an odd integer in 1..31"),
    "data.sobel_preset": _one_of(["", *SOBEL_PRESETS]),
    "data.plane": _one_of(PLANES),
    "data.plane_threshold": ((lambda v: _finite(v) and v > 0), "a distance in metres > 0"),
    "data.xyz_unit": _one_of(XYZ_UNITS),
    "data.flip_z": ((lambda v: True), "true or false"),
    "data.max_image_pixels": _int_at_least(1024),
    "data.degenerate_scans": _one_of(DEGENERATE_SCANS),
    "data.cache_dir": ((lambda v: True), "a folder, '' (default location) or 'none'"),
    "data.num_workers": ((lambda v: 0 <= v <= MAX_WORKERS), f"an integer in 0..{MAX_WORKERS}"),
    "model.backbone": ((lambda v: bool(v)), "a backbone name"),
    "model.weights": ((lambda v: bool(v)), "imagenet, none or a weights file"),
    "model.variant": ((lambda v: bool(v)), "a model variant"),
    "model.fuse_stopgrad": ((lambda v: True), "true or false"),
    "model.decoder_blocks": ((lambda v: len(v) == 3 and 1 <= min(v) and max(v) <= MAX_BLOCKS),
                             f"3 integers in 1..{MAX_BLOCKS}, e.g. 3,4,6"),
    "model.bottleneck_blocks": ((lambda v: 1 <= v <= MAX_BLOCKS), f"an integer in 1..{MAX_BLOCKS}"),
    "train.epochs": _int_at_least(1),
    "train.batch_size": _int_at_least(1),
    "train.lr": ((lambda v: _finite(v) and v > 0), "a number > 0"),
    "train.betas": ((lambda v: len(v) == 2 and all(_finite(b) and 0.0 <= b < 1.0 for b in v)),
                    "2 numbers in [0, 1), e.g. 0.5,0.999"),
    "train.gamma": ((lambda v: _finite(v) and 0.0 < v <= 1.0), "a number in (0, 1]"),
    "train.seed": ((lambda v: 0 <= v < 2**32), "an integer in 0..2^32-1"),
    "train.device": ((lambda v: v == "auto" or v == "cpu" or v.startswith("cuda")), "auto, cpu, cuda or cuda:N"),
    "train.precision": _one_of(PRECISIONS),
    "train.channels_last": ((lambda v: True), "true or false"),
    "train.compile": ((lambda v: True), "true or false"),
    "train.fused_adam": ((lambda v: True), "true or false"),
    "train.cache_teacher": ((lambda v: True), "true or false"),
    "train.teacher_cache_gb": ((lambda v: _finite(v) and v >= 0), "a size in GiB >= 0"),
    "train.checkpoint_every": _int_at_least(1),
    "train.checkpoint_minutes": ((lambda v: _finite(v) and v >= 0), "minutes >= 0 (0: every checkpoint_every epochs)"),
    "train.keep_state": ((lambda v: True), "true or false"),
    "score.sigma": ((lambda v: _finite(v) and v >= 0), "a smoothing sigma in pixels >= 0 (0: none)"),
    "score.target_fpr": _rate(),
    "score.pixel_fpr": _rate(),
    "score.aupro_limits": ((lambda v: len(v) > 0 and all(_finite(x) and 0.0 < x <= 1.0 for x in v)),
                           "one or more numbers in (0, 1]"),
    "score.foreground_only": ((lambda v: True), "true or false"),
    "score.foreground_margin": _int_at_least(0),
    "score.stats_share": ((lambda v: _finite(v) and 0.0 < v <= 1.0), "a share in (0, 1]"),
    "score.min_area_mm2": ((lambda v: _finite(v) and v >= 0), "an area in mm^2 >= 0 (0: no rule)"),
    "score.min_depth_mm": ((lambda v: _finite(v) and v >= 0), "a depth in mm >= 0 (0: no rule)"),
}


#: Settings bounded by another one (checked after every setting alone): a smoothing wider than the
#: image means nothing, and its kernel would not fit in memory (score.sigma=1e12 trained, then
#: asked for 64 TB).
BOUNDED_BY: dict[str, tuple[str, str]] = {
    "score.sigma": ("data.image_size", "a smoothing sigma in pixels, 0 (none) to data.image_size"),
}


def _get(cfg: Config, dotted: str) -> Any:
    section, _, key = dotted.partition(".")
    return getattr(getattr(cfg, section), key)


def validate_config(cfg: Config, source: str = "") -> Config:
    """Check every setting's value (types were checked when it was set), then the bounds one setting
    sets another (`BOUNDED_BY`); ConfigError names the first bad one and what it accepts. Returns ``cfg``."""
    where = f"{source}: " if source else ""
    for section in dataclasses.fields(cfg):
        values = getattr(cfg, section.name)
        for f in dataclasses.fields(values):
            dotted = f"{section.name}.{f.name}"
            value = getattr(values, f.name)
            accepts, allowed = RULES[dotted]
            try:
                ok = accepts(value)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ConfigError(f"{where}{dotted}={_show(value)} is out of range: expected {allowed}")
    for dotted, (bound, allowed) in BOUNDED_BY.items():
        value, limit = _get(cfg, dotted), _get(cfg, bound)
        if value > limit:
            raise ConfigError(f"{where}{dotted}={_show(value)} is out of range: expected {allowed} ({limit})")
    rules = [k for k in ("min_area_mm2", "min_depth_mm") if getattr(cfg.score, k) > 0]
    if rules and cfg.data.format == "eyecandies":
        raise ConfigError(f"{where}score.{rules[0]} needs point clouds to measure regions in mm, but "
                          "data.format=eyecandies reads normal maps, which have none; set it to 0")
    return cfg


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else repr(value)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as TOML (atomically), so a run can be repeated exactly."""
    atomic_write_text(path, tomli_w.dumps(cfg.to_dict()))


#: Settings that cannot change the trained weights: a run may resume with other values.
RESUME_NEUTRAL = frozenset({
    "data.num_workers", "data.cache_dir", "data.degenerate_scans", "train.epochs", "train.checkpoint_every", "train.checkpoint_minutes",
    "train.keep_state", "train.cache_teacher", "train.teacher_cache_gb",
})
#: Sections that act only after training (calibration, scoring): never block a resume.
_AFTER_TRAINING = ("score",)


def resume_differences(saved: dict[str, Any], now: Config, *, scoring: bool = False,
                       ignore: frozenset[str] = frozenset()) -> list[str]:
    """``section.key: old -> new`` for every setting that differs from ``saved`` (a config dict of
    an earlier run) and can change the trained weights (with ``scoring``: or the scores and
    metrics computed after training); empty when the run may resume.

    `RESUME_NEUTRAL` settings and ``ignore`` never count; ``data.root`` counts as equal when both
    resolve to the same folder.
    """
    current = now.to_dict()
    out = []
    for section, values in current.items():
        if section in _AFTER_TRAINING and not scoring:
            continue
        old_values = saved.get(section, {})
        for key, value in values.items():
            dotted = f"{section}.{key}"
            old = old_values.get(key, getattr(type(getattr(now, section))(), key))
            if dotted in RESUME_NEUTRAL or dotted in ignore or old == value:
                continue
            if dotted == "data.root" and old and value and Path(old).resolve() == Path(value).resolve():
                continue
            out.append(f"{dotted}: {_show(old)} -> {_show(value)}")
    return out


def apply_input_overrides(cfg: Config, xyz_unit: str | None = None, flip_z: bool | None = None) -> Config:
    """State how new inputs' clouds are stored when it differs from the training data's (trd test /
    predict ``--xyz-unit``, ``--flip-z``); validated like every setting. Returns ``cfg``."""
    if xyz_unit is not None:
        cfg.data.xyz_unit = xyz_unit
    if flip_z is not None:
        cfg.data.flip_z = flip_z
    return validate_config(cfg)


#: An absolute path in a text, up to its last name: POSIX (``/home/a/data/``) or Windows (``C:\\data\\``);
#: not a URL, a ratio (``k/(n+1)``) or a date (``2026/12/06``).
_MACHINE_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^/\s\"']+/)+|\b[A-Za-z]:[\\/](?:[^\\/\s\"']+[\\/])*")


def without_machine_paths(value: Any) -> Any:
    """``value`` (JSON-like: dicts, lists, strings, numbers) with every absolute path in its strings
    reduced to its last name (``/data/mvtec3d/bagel (validation split)`` -> ``bagel (validation
    split)``): what may leave this machine (ONNX metadata, API answers) says nothing about its folders.

    Example:
        >>> without_machine_paths({"root": "/home/anna/data/synth", "rule": "P <= k/(n+1)"})
        {'root': 'synth', 'rule': 'P <= k/(n+1)'}
    """
    if isinstance(value, str):
        return _MACHINE_PATH.sub("", value)
    if isinstance(value, dict):
        return {k: without_machine_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_machine_paths(v) for v in value]
    return value
