"""``torchrun`` on CPU (gloo): two processes train like one process with the same global batch.

Why the weights are not compared element by element: the first Adam steps move every weight by
about +-lr whatever the size of its gradient, so a weight whose gradient is close to zero moves
in a direction that float rounding decides. Two single-process runs that only differ in
OMP_NUM_THREADS (summation order) already leave 242 of the 252 student tensors outside
allclose(rtol=1e-4, atol=1e-5) after the 4 steps of this test, by up to 0.027 (about 5 lr).
So the test compares what rounding cannot move much:
- the epoch-1 mean loss (the loss of the first step, and of the second one after one update):
  measured 5e-7 relative apart; unsynchronised BatchNorm gives 1e-3;
- the distance between the two final weight vectors relative to the distance training moved them
  from their initialisation, per student: measured 0.16 and 0.06 (thread-count noise alone: 0.05
  and 0.045); unsynchronised BatchNorm gives 1.26 and 1.24.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from trd.config import load_config
from trd.data.synth import generate
from trd.model.trd import build_model
from trd.checkpoint import load_checkpoint
from trd.training.device import seed_all

OVERRIDES = [
    "model.backbone=resnet18", "model.weights=none", "model.decoder_blocks=1,1,1", "model.bottleneck_blocks=1",
    "data.image_size=64", "train.epochs=2", "train.batch_size=4",
]
RUN_FILES = {"config.toml", "model.pt"}  # rank 0 removes state.pt once model.pt is written, and its lock


def _fit_args(root: Path, out: Path, cache: Path) -> list[str]:
    args = ["-m", "trd.cli", "fit", "--data", str(root), "--category", "puck", "--out", str(out), "--no-test"]
    for item in [*OVERRIDES, f"data.cache_dir={cache}"]:
        args += ["--set", item]
    return args


def _relative_update_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
                              init: dict[str, torch.Tensor], prefix: str) -> float:
    """|w_a - w_b| / |w_a - w_init| over the trainable tensors of one student."""
    keys = [k for k in init if k.startswith(prefix) and init[k].is_floating_point() and "running_" not in k]
    apart = sum(float(((a[k] - b[k]).double() ** 2).sum()) for k in keys) ** 0.5
    moved = sum(float(((a[k] - init[k]).double() ** 2).sum()) for k in keys) ** 0.5
    return apart / moved


@pytest.mark.slow
def test_two_gloo_processes_train_like_one(tmp_path):
    # 8 training samples, global batch 4: each step is 2 + 2 samples, and no rank needs padding.
    root = tmp_path / "data"
    generate(root, ["puck"], size=64, n_train=8, n_validation=2, n_test_good=0, n_test_per_defect=0, seed=0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    logs = tmp_path / "logs"
    single = subprocess.Popen([sys.executable, *_fit_args(root, tmp_path / "single", tmp_path / "cache1")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "--log-dir", str(logs), "--redirects", "3"]
    two = subprocess.run([*launcher, *_fit_args(root, tmp_path / "two", tmp_path / "cache2")],
                         env=env, capture_output=True, text=True, timeout=240)
    single_out = single.communicate(timeout=240)[0]
    assert single.returncode == 0, single_out[-2000:]
    assert two.returncode == 0, (two.stdout + two.stderr)[-2000:]

    # Rank 0 logged one line per epoch and wrote the model; rank 1 printed nothing.
    (rank0,) = logs.glob("*/attempt_0/0/stdout.log")
    (rank1,) = logs.glob("*/attempt_0/1/stdout.log")
    lines = rank0.read_text().splitlines()
    assert [ln.split(":")[0] for ln in lines if re.match(r"epoch \d+/2:", ln)] == ["epoch 1/2", "epoch 2/2"]
    assert f"model: {tmp_path / 'two' / 'model.pt'}" in lines
    assert rank1.read_text() == ""
    assert {p.name for p in (tmp_path / "two").iterdir()} == RUN_FILES
    assert {p.name for p in (tmp_path / "single").iterdir()} == RUN_FILES

    one = load_checkpoint(tmp_path / "single" / "model.pt", "model")
    ddp = load_checkpoint(tmp_path / "two" / "model.pt", "model")
    h1, h2 = one["extra"]["history"], ddp["extra"]["history"]
    assert [h["epoch"] for h in h2] == [1, 2]
    for key in ("loss_rgb", "loss_geo"):
        # The logged loss is the mean over both ranks, i.e. the loss of the global batch.
        assert h2[0][key] == pytest.approx(h1[0][key], rel=2e-5), key
        assert h2[1][key] == pytest.approx(h1[1][key], rel=1e-2), key

    a, b = one["students"], ddp["students"]
    assert a.keys() == b.keys()
    for key in a:
        if key.endswith("num_batches_tracked"):
            assert int(b[key]) == int(a[key]) == 4, key  # every BatchNorm saw all 4 steps once
    cfg = load_config(None, OVERRIDES)
    seed_all(cfg.train.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        init = build_model(cfg.model, cfg.data.image_size).students.state_dict()
    for student in ("rgb", "geo"):
        assert _relative_update_distance(a, b, init, f"{student}.") < 0.35, student
    # Thresholds are maxima over few validation pixels of random-teacher maps: a loose sanity check.
    for key in ("image", "pixel"):
        assert ddp["thresholds"][key] == pytest.approx(one["thresholds"][key], rel=0.1), key
