"""``trd fit``: train both students, calibrate on the validation split, write ``RUN/model.pt``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..config import Config, save_config
from ..data.dataset import PairDataset, build_cache
from ..data.samples import split_samples
from ..detector import Detector, save_detector
from ..scoring.calibrate import calibrate
from ..training.fit import Trainer, check_finished
from ..training.runtime import distributed, resolve_device, seed_all

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
        log: where progress lines go (``print`` by default).

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
    run_dir = Path(run_dir)
    train_samples, val_samples = split_samples(cfg.data, "train"), split_samples(cfg.data, "validation")
    device = resolve_device(cfg.train.device)
    with distributed(device) as info:
        path, state = run_dir / "model.pt", run_dir / "state.pt"
        if resume and path.is_file() and not state.is_file():
            check_finished(path, cfg)
            if info.is_main:
                log(f"{path} is final (trained with these settings); nothing to resume")
            return path if info.is_main else None
        seed_all(cfg.train.seed)
        if info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, run_dir / "config.toml")
        trainer = Trainer(cfg, device, info, log)
        if resume and state.is_file():
            trainer.load_state(state)
            if info.is_main:
                log(f"resuming {state} after epoch {trainer.epoch}/{cfg.train.epochs}")
        cache = build_cache(cfg.data)
        trainer.fit(PairDataset(train_samples, cfg.data, cache), state, progress=progress)
        if not info.is_main:
            return None
        scorer, thresholds = calibrate(trainer.model, PairDataset(val_samples, cfg.data, cache), cfg, device)
        save_detector(path, Detector(trainer.model, scorer).eval(), cfg, thresholds, extra={
            "history": trainer.history, "n_train": len(train_samples), "n_validation": len(val_samples)})
        if not cfg.train.keep_state:  # model.pt is final: the multi-GB train state has served
            state.unlink(missing_ok=True)
        log(f"validation thresholds: image {thresholds.image:.4f}, pixel {thresholds.pixel:.4f}")
    return path
