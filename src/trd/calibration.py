"""Thresholds from good samples: everything a detector learns from defect-free scans after training.

At fit (:func:`calibrate`, on the validation split; never the test split):

1. Per-branch mean/std over all pixels of the raw maps (docs/METHOD.md §5.2) -> Scorer (also with
   ``score.foreground_only``, which restricts only where scores may come from).
   DEPARTURE (docs/METHOD_NOTES.md §15): from ``score.stats_share`` of the validation samples
   (evenly spread), not all of them, when the detector has two branches.
2. Deployment thresholds by the order-statistic rule (`trd.scoring.threshold`) on the OTHER
   validation samples (the model's validation pool, `Pool`): the image threshold from the image
   scores, the pixel threshold from each image's own ``score.pixel_fpr`` quantile. Their scores are
   then computed exactly as a new sample's (with statistics they did not shape), so the promise is
   exact. With one branch the z-score cannot reorder scores, and all samples give both; with
   ``stats_share = 1`` (the reference's normalisation) they give both too, and the statements say
   "approximate".
3. A border check: where the validation images' maxima sit (`trd.scoring.border`).
4. The good inputs that modality attribution takes nominal content from (`trd.detector.counterfactual`):
   up to ``BANK_SIZE`` validation inputs, evenly spread over the split.

After deployment (:func:`recalibrate`, the ``trd calibrate`` command): lines collect more good
scans, and more good samples give thresholds that promise lower false-positive rates. The model
keeps its validation pool (`Pool`: per good image its score, its pixel value and its content key,
and where the images came from); new good samples (a dataset split, or the scans labelled good in
a result store) are scored and ADDED to it, each scan once, and step 2 is repeated on the whole
pool (``replace`` starts a new pool instead, and says so). The normalisation statistics stay those
of the training run's validation split, so scores before and after stay comparable; the samples that
gave them are left out when they are among the new ones. The model's own training split (the
students learnt those images: their scores are too low) and any test split (it measures the
thresholds) are refused unless forced. The result is a NEW model file, written atomically; an
existing file is never replaced unless asked (``overwrite``), and the input model never.
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
from .data.identity import content_key
from .data.samples import Sample, split_samples, unlabelled_samples
from .detector import Detector, load_detector, save_detector
from .detector.counterfactual import BANK_SIZE
from .detector.passes import Runner, iterate_outputs
from .errors import ConfigError, TRDError
from .store import Retention, open_store
from .model.trd import TRDModel
from .scoring.border import BorderCheck, border_check, border_lines
from .scoring.maps import BranchStats, Scorer
from .scoring.threshold import Thresholds, check_rate, choose_thresholds, fpr_threshold
from .training.device import resolve_device

Log = Callable[[str], None]
#: Which scans of a result store `recalibrate` adds: every scan labelled good, or only false alarms.
STORE_LABELS = ("good", "false-alarm")


@dataclass
class Pool:
    """The good images thresholds are chosen on, one entry each: image score, pixel value (the value
    ``score.pixel_fpr`` of its own pixels exceed) and content key (so no scan is added twice); and
    ``sources``: ``[{"source", "samples"}]``, where they came from. Stored in the model's extra
    record (`to_extra`); ``validation_scores`` at full precision is what `trd serve`'s page explores."""

    scores: list[float]
    pixel_values: list[float]
    keys: list[str]
    sources: list[dict[str, Any]]
    approximate: bool = False  # some of them also gave the normalisation statistics

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> Pool | None:
        """The model's pool; None for models of an older trd, which stored no pixel values or keys."""
        scores, pixels, keys = (extra.get(k) for k in ("validation_scores", "validation_pixel_values",
                                                        "validation_keys"))
        if not (scores and pixels and keys) or not len(scores) == len(pixels) == len(keys):
            return None
        return cls([float(v) for v in scores], [float(v) for v in pixels], list(keys),
                   list(extra.get("validation_sources", [])), bool(extra.get("validation_approximate", False)))

    def add(self, other: Pool) -> None:
        self.scores += other.scores
        self.pixel_values += other.pixel_values
        self.keys += other.keys
        self.sources += other.sources
        self.approximate = self.approximate or other.approximate

    def source(self) -> str:
        """E.g. ``data/puck (validation split)`` or ``10 of data/puck (validation split) + 6 of ...``."""
        if len(self.sources) == 1:
            return self.sources[0]["source"]
        return " + ".join(f"{s['samples']} of {s['source']}" for s in self.sources)

    def thresholds(self, cfg: Config) -> Thresholds:
        if not self.scores:
            raise TRDError("no good samples to calibrate on")
        return choose_thresholds(np.asarray(self.scores), np.asarray(self.pixel_values), cfg.score.target_fpr,
                                 cfg.score.pixel_fpr, self.source(), self.approximate)

    def to_extra(self) -> dict[str, Any]:
        return {"validation_scores": [float(v) for v in self.scores],
                "validation_pixel_values": [float(v) for v in self.pixel_values],
                "validation_keys": list(self.keys), "validation_sources": list(self.sources),
                "validation_approximate": self.approximate}


def sample_keys(samples: list[Sample]) -> list[str]:
    """The content key of each sample (`trd.data.identity.content_key`)."""
    return [content_key(s.rgb, s.xyz, s.camera) for s in samples]


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


@dataclass
class Calibration:
    """What good samples tell about a detector: its scorer, thresholds, border check, reference and pool.

    ``reference``: ``{"rgb": KxCxSxS, "x3d": KxCxSxS}`` good inputs (CPU float32), or None where
    they were not collected (a model that already has them).
    """

    scorer: Scorer | None
    thresholds: Thresholds
    border: BorderCheck | None
    reference: dict[str, Tensor] | None
    pool: Pool
    stats_keys: list[str] | None = None  # content keys of the samples that gave the statistics (fit only)
    split_line: str = ""  # which validation samples gave the statistics and which the thresholds (fit only)

    def summary(self, cfg: Config) -> list[str]:
        """Log lines: which samples gave what, what the thresholds promise (and why not more), then
        the border check."""
        lines = [self.split_line] if self.split_line else []
        return [*lines, *self.thresholds.statements(), *(border_lines(self.border, cfg) if self.border else [])]


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

    def pool(self, source: str, keys: list[str], approximate: bool = False) -> Pool:
        """The images scored for the thresholds as a pool (``keys``: their content keys, in dataset order)."""
        scores = [float(v) for v in np.concatenate(self.scores)] if self.scores else []
        return Pool(scores, list(self.pixel_values), keys, [{"source": source, "samples": len(keys)}], approximate)

    def border(self) -> BorderCheck:
        return border_check(np.concatenate(self.argmax), self.size)

    def reference(self) -> dict[str, Tensor] | None:
        return {k: torch.stack(v) for k, v in self.bank.items()} if self.keep else None


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
    order = np.concatenate(rows) if rows else np.zeros(0, int)  # dataset rows in the order they were scored
    keys = sample_keys(dataset.samples)
    pool = good.pool(threshold_source(cfg, "validation"), [keys[i] for i in order if for_thresholds[i]], approximate)
    thresholds = pool.thresholds(cfg)
    stats_keys = [k for k, used in zip(keys, for_stats, strict=True) if used]
    line = f"validation: normalisation statistics from {len(stats_keys)} sample(s), thresholds from " + (
        "the same ones (one branch: exact)" if len(branches) == 1 else
        "the same ones (approximate: score.stats_share = 1, or too few samples)" if approximate else
        f"the other {thresholds.n_validation} (exact)")
    return Calibration(scorer.to(device), thresholds, good.border(), good.reference(), pool, stats_keys, line)


def _score_good(run: Runner, dataset: PairDataset, cfg: Config, device: torch.device, source: str,
                with_reference: bool, batch_size: int) -> _GoodStatistics:
    """Image scores, pixel values and maxima (and, with ``with_reference``, good inputs) of a
    calibrated detector ``run`` on the good samples of ``dataset``; the scorer is left as it is."""
    good = _GoodStatistics(cfg.score.pixel_fpr, len(dataset), with_reference)
    for batch, out in iterate_outputs(run, dataset, device, batch_size, cfg.data.num_workers):
        good.add_inputs(batch)
        good.add_outputs(out)
    return good


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


def _store_samples(target: str, files: str | None, labels: str, cfg: Config, log: Log,
                   camera_optional: bool = False) -> tuple[list[Sample], str]:
    """The scans a result store says are good (``labels``: "good", every scan labelled good;
    "false-alarm": only those the model that scored them had flagged), each once, as samples of
    ``cfg``'s model, and a description of the source. Scans are rescored by the caller, so scans
    scored by another model are as good as any; scans without stored files are left out, and said so."""
    store = open_store(target, files, Retention(), log)  # no retention pass: calibrate only reads
    samples, seen, missing = [], set(), 0
    try:
        for stored in store.iterate(label="good", decision="anomalous" if labels == "false-alarm" else None):
            folder = store.folder(stored)
            rgb, x3d = (next(folder.glob(f"{n}.*"), None) for n in ("rgb", "3d")) if folder else (None, None)
            if stored.key in seen or rgb is None or x3d is None:
                missing += stored.key not in seen
                continue
            seen.add(stored.key)
            camera = folder / "camera.json"
            found, _ = unlabelled_samples(cfg.data, rgb=rgb, xyz=x3d, camera=camera if camera.is_file() else None,
                                          camera_optional=camera_optional)
            samples.append(found[0])
    finally:
        store.close()
    what = "false alarms" if labels == "false-alarm" else "scans labelled good"
    if missing:
        log(f"calibrate: {missing} of the {what} in {store.where} have no stored files (removed?); left out")
    return samples, f"{what} in {store.where}"


def recalibrate(model_path: str | Path, *, data_root: str | Path | None = None, split: str = "validation",
                category: str | None = None, fmt: str | None = None, store: str | None = None,
                store_files: str | None = None, store_labels: str = "good", replace: bool = False,
                out: str | Path | None = None, target_fpr: float | None = None, pixel_fpr: float | None = None,
                overwrite: bool = False, force: bool = False, batch_size: int = 8, device: str = "auto",
                log: Log = print) -> Path:
    """Add new good samples to the validation pool of ``model_path`` and re-derive its thresholds.

    Args:
        model_path: a ``model.pt`` written by `fit` (or by an earlier ``calibrate``).
        data_root, category, fmt: a dataset (layout as for `fit`) whose ``split`` holds new good
            samples; default: the model's own, unless ``store`` is given.
        split: the split whose ``good`` samples are used (default "validation"; defective samples
            of the split are left out).
        store, store_files: a result store (`trd.store`) whose scans labelled good are added
            (rescored with this model); ``store_labels``: "good" (every scan labelled good) or
            "false-alarm" (only those that had been flagged).
        replace: start a new pool from the new samples instead of adding to the model's.
        out: the new model file; default ``<model>.calibrated.pt`` beside the model.
        target_fpr, pixel_fpr: requested rates; default: the model's ``score`` settings.
        overwrite: replace ``out`` if it exists (never the input model).
        force: calibrate on the model's own training split or on a test split anyway (refused
            otherwise: the promise would not hold, see the module docstring).
        batch_size, device: as for `evaluate`.
        log: receives the old and the new thresholds with what they promise.

    A model written by an older trd stores no per-image pixel values: its pool is rebuilt by
    rescoring its own validation split (ConfigError where that cannot be read: use ``replace``).

    Returns:
        The path written.

    Example:
        >>> from trd import api
        >>> api.calibrate("runs/puck/model.pt", store="runs/puck/results.db")  # doctest: +SKIP
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
    if store_labels not in STORE_LABELS:
        raise ConfigError(f"--store-labels {store_labels!r}: expected one of {', '.join(STORE_LABELS)}")
    dev = resolve_device(device)
    detector, trained, old, extra = load_detector(model_path, dev)
    score = dataclasses.replace(trained.score, target_fpr=old.target_fpr if target_fpr is None else target_fpr,
                                pixel_fpr=old.pixel_fpr if pixel_fpr is None else pixel_fpr)
    trained = dataclasses.replace(trained, score=score)  # the model keeps its training data settings
    cfg = _data_config(trained, data_root, category, fmt)
    inputs = InputStats.from_dict(extra.get("inputs"))
    two_branches = len(detector.branches) > 1
    # (good samples, source, preprocessing cache, whether they also gave the normalisation statistics)
    batches: list[tuple[list[Sample], str, Any, bool]] = []
    if store is None or data_root is not None:
        _check_split(split, _same_data(cfg, trained), force, log)
        samples = split_samples(cfg.data, split, camera_optional=camera_stored(inputs))
        good = [s for s in samples if s.label == 0]
        if len(good) < len(samples):
            log(f"calibrate: using the {len(good)} good samples of the split ({len(samples) - len(good)} defective left out)")
        batches.append((good, threshold_source(cfg, split), build_cache(cfg.data), False))
    if store is not None:
        batches.append((*_store_samples(store, store_files, store_labels, trained, log, camera_stored(inputs)), None, False))
    pool = None if replace else Pool.from_extra(extra)
    if pool is None and not replace:  # an older model: rebuild its pool from its validation split
        own = ([s for s in split_samples(trained.data, "validation", camera_optional=camera_stored(inputs))
                if s.label == 0] if _readable(trained) else [])
        if not own:
            raise ConfigError(f"{model_path} was written by an older trd and stores no per-image values of its "
                              f"validation samples, and its validation split ({threshold_source(trained, 'validation')}) "
                              "cannot be read to rebuild them: pass --replace to choose the thresholds on the new "
                              "samples alone")
        log(f"calibrate: {model_path} stores no per-image pixel values (older trd): its validation pool is rebuilt "
            f"by rescoring its validation split")
        # An older trd took the statistics from all of them: on two branches the promise is approximate.
        batches.insert(0, (own, threshold_source(trained, "validation"), build_cache(trained.data), two_branches))
    pool = pool or Pool([], [], [], [])
    gave_stats = set(extra.get("stats_keys") or []) if two_branches else set()
    scored = None
    for samples, source, cache, shaped in batches:
        if not samples:
            raise TRDError(f"no good samples in {source}")
        keys, known, fresh, left_out = sample_keys(samples), set(pool.keys), [], 0
        for i, key in enumerate(keys):
            if key in gave_stats and not shaped:  # not like a new scan: the statistics were fitted to it
                left_out += 1
            elif key not in known:
                known.add(key)
                fresh.append(i)
        if left_out:
            log(f"calibrate: leaving out the {left_out} sample(s) of {source} that gave the normalisation statistics")
        if len(fresh) + left_out < len(samples):
            log(f"calibrate: {len(samples) - len(fresh) - left_out} of the {len(samples)} samples of {source} are in "
                "the pool already; each scan counts once")
        if not fresh:
            continue
        dataset = PairDataset([samples[i] for i in fresh], cfg.data, cache, inputs)
        scored = _score_good(detector, dataset, cfg, dev, source, detector.reference is None and scored is None,
                             batch_size)
        detector.reference = detector.reference if detector.reference is not None else scored.reference()
        pool.add(scored.pool(source, [keys[i] for i in fresh], shaped))
    kept = BorderCheck.from_dict(extra["border_check"]) if "border_check" in extra and not replace else None
    border = kept or (scored.border() if scored is not None else None)
    cal = Calibration(None, pool.thresholds(cfg), border, detector.reference, pool)
    _save(out, detector, trained, cal, extra, model_path, old, replace)
    log(f"calibrate: before: {'; '.join(old.statements()[:1])} (threshold {old.image:.4f}, pixel {old.pixel:.4f})")
    log(f"calibrate: after ({'a new pool' if replace else 'the pool with the new samples added'}):")
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


def _readable(cfg: Config) -> bool:
    return bool(cfg.data.root) and Path(cfg.data.root).is_dir()


def _save(out: Path, detector: Detector, cfg: Config, cal: Calibration, extra: dict[str, Any], model_path: Path,
          old: Thresholds, replace: bool) -> None:
    """The same model with the new thresholds, pool, border check and history of calibrations."""
    history = [*extra.get("calibrations", []), {
        "from": str(model_path), "source": cal.thresholds.source, "samples": cal.thresholds.n_validation,
        "pool": "replaced" if replace else "added", "previous": old.to_dict(),
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}]
    border = {"border_check": cal.border.to_dict()} if cal.border is not None else {}
    save_detector(out, detector, cfg, cal.thresholds, extra=extra | border | {"calibrations": history} |
                  cal.pool.to_extra())


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
