"""Run configuration: small dataclasses, a TOML file, and ``section.key=value`` overrides.

Defaults follow docs/METHOD.md §9 (the reference code's HEAD), so an empty config is the paper protocol.
"""

from __future__ import annotations

import dataclasses
import tomllib
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
    plane_threshold: float = 0.005  # distance to the background plane, in xyz units (metres)
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
    # opt-in speed setting, a departure (docs/METHOD_NOTES.md §10), see trd.training.runtime.
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
                raise ConfigError(f"{source}: unknown section [{section}]; known: data, model, train, score")
            for key, value in values.items():
                _set(cfg, f"{section}.{key}", value, source)
        _apply_dataset_defaults(cfg, {f"{s}.{k}" for s, values in raw.items() for k in values})
        return cfg


def _apply_dataset_defaults(cfg: Config, explicit: set[str]) -> None:
    """Settings whose default depends on the dataset, where ``explicit`` (dotted keys) does not set them."""
    if "train.epochs" not in explicit and cfg.data.format in PAPER_EPOCHS:
        cfg.train.epochs = PAPER_EPOCHS[cfg.data.format]


def _set(cfg: Config, dotted: str, value: Any, source: str) -> None:
    section_name, _, key = dotted.partition(".")
    section = getattr(cfg, section_name, None)
    if section is None or not dataclasses.is_dataclass(section) or not key:
        raise ConfigError(f"{source}: unknown setting {dotted!r}")
    fields = {f.name: f for f in dataclasses.fields(section)}
    if key not in fields:
        raise ConfigError(f"{source}: unknown setting {dotted!r}; known in [{section_name}]: {sorted(fields)}")
    current = getattr(section, key)
    setattr(section, key, _coerce(value, current, dotted, source))


def _coerce(value: Any, current: Any, dotted: str, source: str) -> Any:
    """Convert ``value`` (from TOML or a ``key=value`` string) to the type of the current value."""
    try:
        if isinstance(current, bool):
            if isinstance(value, str):
                if value.lower() not in {"true", "false", "1", "0", "yes", "no"}:
                    raise ValueError(value)
                return value.lower() in {"true", "1", "yes"}
            return bool(value)
        if isinstance(current, list):
            items = value.split(",") if isinstance(value, str) else list(value)
            kind = type(current[0]) if current else str
            return [kind(v) for v in items]
        return type(current)(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {dotted}={value!r} is not a valid {type(current).__name__}") from None


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
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
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
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as TOML (atomically), so a run can be repeated exactly."""
    atomic_write_text(path, tomli_w.dumps(cfg.to_dict()))
