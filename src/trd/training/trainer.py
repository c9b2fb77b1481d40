"""The training loop (docs/METHOD.md §4): one teacher pass, then each student forward/backward/step in turn.

Resumable: ``state.pt`` is rewritten atomically at epoch boundaries, by wall time (`checkpoint_due`:
every ``train.checkpoint_minutes``, and after the last epoch; a paper-sized state is 4.6 GB, so
writing it every epoch would dominate a GPU run); the shuffle order of epoch ``e`` depends only on
(seed, e), so a run killed at any point and resumed from its last state ends with the same weights
as an uninterrupted one (on CPU; docs/REPRODUCIBILITY.md says what holds on GPUs).

Under ``torchrun`` (N processes) ``train.batch_size`` stays the global batch: each rank takes
batch_size / N samples per step. DistributedSampler shuffles the same permutation as one process
(seeded by seed + epoch) and gives rank r the positions r, r + N, r + 2N, ..., so the union of the
ranks' step-k shards is exactly the single-process batch k. With every BatchNorm synchronised
(`runtime.sync_batchnorm`) and DDP averaging the gradients of equally sized shards, a step equals
the single-process step up to float summation order. One difference remains: when the number of
training samples is not divisible by N, the sampler pads each rank's share to the same length by
repeating the first samples of the permutation, so the last step sees up to N - 1 duplicates.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from ..config import Config, TrainConfig, resume_differences
from ..data.dataset import PairDataset, SkipBad, collate_skipping_bad
from ..errors import CheckpointError, ConfigError, DataError
from ..model.trd import TRDModel, build_model
from ..console import duration
from ..checkpoint import load_checkpoint, load_state_dict_strict, save_checkpoint
from .loss import student_loss
from .device import DistInfo, autocast, barrier, mean_over_ranks, rank0_value, resolve_precision, sync_batchnorm
from .teacher_cache import TeacherCache

Log = Callable[[str], None]


def check_resumable(saved: dict[str, Any], cfg: Config, path: Path) -> None:
    """A state written under settings that change the weights must not be silently continued."""
    differences = resume_differences(saved, cfg)
    if differences:
        raise CheckpointError(path, f"was written with other settings ({'; '.join(differences)}); use the "
                                    "same settings, another --out, or --no-resume to start over")


def check_finished(model_path: Path, cfg: Config) -> None:
    """Refuse a final ``model.pt`` (whose train state is gone) that is not what ``cfg`` would train.

    Its config must pass the resume check and have the same number of epochs: without the
    optimiser state a finished run cannot be continued to more epochs.
    """
    saved = load_checkpoint(model_path, "model", mmap=True)["config"]
    check_resumable(saved, cfg, model_path)
    if saved["train"]["epochs"] != cfg.train.epochs:
        raise CheckpointError(model_path, f"is final after train.epochs={saved['train']['epochs']} and its train "
                                          "state was removed (train.keep_state=false); to train "
                                          f"{cfg.train.epochs} epochs use a new run folder or --no-resume")


def checkpoint_due(epoch: int, minutes_since_write: float, t: TrainConfig) -> bool:
    """Whether the train state is written after ``epoch`` (1-based): always after the last one;
    before, at a multiple of ``t.checkpoint_every`` once ``t.checkpoint_minutes`` of wall time have
    passed since the last write (or the start of this process).

    Example:
        >>> t = TrainConfig(epochs=200, checkpoint_minutes=10.0)
        >>> checkpoint_due(5, 3.0, t), checkpoint_due(6, 10.5, t), checkpoint_due(200, 0.1, t)
        (False, True, True)
    """
    if epoch >= t.epochs:
        return True
    return epoch % t.checkpoint_every == 0 and minutes_since_write >= t.checkpoint_minutes


def diverged(cfg: Config, student: str, loss: float, epoch: int) -> str:
    """Why training stopped at a non-finite loss, naming the settings that cause it."""
    causes = [f"train.lr={cfg.train.lr:g} is probably too high (default {TrainConfig.lr:g})"]
    if cfg.train.precision != "fp32":
        causes.append(f"train.precision={cfg.train.precision} may overflow (fp32 does not)")
    return (f"training stopped in epoch {epoch}: the {student} student's loss is {loss} (diverged); "
            f"{'; '.join(causes)}. Nothing of this epoch was saved")


#: Entries of an epoch's history record that measure time, so differ between identical runs.
TIMING_KEYS = frozenset({"seconds", "pairs_per_s"})


def _batches(loader: DataLoader, sampler: DistributedSampler, batch_size: int, cached: bool) -> Iterator[dict[str, Any]]:
    """Loader batches; once every teacher feature is cached, just the index batches (no file I/O)."""
    if not cached:
        for batch in loader:
            errors = batch.pop("errors")
            if errors:  # raised here, not in a worker: torch cannot rebuild a DataError from a worker
                raise DataError(*errors[0][1])
            yield batch
        return
    order = torch.tensor(list(iter(sampler)), dtype=torch.int64)
    for chunk in order.split(batch_size):
        yield {"index": chunk}


class Trainer:
    """Owns the model, the two optimisers and schedules, and the resumable state of one run."""

    def __init__(self, cfg: Config, device: torch.device, info: DistInfo, log: Log = print) -> None:
        if cfg.train.batch_size % info.world:
            raise ConfigError(f"train.batch_size={cfg.train.batch_size} must be divisible by the {info.world} processes")
        self.cfg, self.device, self.info, self.log = cfg, device, info, log
        self.dtype = resolve_precision(cfg.train.precision, device)
        self.model: TRDModel = build_model(cfg.model, cfg.data.image_size).to(device)
        if cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.students: dict[str, torch.nn.Module] = dict(self.model.students.items())
        if info.world > 1:
            # One DDP wrapper per student: each is stepped on its own, and every parameter of a
            # student gets a gradient from its loss, so find_unused_parameters is not needed.
            ids = [device.index] if device.type == "cuda" else None
            for name in self.students:
                self.model.students[name] = sync_batchnorm(self.model.students[name], device)
            self.students = {name: DistributedDataParallel(s, device_ids=ids)
                             for name, s in self.model.students.items()}
        if cfg.train.compile:
            self.students = {name: torch.compile(s) for name, s in self.students.items()}
        t = cfg.train
        self.optimizers = {
            name: torch.optim.Adam(s.parameters(), lr=t.lr, betas=tuple(t.betas), fused=t.fused_adam or None)
            for name, s in self.model.students.items()
        }
        self.schedulers = {
            name: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=t.gamma) for name, opt in self.optimizers.items()
        }
        self.epoch = 0
        self.history: list[dict[str, Any]] = []

    # -- resumable state -------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "history": self.history,
            "students": self.model.students.state_dict(),
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
        }

    def save_state(self, path: Path) -> None:
        """Rank 0 writes (and logs size and time); the others wait, so no rank is ahead of the saved state."""
        if self.info.is_main:
            start = time.perf_counter()
            save_checkpoint(path, "train_state", self.state())
            self.log(f"train state written after epoch {self.epoch}: {path} "
                     f"({path.stat().st_size / 2**30:.2f} GiB in {time.perf_counter() - start:.1f}s)")
        barrier(self.info)

    def load_state(self, path: Path) -> None:
        """Every rank loads the same state (the students' replicas stay identical)."""
        blob = load_checkpoint(path, "train_state", map_location=self.device, mmap=True)
        check_resumable(blob["config"], self.cfg, path)
        load_state_dict_strict(self.model.students, blob["students"], path, "student weights")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(blob["optimizers"][name])
            self.schedulers[name].load_state_dict(blob["schedulers"][name])
        self.epoch, self.history = int(blob["epoch"]), list(blob["history"])

    # -- the loop --------------------------------------------------------------------------
    def step(self, feats: dict[str, list[torch.Tensor]]) -> dict[str, float]:
        """One optimisation step of every student, one after the other (one graph alive at a time)."""
        targets = self.model.branch_targets(feats)
        losses = {}
        for name, student in self.students.items():
            main, assist = self.model.student_inputs(name, feats)
            opt = self.optimizers[name]
            opt.zero_grad(set_to_none=True)
            with autocast(self.device, self.dtype):
                out = student(main, assist)
            loss = student_loss(out, targets[name])
            losses[name] = float(loss.detach())
            # Every later step would be NaN too: stop before stepping. Under DDP every rank decides on the
            # mean over ranks (NaN spreads through it), so no rank waits in backward's all-reduce for one
            # that stopped.
            agreed = mean_over_ranks({name: losses[name]}, self.info, self.device)[name]
            if not math.isfinite(agreed):
                raise ConfigError(diverged(self.cfg, name, agreed, self.epoch + 1))
            loss.backward()
            opt.step()
        return losses

    def fit(self, dataset: PairDataset, state_path: Path, progress: bool = True) -> None:
        t = self.cfg.train
        per_rank = t.batch_size // self.info.world
        sampler = DistributedSampler(
            dataset, num_replicas=self.info.world, rank=self.info.rank, shuffle=True, seed=t.seed, drop_last=False
        )
        loader = DataLoader(
            SkipBad(dataset), batch_size=per_rank, sampler=sampler, num_workers=self.cfg.data.num_workers,
            collate_fn=collate_skipping_bad,
            pin_memory=self.device.type == "cuda", persistent_workers=self.cfg.data.num_workers > 0,
        )
        tcache = TeacherCache(self.model, len(dataset), self.cfg, self.device, self.log if self.info.is_main else None)
        self.model.students.train()
        last_write = time.monotonic()
        for epoch in range(self.epoch, t.epochs):
            sampler.set_epoch(epoch)
            start, seen, sums = time.perf_counter(), 0, {n: 0.0 for n in self.students}
            batches = _batches(loader, sampler, per_rank, tcache.complete)
            bar = tqdm(batches, total=len(loader), desc=f"epoch {epoch + 1}/{t.epochs}", leave=False,
                       disable=not (progress and self.info.is_main), unit="batch")
            for n_batches, batch in enumerate(bar, 1):
                feats = tcache.features(batch, self.dtype)
                losses = self.step(feats)
                # Padding duplicates (see the module docstring) are counted: they are computed too.
                seen += len(batch["index"]) * self.info.world
                for name, value in losses.items():
                    sums[name] += value
                rate = seen / (time.perf_counter() - start)
                bar.set_postfix({**{f"loss_{k}": f"{v:.4f}" for k, v in losses.items()}, "pairs/s": f"{rate:.1f}"})
            for sched in self.schedulers.values():
                sched.step()
            # Each rank's loss is the mean over its shard; the shards are equally sized, so their mean
            # is the loss of the global batch, as one process would log it.
            means = mean_over_ranks({k: v / n_batches for k, v in sums.items()}, self.info, self.device)
            seconds = time.perf_counter() - start
            self.epoch = epoch + 1
            record = {"epoch": self.epoch, "seconds": round(seconds, 3), "pairs_per_s": round(seen / seconds, 3),
                      **{f"loss_{k}": v for k, v in means.items()}}
            self.history.append(record)
            if self.info.is_main:
                # The estimate: the epochs still to run times the last epoch's time (the first
                # epoch also fills the teacher cache, so the next ones are faster), updated each epoch.
                todo = t.epochs - self.epoch
                left = f"  ~{duration(seconds * todo)} of training left at this epoch's pace" if todo else ""
                self.log("epoch {epoch}/{total}: {losses}  {seconds:.1f}s  {rate:.1f} pairs/s{left}".format(
                    epoch=self.epoch, total=t.epochs, seconds=seconds, rate=record["pairs_per_s"], left=left,
                    losses="  ".join(f"loss_{k}={v:.4f}" for k, v in means.items())))
            # Every rank takes rank 0's clock, so all of them agree on whether to write.
            minutes = rank0_value((time.monotonic() - last_write) / 60, self.info, self.device)
            if checkpoint_due(self.epoch, minutes, t):
                self.save_state(state_path)
                last_write = time.monotonic()
        self.model.eval()
