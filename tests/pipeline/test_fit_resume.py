"""Training end to end on the tiny config: checkpoints, resume, reload in a new process."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trd import api
from trd.errors import CheckpointError
from trd.detector import load_detector
from trd.checkpoint import load_checkpoint
from trd.training.fit import TIMING_KEYS


def _students(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path, "model")["students"]


def test_fit_writes_model_and_resume_continues_the_same_run(tiny_cfg, tmp_path):
    full = api.fit(tiny_cfg, tmp_path / "full", progress=False)
    history = load_checkpoint(full, "model")["extra"]["history"]
    assert [h["epoch"] for h in history] == [1, 2]

    # An interrupted run: stop after epoch 1, then resume to 2 epochs in the same folder.
    short = copy.deepcopy(tiny_cfg)
    short.train.epochs = 1
    api.fit(short, tmp_path / "resumed", progress=False)
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
    from trd.training.fit import Trainer
    from trd.training.runtime import DistInfo

    tiny_cfg.train.fused_adam = fused
    trainer = Trainer(tiny_cfg, torch.device("cpu"), DistInfo(), log=lambda _: None)
    assert [opt.defaults["fused"] for opt in trainer.optimizers.values()] == [fused or None] * 2
