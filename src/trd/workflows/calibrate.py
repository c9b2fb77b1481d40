"""``trd calibrate``: new thresholds for a trained model from new good samples, without retraining.

Lines collect more good scans after deployment; more good samples give thresholds that promise
lower false-positive rates (`trd.scoring.threshold`). Only the thresholds (and the border check)
are re-derived: the normalisation statistics stay those of the training run's validation split, so
scores before and after stay comparable, and so do the good inputs of modality attribution
(collected from the new samples only for models that have none). The result is a NEW model file,
written atomically; an existing file is never replaced unless asked (``overwrite``), and the input
model never.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..config import Config
from ..data.cache import build_cache
from ..data.dataset import PairDataset
from ..data.inputs import InputStats
from ..data.samples import split_samples
from ..detector import Detector, load_detector, save_detector
from ..errors import ConfigError, TRDError
from ..scoring.calibrate import Calibration, rederive_thresholds, threshold_source
from ..scoring.threshold import Thresholds, check_rate
from ..training.runtime import resolve_device

Log = Callable[[str], None]


def default_output(model_path: Path) -> Path:
    """``RUN/model.pt`` -> ``RUN/model.calibrated.pt``."""
    return model_path.with_name(f"{model_path.stem}.calibrated{model_path.suffix or '.pt'}")


def _data_config(cfg: Config, data_root: str | Path | None, category: str | None, fmt: str | None) -> Config:
    data = cfg.data
    if data_root is not None:
        data = dataclasses.replace(data, root=str(data_root))
    if category is not None:
        data = dataclasses.replace(data, category=category)
    if fmt is not None:
        data = dataclasses.replace(data, format=fmt)
    return dataclasses.replace(cfg, data=data)


def recalibrate(model_path: str | Path, *, data_root: str | Path | None = None, split: str = "validation",
                category: str | None = None, fmt: str | None = None, out: str | Path | None = None,
                target_fpr: float | None = None, pixel_fpr: float | None = None, overwrite: bool = False,
                batch_size: int = 8, device: str = "auto", log: Log = print) -> Path:
    """Re-derive the thresholds of ``model_path`` from the good samples of a dataset split.

    Args:
        model_path: a ``model.pt`` written by `fit` (or by an earlier ``calibrate``).
        data_root, category, fmt: the dataset (layout as for `fit`); default: the model's own.
        split: the split whose ``good`` samples are used (default "validation"; defective samples
            of the split are left out).
        out: the new model file; default ``<model>.calibrated.pt`` beside the model.
        target_fpr, pixel_fpr: requested rates; default: the model's ``score`` settings.
        overwrite: replace ``out`` if it exists (never the input model).
        batch_size, device: as for `evaluate`.
        log: receives the promise of the new thresholds and the border check.

    Returns:
        The path written.

    Example:
        >>> from trd import api
        >>> api.calibrate("runs/puck/model.pt", data_root="line/good_scans")  # doctest: +SKIP
        PosixPath('runs/puck/model.calibrated.pt')
    """
    model_path = Path(model_path)
    out = Path(out) if out is not None else default_output(model_path)
    if out.resolve() == model_path.resolve():
        raise ConfigError(f"--out {out} is the input model; write the recalibrated model to a new file")
    if out.exists() and not overwrite:
        raise ConfigError(f"--out {out} exists; choose another file or pass --overwrite to replace it")
    for rate, what in ((target_fpr, "--target-fpr"), (pixel_fpr, "--pixel-fpr")):
        if rate is not None:
            check_rate(rate, what)
    dev = resolve_device(device)
    detector, trained, old, extra = load_detector(model_path, dev)
    score = dataclasses.replace(trained.score, target_fpr=old.target_fpr if target_fpr is None else target_fpr,
                                pixel_fpr=old.pixel_fpr if pixel_fpr is None else pixel_fpr)
    trained = dataclasses.replace(trained, score=score)  # the model keeps its training data settings
    cfg = _data_config(trained, data_root, category, fmt)
    samples = split_samples(cfg.data, split)
    good = [s for s in samples if s.label == 0]
    if not good:
        raise TRDError(f"no good samples in {threshold_source(cfg, split)}")
    if len(good) < len(samples):
        log(f"calibrate: using the {len(good)} good samples of the split ({len(samples) - len(good)} defective left out)")
    dataset = PairDataset(good, cfg.data, build_cache(cfg.data), InputStats.from_dict(extra.get("inputs")))
    cal = rederive_thresholds(detector, dataset, cfg, dev, threshold_source(cfg, split),
                              with_reference=detector.reference is None, batch_size=batch_size)
    _save(out, detector, trained, cal, extra, model_path, old)
    log(f"calibrate: previous thresholds: image {old.image:.4f}, pixel {old.pixel:.4f} ({old.source or 'validation'})")
    for line in cal.summary(cfg):
        log(line)
    log(f"calibrate: wrote {out}")
    return out


def _save(out: Path, detector: Detector, cfg: Config, cal: Calibration, extra: dict[str, Any], model_path: Path,
          old: Thresholds) -> None:
    """The same model with the new thresholds, border check and history of calibrations."""
    history = [*extra.get("calibrations", []), {
        "from": str(model_path), "source": cal.thresholds.source, "samples": cal.thresholds.n_validation,
        "previous": old.to_dict(), "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}]
    if cal.reference is not None:
        detector.reference = cal.reference
    save_detector(out, detector, cfg, cal.thresholds,
                  extra=extra | {"border_check": cal.border.to_dict(), "calibrations": history,
                                 "validation_scores": cal.summary_scores()})
