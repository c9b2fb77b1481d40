"""What a long job will cost on this device: a short timed warm-up, then arithmetic (hours, disk).

`trd reproduce` prints it before it starts. `warm_up` builds the run's model on the run's device
with the run's settings, times the teachers' forward, one training step of every student and the
inference forward on random inputs of the configured size, reads and preprocesses one real sample,
renders one sample's report pictures and saves a 256 MiB tensor the way a checkpoint is saved (torch.save,
fsync, rename) into the output folder. `estimate` turns these figures and the sample counts into
seconds and bytes; `describe` says it in a few lines. Not counted: the overlap of data loading with
compute, and evaluation's metric computation (AU-PRO, seconds per category).
"""

from __future__ import annotations

import gc
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_save
from ..config import Config
from ..data.dataset import PairDataset
from ..data.readers import reader
from ..data.samples import Sample
from ..reporting.figures import save_sample_images
from ..training.device import DistInfo, autocast, seed_all
from ..training.trainer import Trainer, checkpoint_due
from ..training.teacher_cache import teacher_cache_bytes

#: Pairs per timed training step on a CPU (a paper-sized step at batch 16 takes minutes there);
#: the time per pair hardly depends on the batch on a CPU. On a GPU the configured batch is used.
CPU_WARMUP_BATCH = 2
PROBE_BYTES = 256 * 2**20


@dataclass(frozen=True)
class CategoryWork:
    """One category of a job: its sample counts and what is left to do."""

    name: str
    n_train: int
    n_validation: int
    n_test: int
    epochs_left: int  # 0: trained already (evaluation left, or nothing when done)
    done: bool = False


@dataclass(frozen=True)
class Warmup:
    """Measured on this device: seconds per pair, bytes per file, write speed."""

    seconds: float  # the warm-up's own wall time
    batch: int  # pairs per timed call
    teacher_s: float  # both teachers' forward, per pair
    step_s: float  # one optimisation step of every student, per pair
    infer_s: float  # teachers + students, inference, per pair
    load_s: float  # read + preprocess one pair (no cache)
    write_bytes_per_s: float  # an fsync'ed write into the output folder
    state_bytes: int  # the train state (students, optimiser moments)
    model_bytes: int  # model.pt
    cache_bytes_per_pair: int  # preprocessing cache entry (0 where nothing is cached)
    panel_bytes: int  # one test sample's report pictures (PNGs)


@dataclass(frozen=True)
class Estimate:
    seconds: dict[str, float]  # training, checkpoints, loading, evaluation
    out_bytes: int  # the run folders at the end (model.pt, reports)
    state_bytes: int  # train state on disk while a category trains (all of them with keep_state)
    cache_bytes: int  # the preprocessing cache (in data.cache_dir)

    @property
    def total_s(self) -> float:
        return sum(self.seconds.values())


def _nbytes(obj: Any) -> int:
    """Bytes of every tensor in a nested dict/list (what torch.save writes, up to small overheads)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_nbytes(v) for v in obj)
    return 0


def _per_call(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of one call after one untimed call (which absorbs lazy set-up, compilation)."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _write_speed(folder: Path) -> float:
    """Bytes/s of saving PROBE_BYTES of float32 into ``folder`` as a checkpoint is saved (torch.save
    into a temporary file, fsync, rename). Multi-GB writes can be slower once the disk cache fills."""
    probe = folder / f".trd-write-probe-{os.getpid()}.pt"
    tensor = torch.rand(PROBE_BYTES // 4)  # incompressible, as weights are
    start = time.perf_counter()
    try:
        atomic_save(probe, lambda fh: torch.save(tensor, fh))
        return PROBE_BYTES / max(time.perf_counter() - start, 1e-9)
    finally:
        probe.unlink(missing_ok=True)


def _sample_costs(cfg: Config, sample: Sample, folder: Path) -> tuple[float, int, int]:
    """(seconds to load one pair without cache, cache bytes per pair, bytes of its report pictures)."""
    dataset = PairDataset([sample], cfg.data, None)
    start = time.perf_counter()
    item = dataset[0]
    load_s = time.perf_counter() - start
    cached = 0 if not reader(sample.xyz_kind).cloud else item["x3d"].numel() * 4 + 128  # .npy float32
    rgb, x3d, _ = dataset.load_raw(0)
    stand_in = x3d.mean(axis=0)  # a smooth map shaped like the real ones
    probe = folder / f".trd-pictures-probe-{os.getpid()}"
    try:
        pictures = save_sample_images(probe, "sample", rgb=rgb, x3d=x3d, gt=None, anomaly_map=stand_in,
                                      branch_maps={"rgb": stand_in, "geo": stand_in}, scale=(0.0, 1.0, 0.5),
                                      outlines=[])
        return load_s, cached, sum((probe / p.path).stat().st_size for p in pictures)
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def warm_up(cfg: Config, device: torch.device, sample: Sample, folder: Path) -> Warmup:
    """Time the run's model on ``device`` (see the module docstring); ``sample``: one real pair.

    Example:
        >>> w = warm_up(cfg, torch.device("cuda"), train_samples[0], Path("runs/paper"))  # doctest: +SKIP
        >>> round(w.step_s, 3)  # doctest: +SKIP
        0.021
    """
    start = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    seed_all(cfg.train.seed)
    trainer = Trainer(cfg, device, DistInfo(), log=lambda _: None)
    batch = cfg.train.batch_size if device.type == "cuda" else min(cfg.train.batch_size, CPU_WARMUP_BATCH)
    size = cfg.data.image_size
    fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    rgb, x3d = (torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt) for _ in range(2))
    model = trainer.model

    def teachers() -> dict[str, list[torch.Tensor]]:
        with torch.no_grad(), autocast(device, trainer.dtype):
            return model.teacher_features(rgb, x3d)

    teacher_s = _per_call(teachers, device) / batch
    feats = teachers()
    model.students.train()
    step_s = _per_call(lambda: trainer.step(feats), device) / batch
    state_bytes = _nbytes(trainer.state())
    model_bytes = _nbytes(model.students.state_dict())
    if cfg.model.weights != "imagenet":  # model.pt then holds the teachers too (trd.detector)
        model_bytes += sum(_nbytes(t.state_dict()) for t in (model.teacher_rgb, model.teacher_geo) if t is not None)
    model.eval()

    def infer() -> None:
        with torch.inference_mode(), autocast(device, trainer.dtype):
            model.raw_maps(rgb, x3d)

    infer_s = _per_call(infer, device) / batch
    del trainer, model, feats, rgb, x3d
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    load_s, cache_bytes, panel_bytes = _sample_costs(cfg, sample, folder)
    return Warmup(seconds=time.perf_counter() - start, batch=batch, teacher_s=teacher_s, step_s=step_s,
                  infer_s=infer_s, load_s=load_s, write_bytes_per_s=_write_speed(folder),
                  state_bytes=state_bytes, model_bytes=model_bytes, cache_bytes_per_pair=cache_bytes,
                  panel_bytes=panel_bytes)


def _state_writes(epochs_left: int, train_s: float, cfg: Config) -> int:
    """How many times the train state is written over ``epochs_left`` epochs of ``train_s`` seconds."""
    if epochs_left <= 0:
        return 0
    t = cfg.train
    epoch_min = train_s / epochs_left / 60
    writes, since = 0, 0.0
    for epoch in range(t.epochs - epochs_left + 1, t.epochs + 1):
        since += epoch_min
        if checkpoint_due(epoch, since, t):
            writes, since = writes + 1, 0.0
    return writes


def estimate(work: list[CategoryWork], cfg: Config, w: Warmup) -> Estimate:
    """Seconds and bytes of the work left, from the warm-up figures (pure arithmetic).

    Training: every epoch runs each training pair through one student step; the teachers run once
    per pair when their features fit the cache (``train.cache_teacher``), else every epoch. The
    preprocessing runs once per pair with the preprocessing cache, every epoch without it.
    Evaluation: the validation and test pairs through the model, plus their loading. Checkpoints:
    the state's bytes at the measured write speed, as often as `checkpoint_due` says.

    Example:
        >>> est = estimate([CategoryWork("bagel", 244, 22, 110, 200)], cfg, warmup)  # doctest: +SKIP
        >>> est.total_s / 3600  # doctest: +SKIP
        1.7
    """
    seconds = dict.fromkeys(("training", "checkpoints", "loading", "evaluation"), 0.0)
    out_bytes = cache_bytes = 0
    pcache = cfg.data.cache_dir != "none"
    for c in work:
        n_eval = c.n_validation + c.n_test
        out_bytes += w.model_bytes + c.n_test * w.panel_bytes
        cache_bytes += (c.n_train + n_eval) * w.cache_bytes_per_pair if pcache else 0
        if c.done:
            continue
        e = c.epochs_left
        fits = cfg.train.cache_teacher and (
            teacher_cache_bytes(cfg, c.n_train, torch.float32) / 2**30 <= cfg.train.teacher_cache_gb)
        teacher_runs = min(e, 1) if fits else e
        train_s = c.n_train * (e * w.step_s + teacher_runs * w.teacher_s)
        seconds["training"] += train_s
        seconds["checkpoints"] += _state_writes(e, train_s, cfg) * w.state_bytes / w.write_bytes_per_s
        loads = (min(e, 1) if pcache or fits else e) * c.n_train + n_eval
        seconds["loading"] += loads * w.load_s
        seconds["evaluation"] += n_eval * w.infer_s
    n_states = sum(1 for c in work if not c.done) if cfg.train.keep_state else 1
    return Estimate(seconds, out_bytes, n_states * w.state_bytes if any(not c.done for c in work) else 0,
                    cache_bytes)


def _hours(seconds: float) -> str:
    if seconds >= 360:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def describe(work: list[CategoryWork], cfg: Config, device: torch.device, w: Warmup | None,
             est: Estimate | None, out: Path) -> str:
    """The plan and the estimate as printed before a job starts, e.g. "10 categories x 200 epochs, ~N h, ~M GB"."""
    t, d, m = cfg.train, cfg.data, cfg.model
    left = [c for c in work if not c.done]
    lines = [f"plan: {len(work)} categories x {t.epochs} epochs ({m.backbone} @ {d.image_size} px, "
             f"{d.modality_3d}, batch {t.batch_size}, {t.precision}) on {device}"]
    done = [c.name for c in work if c.done]
    resumed = [f"{c.name} ({t.epochs - c.epochs_left}/{t.epochs} epochs done)" for c in left if c.epochs_left < t.epochs]
    if done:
        lines.append(f"  finished, skipped: {', '.join(done)}")
    if resumed:
        lines.append(f"  resumed: {', '.join(resumed)}")
    lines.append(f"  pairs: train {sum(c.n_train for c in work)}, validation {sum(c.n_validation for c in work)}, "
                 f"test {sum(c.n_test for c in work)}")
    if w is None or est is None:
        lines.append("  estimate: none (nothing left to do)" if not left else "  estimate: not measured")
        return "\n".join(lines)
    lines.append(f"  warm-up ({w.seconds:.0f} s, batch {w.batch}): training step {w.step_s:.3g} s/pair, "
                 f"teachers {w.teacher_s:.3g} s/pair, inference {w.infer_s:.3g} s/pair, loading "
                 f"{w.load_s:.3g} s/pair, disk writes {w.write_bytes_per_s / 1e6:.0f} MB/s")
    parts = ", ".join(f"{k} {_hours(v)}" for k, v in est.seconds.items() if v > 0)
    lines.append(f"  estimate: {len(left)} categories x {t.epochs} epochs, ~{_hours(est.total_s)} on this device "
                 f"({parts}); disk ~{_gb(est.out_bytes)} in {out}, +{_gb(est.state_bytes)} train state while "
                 f"a category trains (train.keep_state={str(t.keep_state).lower()}), "
                 f"+{_gb(est.cache_bytes)} preprocessing cache")
    state_write = w.state_bytes / w.write_bytes_per_s
    lines.append(f"  checkpoints: {_gb(w.state_bytes)} per write (~{state_write:.0f} s at the probe's speed), every "
                 f"{t.checkpoint_minutes:g} min of training and after the last epoch; state.pt is removed "
                 f"once model.pt is written")
    return "\n".join(lines)
