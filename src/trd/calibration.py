"""Thresholds from good samples: everything a detector learns from defect-free scans after training.

At fit (:func:`calibrate`, on the validation split; never the test split):

1. Per-branch mean/std over all pixels of the raw maps (docs/METHOD.md §5.2) -> Scorer (also with
   ``score.foreground_only``, which restricts only where scores may come from).
   DEPARTURE (docs/METHOD_NOTES.md §15): from ``score.stats_share`` of the validation samples
   (evenly spread), not all of them, when the detector has two branches.
2. Deployment thresholds by the order-statistic rule (`trd.scoring.threshold`) on the OTHER
   validation samples: the image threshold from the image scores, the pixel threshold from each
   image's own ``score.pixel_fpr`` quantile. Their scores are then computed exactly as a new
   sample's (with statistics they did not shape), so the promise is exact. With one branch the
   z-score cannot reorder scores, and all samples give both; with ``stats_share = 1`` (the
   reference's normalisation) they give both too, and the statements say "approximate".
3. A border check: where the validation images' maxima sit (`trd.scoring.border`).
4. The good inputs that modality attribution takes nominal content from (`trd.detector.counterfactual`):
   up to ``BANK_SIZE`` validation inputs, evenly spread over the split.

After deployment (:func:`recalibrate`, the ``trd calibrate`` command): lines collect more good
scans, and more good samples give thresholds that promise lower false-positive rates. Steps 2-3
(and 4 for models that have no reference) are repeated on the new good samples; the normalisation
statistics stay those of the training run's validation split, so scores before and after stay
comparable. The samples that gave the statistics are left out when they are among the new ones.
The model's own training split (the students learnt those images: their scores are too low) and any
test split (it measures the thresholds) are refused unless forced. The result is a NEW model file,
written atomically; an existing file is never replaced unless asked (``overwrite``), and the input
model never.
"""


from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .checkpoint import load_checkpoint, save_checkpoint
from .config import Config
from .data.cache import build_cache
from .data.dataset import PairDataset
from .data.inputs import InputStats, camera_stored
from .data.samples import Sample, split_samples
from .detector import Detector, load_detector, save_detector
from .detector.counterfactual import BANK_SIZE
from .detector.passes import Runner, iterate_outputs
from .errors import ConfigError, TRDError
from .model.trd import TRDModel
from .scoring.border import BorderCheck, border_check, border_lines
from .scoring.maps import BranchStats, Scorer
from .scoring.threshold import Thresholds, check_rate, choose_thresholds, fpr_threshold
from .training.device import resolve_device

Log = Callable[[str], None]


@dataclass
class Calibration:
    """What good samples tell about a detector: its scorer, thresholds, border check and reference.

    ``reference``: ``{"rgb": KxCxSxS, "x3d": KxCxSxS}`` good inputs (CPU float32), or None where
    they were not collected (`rederive_thresholds` on a model that already has them).
    """

    scorer: Scorer | None
    thresholds: Thresholds
    border: BorderCheck
    reference: dict[str, Tensor] | None
    scores: list[float]  # image scores of the good samples the thresholds were chosen on
    stats_samples: list[str] | None = None  # sample_key of the samples that gave the statistics (fit only)
    split_line: str = ""  # which validation samples gave the statistics and which the thresholds (fit only)

    def summary_scores(self) -> list[float]:
        """The good samples' image scores at full precision (stored with the model, so a threshold
        can be explored against them: `trd serve`'s page; the image threshold is one of them)."""
        return [float(v) for v in self.scores]

    def summary(self, cfg: Config) -> list[str]:
        """Log lines: which samples gave what, what the thresholds promise (and why not more), then
        the border check."""
        lines = [self.split_line] if self.split_line else []
        return [*lines, *self.thresholds.statements(), *border_lines(self.border, cfg)]


def sample_key(sample: Sample) -> str:
    """How the model remembers a sample: ``split/defect/file name`` (e.g. ``validation/good/003.png``)."""
    return f"{sample.split}/{sample.defect}/{sample.rgb.name}"


def stats_split(n: int, share: float, branches: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Which of n validation samples give the normalisation statistics and which the thresholds
    (two boolean masks), and whether the thresholds are approximate (module docstring).

    Example:
        >>> stats, thresholds, approximate = stats_split(10, 0.2, branches=2)
        >>> np.flatnonzero(stats).tolist(), int(thresholds.sum()), approximate
        ([0, 9], 8, False)
    """
    everything = np.ones(n, bool)
    if branches == 1:
        return everything, everything, False
    if share >= 1.0 or n < 2:
        return everything, everything, True
    count = min(max(int(round(share * n)), 1), n - 1)
    stats = np.zeros(n, bool)
    stats[np.unique(np.linspace(0, n - 1, count).round().astype(int))] = True
    return stats, ~stats, False


class _GoodStatistics:
    """Per image: score, its own pixel quantile and where its maximum is; plus some of the inputs."""

    def __init__(self, pixel_fpr: float, n_samples: int, with_reference: bool) -> None:
        self.pixel_fpr = pixel_fpr
        self.scores: list[np.ndarray] = []
        self.pixel_values: list[float] = []
        self.argmax: list[np.ndarray] = []
        keep = np.linspace(0, n_samples - 1, min(n_samples, BANK_SIZE)).round().astype(int) if n_samples else []
        self.keep = set(keep.tolist()) if with_reference else set()
        self.bank: dict[str, list[Tensor]] = {"rgb": [], "x3d": []}
        self.size = 0

    def add_inputs(self, batch: dict[str, Any]) -> None:
        """Keep the inputs of the samples chosen for the reference bank."""
        chosen = [j for j, i in enumerate(batch["index"].tolist()) if i in self.keep]
        for key, kept in self.bank.items():
            kept += [batch[key][j].float().clone() for j in chosen]

    def add_outputs(self, out: dict[str, Tensor], use: np.ndarray | None = None) -> None:
        """Add a batch's outputs: every row to the border check, the rows in ``use`` (all when None)
        to the thresholds."""
        maps = out["anomaly_map"][:, 0].float().cpu().numpy()
        use = np.ones(len(maps), bool) if use is None else use
        self.size = maps.shape[-1]
        self.scores.append(out["score"].float().cpu().numpy()[use])
        self.argmax.append(maps.reshape(len(maps), -1).argmax(axis=1))
        self.pixel_values += [fpr_threshold(m, self.pixel_fpr) for m in maps[use]]

    def image_scores(self) -> list[float]:
        return [float(v) for v in np.concatenate(self.scores)] if self.scores else []

    def finish(self, cfg: Config, source: str, approximate: bool = False
               ) -> tuple[Thresholds, BorderCheck, dict[str, Tensor] | None]:
        scores = np.concatenate(self.scores) if self.scores else np.zeros(0)
        if scores.size == 0:
            raise TRDError(f"no good samples to calibrate on ({source})")
        thresholds = choose_thresholds(scores, np.asarray(self.pixel_values), cfg.score.target_fpr,
                                       cfg.score.pixel_fpr, source, approximate)
        border = border_check(np.concatenate(self.argmax), self.size)
        reference = {k: torch.stack(v) for k, v in self.bank.items()} if self.keep else None
        return thresholds, border, reference


def threshold_source(cfg: Config, split: str) -> str:
    """Where the good samples come from, e.g. ``data/synth/puck (validation split)``."""
    place = f"{cfg.data.root}/{cfg.data.category}" if cfg.data.category else cfg.data.root
    return f"{place} ({split} split)"


def calibrate(model: TRDModel, dataset: PairDataset, cfg: Config, device: torch.device,
              batch_size: int = 8) -> Calibration:
    """Fit the scorer statistics, thresholds, border check and reference on ``dataset`` (validation normals).

    Returns a :class:`Calibration` whose scorer is on ``device``; `trd.detector.Detector` puts the
    model, the scorer and the reference together.
    """
    model.eval()
    branches = list(model.students)
    stats = {b: BranchStats() for b in branches}
    scorer = Scorer.from_config(branches, cfg.score)
    good = _GoodStatistics(cfg.score.pixel_fpr, len(dataset), with_reference=True)
    for_stats, for_thresholds, approximate = stats_split(len(dataset), cfg.score.stats_share, len(branches))
    raw: dict[str, list[torch.Tensor]] = {b: [] for b in branches}
    foregrounds: list[torch.Tensor | None] = []
    rows: list[np.ndarray] = []
    # The raw maps are kept (on the host) so the second step does not rerun the model.
    for batch, maps in iterate_outputs(model.raw_maps, dataset, device, batch_size, cfg.data.num_workers):
        index = batch["index"].numpy()
        rows.append(index)
        foregrounds.append(scorer.foreground(batch["x3d"]))
        good.add_inputs(batch)
        keep = torch.from_numpy(for_stats[index])
        for b in branches:
            stats[b].update(maps[b][keep.to(maps[b].device)])
            raw[b].append(maps[b].float().cpu())
    scorer.set_stats(stats)
    with torch.inference_mode():
        for i, foreground in enumerate(foregrounds):
            good.add_outputs(scorer({b: raw[b][i] for b in branches}, foreground), for_thresholds[rows[i]])
    thresholds, border, reference = good.finish(cfg, threshold_source(cfg, "validation"), approximate)
    names = [sample_key(s) for s, used in zip(dataset.samples, for_stats, strict=True) if used]
    line = f"validation: normalisation statistics from {len(names)} sample(s), thresholds from " + (
        "the same ones (one branch: exact)" if len(branches) == 1 else
        "the same ones (approximate: score.stats_share = 1, or too few samples)" if approximate else
        f"the other {thresholds.n_validation} (exact)")
    return Calibration(scorer.to(device), thresholds, border, reference, good.image_scores(), names, line)


def rederive_thresholds(run: Runner, dataset: PairDataset, cfg: Config, device: torch.device, source: str,
                        with_reference: bool, batch_size: int = 8, approximate: bool = False) -> Calibration:
    """Thresholds, border check (and, with ``with_reference``, the reference) of a calibrated
    detector ``run`` on the good samples of ``dataset``; the scorer is left as it is (None here)."""
    good = _GoodStatistics(cfg.score.pixel_fpr, len(dataset), with_reference)
    for batch, out in iterate_outputs(run, dataset, device, batch_size, cfg.data.num_workers):
        good.add_inputs(batch)
        good.add_outputs(out)
    thresholds, border, reference = good.finish(cfg, source, approximate)
    return Calibration(None, thresholds, border, reference, good.image_scores())


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
                force: bool = False, batch_size: int = 8, device: str = "auto", log: Log = print) -> Path:
    """Re-derive the thresholds of ``model_path`` from the good samples of a dataset split.

    Args:
        model_path: a ``model.pt`` written by `fit` (or by an earlier ``calibrate``).
        data_root, category, fmt: the dataset (layout as for `fit`); default: the model's own.
        split: the split whose ``good`` samples are used (default "validation"; defective samples
            of the split are left out).
        out: the new model file; default ``<model>.calibrated.pt`` beside the model.
        target_fpr, pixel_fpr: requested rates; default: the model's ``score`` settings.
        overwrite: replace ``out`` if it exists (never the input model).
        force: calibrate on the model's own training split or on a test split anyway (refused
            otherwise: the promise would not hold, see the module docstring).
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
    own_data = _same_data(cfg, trained)
    _check_split(split, own_data, force, log)
    reference = InputStats.from_dict(extra.get("inputs"))
    samples = split_samples(cfg.data, split, camera_optional=camera_stored(reference))
    good = [s for s in samples if s.label == 0]
    if not good:
        raise TRDError(f"no good samples in {threshold_source(cfg, split)}")
    if len(good) < len(samples):
        log(f"calibrate: using the {len(good)} good samples of the split ({len(samples) - len(good)} defective left out)")
    approximate = False
    if own_data and split == "validation" and len(detector.branches) > 1:
        # The statistics came from (part of) this split: those samples are not like new ones.
        known = extra.get("stats_samples")
        fresh = [s for s in good if known is not None and sample_key(s) not in set(known)]
        if fresh:
            log(f"calibrate: leaving out the {len(good) - len(fresh)} sample(s) that gave the normalisation statistics")
            good = fresh
        else:
            approximate = True
    dataset = PairDataset(good, cfg.data, build_cache(cfg.data), reference)
    cal = rederive_thresholds(detector, dataset, cfg, dev, threshold_source(cfg, split),
                              with_reference=detector.reference is None, batch_size=batch_size,
                              approximate=approximate)
    _save(out, detector, trained, cal, extra, model_path, old)
    log(f"calibrate: previous thresholds: image {old.image:.4f}, pixel {old.pixel:.4f} ({old.source or 'validation'})")
    for line in cal.summary(cfg):
        log(line)
    log(f"calibrate: wrote {out}")
    return out


def _same_data(a: Config, b: Config) -> bool:
    """Whether two configs name the same dataset folder and category."""
    return (a.data.category == b.data.category and a.data.format == b.data.format
            and Path(a.data.root).resolve() == Path(b.data.root).resolve())


def _check_split(split: str, own_data: bool, force: bool, log: Log) -> None:
    """ConfigError for the model's own training split or a test split, unless ``force`` (then a warning)."""
    if split == "train" and own_data:
        why = ("--split train: these are the model's own training images; the students learnt them, so their scores "
               "are lower than a new good sample's and the thresholds would flag more good parts than promised")
    elif split == "test":
        why = ("--split test: the test split is there to measure the thresholds; chosen on it, the rates `trd test` "
               "reports are no longer an honest estimate")
    else:
        return
    if not force:
        raise ConfigError(f"{why}; use good samples the model has not seen (validation, or new scans with --data), "
                          "or --force")
    log(f"warning: {why} (--force)")


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


def write_image_threshold(model_path: Path, out: Path, thresholds: Thresholds) -> None:
    """A copy of the ``model.pt`` at ``model_path`` with ``thresholds`` (an image threshold set by
    hand, `Thresholds.with_image`), its previous ones in the history of calibrations; written to
    ``out`` atomically (the caller picks a new name)."""
    blob = load_checkpoint(model_path, "model")
    old = Thresholds.from_dict(blob["thresholds"])
    extra = dict(blob["extra"])
    extra["calibrations"] = [*extra.get("calibrations", []), {
        "from": str(model_path), "source": thresholds.source, "samples": thresholds.n_validation,
        "previous": old.to_dict(), "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}]
    payload = {k: v for k, v in blob.items() if k not in ("format", "version", "kind")}
    save_checkpoint(out, "model", payload | {"thresholds": thresholds.to_dict(), "extra": extra})
