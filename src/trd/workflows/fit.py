"""``trd fit``: train both students, calibrate on the validation split, write ``RUN/model.pt``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import torch

from ..config import Config, save_config, validate_config
from ..data.cache import build_cache
from ..data.dataset import PairDataset
from ..data.inputs import measure_input_stats
from ..data.samples import split_samples
from ..detector import Detector, save_detector
from ..model.trd import check_model_config
from ..runfolder import folder_lock
from ..calibration import calibrate
from ..training.trainer import Trainer, check_finished
from ..training.device import distributed, resolve_device, seed_all

Log = Callable[[str], None]


def fit(cfg: Config, run_dir: str | Path, *, resume: bool = True, progress: bool = True, log: Log = print) -> Path | None:
    """Train, calibrate on the validation split and write ``run_dir/model.pt``.

    Args:
        cfg: the run's configuration (`trd.config.load_config`); ``cfg.data`` names the dataset.
        run_dir: the run folder; it receives ``config.toml``, the resumable ``state.pt`` (removed
            once ``model.pt`` is written, unless ``train.keep_state``) and ``model.pt``.
        resume: continue from ``run_dir/state.pt`` when it exists (it must come from the same
            settings); when only a final ``model.pt`` of the same settings is there, return it
            without training; False starts over.
        progress: show a progress bar per epoch.
        log: where progress lines go (``print`` by default); at the end it receives what the
            thresholds promise (with a warning when the validation split is too small for the
            requested rate) and the border check of the validation maxima.

    Returns:
        The path of ``model.pt``; None in the non-zero ranks of a ``torchrun`` job (only rank 0
        calibrates and writes).

    Example:
        >>> from trd import api
        >>> from trd.config import load_config
        >>> cfg = load_config(None, ["data.root=data/synth", "data.category=puck", "train.epochs=20"])
        >>> api.fit(cfg, "runs/puck")  # doctest: +SKIP
        PosixPath('runs/puck/model.pt')
    """
    validate_config(cfg)
    check_model_config(cfg.model, cfg.data.image_size)
    run_dir = Path(run_dir)
    train_samples, val_samples = split_samples(cfg.data, "train"), split_samples(cfg.data, "validation")
    # What later inputs are judged against (scale, missing points, 3D foreground, image size, camera) and
    # the input-health moments the drift monitor compares them with: every scan that training and
    # calibration read is measured first, so none of them is refused half-way.
    inputs = measure_input_stats(train_samples + val_samples, cfg.data)
    device = resolve_device(cfg.train.device)
    with distributed(device) as info:
        # One writer per run folder: rank 0 holds the lock (the other ranks never write there).
        with folder_lock(run_dir, "trd fit") if info.is_main else contextlib.nullcontext():
            state, path = run_dir / "state.pt", run_dir / "model.pt"
            if resume and path.is_file() and not state.is_file():
                check_finished(path, cfg)  # a final model.pt of other settings is refused, naming them
                if info.is_main:
                    log(f"{path} is final (trained with these settings); nothing to do (--no-resume trains again)")
                return path if info.is_main else None
            seed_all(cfg.train.seed)
            trainer = Trainer(cfg, device, info, log)
            if resume and state.is_file():
                trainer.load_state(state)  # refuses a state of other settings before anything is written
                if info.is_main:
                    log(f"resuming {state} after epoch {trainer.epoch}/{cfg.train.epochs}")
            if info.is_main:
                save_config(cfg, run_dir / "config.toml")
            cache = build_cache(cfg.data)
            trainer.fit(PairDataset(train_samples, cfg.data, cache, inputs), state, progress=progress)
            if not info.is_main:
                return None
            cal = calibrate(trainer.model, PairDataset(val_samples, cfg.data, cache, inputs), cfg, device)
            save_detector(path, Detector(trainer.model, cal.scorer, cal.reference).eval(), cfg, cal.thresholds, extra={
                "history": trainer.history, "n_train": len(train_samples), "n_validation": len(val_samples),
                "border_check": cal.border.to_dict(), "inputs": inputs.to_dict(), "threads": torch.get_num_threads(),
                "stats_keys": cal.stats_keys, **cal.pool.to_extra()})
            if not cfg.train.keep_state:  # model.pt is final: the multi-GB train state has served
                state.unlink(missing_ok=True)
            for line in cal.summary(cfg):
                log(line)
    return path

