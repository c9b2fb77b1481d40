"""Training end to end on the tiny config: checkpoints, resume, reload in a new process."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trd import api
from trd.config import TrainConfig
from trd.errors import CheckpointError, ConfigError
from trd.detector import load_detector
from trd.checkpoint import load_checkpoint
from trd.training.trainer import TIMING_KEYS, checkpoint_due


def _students(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path, "model")["students"]


def test_fit_writes_model_and_resume_continues_the_same_run(tiny_cfg, tmp_path):
    full = api.fit(tiny_cfg, tmp_path / "full", progress=False)
    history = load_checkpoint(full, "model")["extra"]["history"]
    assert [h["epoch"] for h in history] == [1, 2]

    # An interrupted run: stop after epoch 1 (keeping its train state), then resume to 2 epochs.
    short = copy.deepcopy(tiny_cfg)
    short.train.epochs, short.train.keep_state = 1, True
    api.fit(short, tmp_path / "resumed", progress=False)
    assert (tmp_path / "resumed" / "state.pt").is_file()
    resumed = api.fit(tiny_cfg, tmp_path / "resumed", progress=False)
    a, b = _students(full), _students(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # The same history, epoch by epoch, up to the timings.
    again = load_checkpoint(resumed, "model")["extra"]["history"]
    for x, y in zip(history, again, strict=True):
        assert {k: v for k, v in x.items() if k not in TIMING_KEYS} == {k: v for k, v in y.items() if k not in TIMING_KEYS}


def test_resume_refuses_a_state_from_another_config(tiny_cfg, tmp_path):
    api.fit(tiny_cfg, tmp_path / "run", progress=False)
    other = copy.deepcopy(tiny_cfg)
    other.train.lr = 0.001
    with pytest.raises(CheckpointError, match="train.lr"):
        api.fit(other, tmp_path / "run", progress=False)


def test_checkpoint_loads_in_a_new_process_with_identical_maps(tiny_cfg, tmp_path):
    path = api.fit(tiny_cfg, tmp_path / "run", progress=False)
    torch.manual_seed(0)
    rgb, x3d = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    torch.save({"rgb": rgb, "x3d": x3d}, tmp_path / "inputs.pt")
    detector, _, _, _ = load_detector(path)
    with torch.inference_mode():
        here = detector(rgb, x3d)
    code = (
        "import sys, torch, warnings; warnings.simplefilter('ignore');"
        "from trd.detector import load_detector;"
        f"d, *_ = load_detector(r'{path}'); x = torch.load(r'{tmp_path / 'inputs.pt'}');"
        "out = d(x['rgb'], x['x3d']);"
        f"torch.save({{k: v.detach() for k, v in out.items()}}, r'{tmp_path / 'out.pt'}')"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    there = torch.load(tmp_path / "out.pt")
    assert here.keys() == there.keys()
    for key in here:
        assert torch.equal(here[key], there[key]), key
    assert torch.isfinite(here["anomaly_map"]).all()


@pytest.mark.parametrize("fused", [True, False])
def test_fused_adam_switch(tiny_cfg, fused: bool) -> None:
    """train.fused_adam picks torch's fused kernel (the default) or its default implementation."""
    from trd.training.trainer import Trainer
    from trd.training.device import DistInfo

    tiny_cfg.train.fused_adam = fused
    trainer = Trainer(tiny_cfg, torch.device("cpu"), DistInfo(), log=lambda _: None)
    assert [opt.defaults["fused"] for opt in trainer.optimizers.values()] == [fused or None] * 2


def _fit_logged(cfg, run: Path) -> list[str]:
    lines: list[str] = []
    api.fit(cfg, run, progress=False, log=lines.append)
    return lines


def test_train_state_is_written_by_wall_time_and_removed_once_the_model_is_final(tiny_cfg, tmp_path):
    """Default: 10 minutes between writes, so a short run writes its state once (after the last
    epoch), and removes it once model.pt is written; keep_state keeps it."""
    lines = _fit_logged(tiny_cfg, tmp_path / "run")
    writes = [ln for ln in lines if ln.startswith("train state written")]
    assert len(writes) == 1 and "after epoch 2" in writes[0] and "GiB in" in writes[0], lines
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.toml", "model.pt"]  # no lock left behind

    kept = copy.deepcopy(tiny_cfg)
    kept.train.keep_state = True
    _fit_logged(kept, tmp_path / "kept")
    assert load_checkpoint(tmp_path / "kept" / "state.pt", "train_state")["epoch"] == 2


def test_checkpoint_every_and_minutes_choose_the_epochs_written(tiny_cfg, tmp_path):
    tiny_cfg.train.epochs, tiny_cfg.train.checkpoint_every, tiny_cfg.train.checkpoint_minutes = 3, 2, 0.0
    lines = _fit_logged(tiny_cfg, tmp_path / "run")
    written = [int(ln.split("after epoch ")[1].split(":")[0]) for ln in lines if ln.startswith("train state written")]
    assert written == [2, 3]  # every 2nd epoch, and after the last


def test_checkpoint_due_rule() -> None:
    t = TrainConfig(epochs=10, checkpoint_every=1, checkpoint_minutes=10.0)
    assert [checkpoint_due(e, 9.99, t) for e in (1, 9, 10)] == [False, False, True]
    assert checkpoint_due(3, 10.0, t)
    t.checkpoint_every = 4
    assert [checkpoint_due(e, 60.0, t) for e in (3, 4, 7, 8, 10)] == [False, True, False, True, True]
    t.checkpoint_minutes = 0.0
    assert [checkpoint_due(e, 0.0, t) for e in range(1, 11)].count(True) == 3  # 4, 8, 10


@pytest.mark.parametrize(("key", "value", "words"), [
    ("checkpoint_every", 0, "an integer >= 1"), ("checkpoint_every", -2, "an integer >= 1"),
    ("checkpoint_minutes", -1.0, "minutes >= 0"), ("checkpoint_minutes", float("nan"), "minutes >= 0"),
])
def test_bad_checkpoint_settings_are_refused(tiny_cfg, tmp_path, key, value, words) -> None:
    setattr(tiny_cfg.train, key, value)
    with pytest.raises(ConfigError, match=f"train.{key}=.* is out of range: expected {words}"):
        api.fit(tiny_cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_finished_run_is_not_trained_again(tiny_cfg, tmp_path, messages):
    run = tmp_path / "run"
    path = api.fit(tiny_cfg, run, progress=False)
    before = path.read_bytes()
    lines = _fit_logged(tiny_cfg, run)
    assert lines == [f"{path} is final (trained with these settings); nothing to do (--no-resume trains again)"]
    assert path.read_bytes() == before
    # More epochs cannot be added without the optimiser state: refused, with what to do.
    more = copy.deepcopy(tiny_cfg)
    more.train.epochs = 3
    with pytest.raises(CheckpointError, match="(?s)model.pt.*train.epochs=2.*keep_state.*--no-resume") as info:
        api.fit(more, run, progress=False)
    messages.record("setting", "fit again on a finished run (train state removed) with more epochs", f"error: {info.value}")
    # Other settings are checked as for a resume.
    other = copy.deepcopy(tiny_cfg)
    other.train.lr = 0.001
    with pytest.raises(CheckpointError, match="train.lr"):
        api.fit(other, run, progress=False)
    # --no-resume trains again (to the same weights: CPU training is deterministic).
    first = {k: v.clone() for k, v in _students(path).items()}
    lines = []
    api.fit(tiny_cfg, run, resume=False, progress=False, log=lines.append)
    assert any(ln.startswith("epoch 2/2") for ln in lines)
    again = _students(path)
    assert all(torch.equal(first[k], again[k]) for k in first)
