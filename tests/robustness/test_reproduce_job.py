"""`trd reproduce` as a job: plan and estimate first, tables after each category, and a run killed
(SIGKILL) in the middle of a category resumes there when started again."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from trd.checkpoint import load_checkpoint

CATEGORIES = ("bagel", "carrot")  # real MVTec 3D-AD names, both with Sobel k = 5


@pytest.fixture()
def mvtec_root(rob_root: Path, tmp_path: Path) -> Path:
    """Two MVTec 3D-AD categories holding the same synthetic data (so they must train alike)."""
    root = tmp_path / "mvtec3d"
    for name in CATEGORIES:
        shutil.copytree(rob_root / "puck", root / name)
    return root


def _args(root: Path, out: Path, cache: Path, tools: SimpleNamespace) -> list[str]:
    args = ["reproduce", "--data", str(root), "--out", str(out), "--categories", ",".join(CATEGORIES)]
    # Two epochs, a train state after every one, so the killed category has one to resume from.
    for item in [*tools.TINY, "train.epochs=2", f"data.cache_dir={cache}", "train.checkpoint_minutes=0",
                 "train.keep_state=false"]:
        args += ["--set", item]
    return args


def _kill_in_second_category(args: list[str], out: Path, log: Path, env: dict[str, str], timeout: float = 400) -> str:
    """Start the job; SIGKILL it once carrot has a train state and a batch of its epoch 2 is done."""
    with log.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "trd.cli", *args], stdout=fh, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            text = log.read_bytes().decode(errors="replace")
            if proc.poll() is not None:
                pytest.fail(f"reproduce ended (code {proc.returncode}) before it could be killed:\n{text[-3000:]}")
            second = text.partition("== carrot (2/2)")[2]
            if re.search(r"epoch 2/\d+:\s+\d+%\|[^|]*\|\s*[1-9]\d*/", second) and (out / "carrot" / "state.pt").is_file():
                proc.kill()  # SIGKILL: no cleanup handler runs
                break
            time.sleep(0.02)
        else:
            pytest.fail("carrot's epoch 2 never started")
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -9
    return log.read_bytes().decode(errors="replace")


@pytest.mark.slow
def test_killed_reproduction_resumes_at_the_right_category(
        mvtec_root: Path, rob_cache: Path, tmp_path: Path, tools: SimpleNamespace) -> None:
    out = tmp_path / "runs"
    args = _args(mvtec_root, out, rob_cache, tools)
    first = _kill_in_second_category(args, out, tmp_path / "killed.log", tools.cli_env())

    # The plan and the estimate came before any training.
    plan = first.partition("== bagel")[0]
    assert "plan: 2 categories x 2 epochs (resnet18 @ 64 px, normals, batch 2, fp32) on cpu" in plan, plan
    assert re.search(r"estimate: 2 categories x 2 epochs, ~[\d.]+ (s|min|h) on this device", plan), plan
    assert re.search(r"disk ~[\d.]+ (MB|GB) in ", plan), plan

    # The table was written after bagel: a partial run is a result.
    table = (out / "reproduction.md").read_text()
    assert "Categories finished: 1 of 2; still to run: carrot." in table
    ours = next(line for line in table.splitlines() if line.startswith("| ours | RGB+Normal |"))
    cells = [c.strip() for c in ours.strip("|").split("|")]
    assert re.fullmatch(r"\d+\.\d", cells[2]) and cells[4] == "–", ours  # bagel has a value, carrot not yet
    assert set(json.loads((out / "reproduction.json").read_text())["results"]) == {"bagel"}
    assert load_checkpoint(out / "carrot" / "state.pt", "train_state")["epoch"] == 1
    bagel_model = (out / "bagel" / "model.pt").stat().st_mtime_ns

    again = tools.run_cli(*args, timeout=400)
    text = again.stdout
    assert "finished, skipped: bagel" in text and "resumed: carrot (1/2 epochs done)" in text, text
    assert "== bagel (1/2): finished, skipped" in text
    assert "after epoch 1/2" in text.partition("== carrot (2/2)")[2], text
    assert (out / "bagel" / "model.pt").stat().st_mtime_ns == bagel_model  # not trained again
    assert "Categories finished: 2 of 2." in (out / "reproduction.md").read_text()
    results = json.loads((out / "reproduction.json").read_text())["results"]
    assert set(results) == set(CATEGORIES) and results["carrot"]["aupro100@0.3"] is not None
    assert not (out / "carrot" / "state.pt").exists()  # model.pt is final

    # Same data, so the killed-and-resumed category trained to bitwise the same weights as the other.
    a, b = (load_checkpoint(out / name / "model.pt", "model")["students"] for name in CATEGORIES)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
