"""A training run killed mid-epoch (SIGKILL) leaves only complete files and resumes to the same weights."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from trd.config import load_config
from trd.checkpoint import load_checkpoint

#: tqdm's bar once a batch of epoch 2 is done: "epoch 2/3:  12%|#   | 1/8 [..."
_EPOCH2_BATCH = re.compile(r"epoch 2/\d+:\s+\d+%\|[^|]*\|\s*([1-9]\d*)/(\d+)")
_HIDDEN_TMP = re.compile(r"^\.(?P<name>.+)\.[^.]+\.tmp$")  # atomic_open's temporary files


def _kill_mid_epoch_2(args: list[str], run: Path, log: Path, env: dict[str, str], timeout: float = 240) -> None:
    """Start ``trd fit``; SIGKILL it once state.pt exists and a batch of epoch 2 (of 8) is done."""
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "trd.cli", *args], stdout=subprocess.DEVNULL, stderr=err, env=env)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"fit ended (code {proc.returncode}) before it could be killed:\n{log.read_text()[-2000:]}")
            match = _EPOCH2_BATCH.search(log.read_bytes().decode(errors="replace"))
            if match and (run / "state.pt").is_file():
                assert int(match.group(1)) < int(match.group(2)), "epoch 2 already finished"
                proc.kill()  # SIGKILL: no cleanup handler runs
                break
            time.sleep(0.02)
        else:
            pytest.fail("epoch 2 never started")
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -9


def _check_every_file_is_complete(folder: Path) -> list[str]:
    """Load every file a reader would pick up; return the names of leftover hidden temp files."""
    leftovers = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.name == ".trd.lock":  # the run folder's writer lock (JSON naming its holder)
            continue
        if path.name.startswith("."):
            assert _HIDDEN_TMP.match(path.name), f"unexpected hidden file {path}"
            leftovers.append(path.name)
        elif path.suffix == ".pt":
            load_checkpoint(path, {"state.pt": "train_state", "model.pt": "model"}[path.name])
        elif path.suffix == ".toml":
            load_config(path)
        elif path.suffix == ".npy":
            assert np.isfinite(np.load(path, allow_pickle=False)).all()
        else:
            pytest.fail(f"unexpected file {path}")
    return leftovers


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(
        rob_root: Path, rob_cache: Path, ref_run: Path, tmp_path: Path, tools: SimpleNamespace) -> None:
    run = tmp_path / "run"
    # The train state after every epoch (no 10-minute floor), so there is one to resume from; the
    # uninterrupted reference run wrote its state only once, at the end: the weights are the same.
    args = tools.fit_args(rob_root, rob_cache, run, "--no-test", "--set", "train.checkpoint_minutes=0",
                          "--set", "train.keep_state=false")  # the default: removed once model.pt is final
    _kill_mid_epoch_2(args, run, tmp_path / "killed.log", tools.cli_env())

    # Only complete files: state.pt of epoch 1 and config.toml (plus complete cache entries). A kill
    # during a save could leave a hidden .NAME.*.tmp, which no reader picks up; none is expected here.
    leftovers = _check_every_file_is_complete(run)
    _check_every_file_is_complete(rob_cache)
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == ["config.toml", "state.pt"]
    assert load_checkpoint(run / "state.pt", "train_state")["epoch"] == 1

    resumed = tools.run_cli(*args)
    assert f"after epoch 1/{tools.EPOCHS}" in resumed.stdout, resumed.stdout
    assert _check_every_file_is_complete(run) == []  # the rerun removed any temp file of the killed run
    # model.pt is final, so the multi-GB train state is gone; running again trains nothing.
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == ["config.toml", "model.pt"]
    again = tools.run_cli(*args)
    assert "is final" in again.stdout, again.stdout
    assert not [ln for ln in tools.visible_lines(again.stdout + again.stderr) if ln.startswith("epoch ")], again

    a, b = load_checkpoint(ref_run / "model.pt", "model"), load_checkpoint(run / "model.pt", "model")
    for part in ("students", "scorer"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key}"
    assert a["thresholds"] == b["thresholds"]
    assert [h["epoch"] for h in b["extra"]["history"]] == list(range(1, tools.EPOCHS + 1))
