"""A ``trd fit`` run folder has one writer, a refused resume changes nothing, and no leftovers survive."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from trd.checkpoint import load_checkpoint


def _copy_run(ref_run: Path, target: Path, *names: str) -> Path:
    target.mkdir(parents=True)
    for name in names:
        shutil.copyfile(ref_run / name, target / name)
    return target


def test_a_refused_resume_changes_nothing_and_names_the_differences(
        rob_root: Path, rob_cache: Path, ref_run: Path, tmp_path: Path, tools: SimpleNamespace, messages) -> None:
    run = _copy_run(ref_run, tmp_path / "run", "state.pt", "config.toml")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.iterdir()}
    result = tools.run_cli_inprocess(*tools.fit_args(rob_root, rob_cache, run, "--no-test", "--set", "train.lr=0.01",
                                                     "--set", "model.decoder_blocks=1,1,2"))
    assert result.code == 2
    (line,) = tools.visible_lines(result.stderr)
    assert "state.pt: was written with other settings (" in line
    assert "model.decoder_blocks: 1,1,1 -> 1,1,2" in line and "train.lr: 0.005 -> 0.01" in line
    messages.record("setting", "fit resumed with settings that change the weights", line)
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.iterdir() if p.name != ".trd.lock"}
    assert after == before  # config.toml was not rewritten


def test_settings_that_cannot_change_the_weights_do_not_block_a_resume(
        rob_root: Path, rob_cache: Path, ref_run: Path, tmp_path: Path, tools: SimpleNamespace) -> None:
    run = _copy_run(ref_run, tmp_path / "run", "state.pt", "config.toml")
    link = tmp_path / "same_data"
    link.symlink_to(rob_root)  # another path to the same files
    args = tools.fit_args(link, tmp_path / "another_cache", run, "--no-test", "--set", "data.num_workers=1")
    result = tools.run_cli_inprocess(*args)
    assert result.code == 0, result.stderr
    assert f"after epoch {tools.EPOCHS}/{tools.EPOCHS}" in result.stdout


def test_stale_temp_files_of_a_killed_writer_are_removed(
        rob_root: Path, rob_cache: Path, ref_run: Path, tmp_path: Path, tools: SimpleNamespace) -> None:
    run = _copy_run(ref_run, tmp_path / "run", "state.pt", "config.toml")
    stale = [run / ".state.pt.k3j2h1ab.tmp", run / "panels" / "good" / ".000.png.x8f0q2lm.tmp"]
    for path in stale:  # what SIGKILL during a checkpoint or panel write leaves behind
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * 1_000_000)
    keep = run / ".my_notes"
    keep.write_text("not ours")
    assert tools.run_cli_inprocess(*tools.fit_args(rob_root, rob_cache, run, "--no-test")).code == 0
    assert not any(p.exists() for p in stale) and keep.exists()


def test_a_finished_run_is_not_trained_again(rob_root: Path, rob_cache: Path, ref_run: Path, tmp_path: Path,
                                             tools: SimpleNamespace) -> None:
    run = _copy_run(ref_run, tmp_path / "run", "model.pt", "config.toml")  # no state.pt: a finished run
    model = (run / "model.pt").read_bytes()
    again = tools.run_cli_inprocess(*tools.fit_args(rob_root, rob_cache, run, "--no-test"))
    assert again.code == 0 and "is final (trained with these settings)" in again.stdout
    assert (run / "model.pt").read_bytes() == model
    other = tools.run_cli_inprocess(*tools.fit_args(rob_root, rob_cache, run, "--no-test", "--set", "train.seed=7"))
    assert other.code == 2 and "train.seed: 42 -> 7" in other.stderr and "--no-resume" in other.stderr
    assert (run / "model.pt").read_bytes() == model


@pytest.mark.slow
def test_two_fits_on_one_folder_one_is_refused(rob_root: Path, tmp_path: Path, tools: SimpleNamespace) -> None:
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "trd.cli", *tools.fit_args(rob_root, tmp_path / "c1", run,
                              "--no-test", "--set", "train.epochs=6")], env=tools.cli_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (run / "config.toml").is_file() and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.01)
        second = tools.run_cli(*tools.fit_args(rob_root, tmp_path / "c2", run, "--no-test", "--set", "train.seed=1"),
                               check=False)
        assert first.poll() is None, "the first fit ended before the second started"
        assert first.wait(timeout=300) == 0
    finally:
        first.kill()
    (line,) = tools.visible_lines(second.stderr)
    assert second.returncode == 3 and f"in use by trd fit (pid {first.pid} on " in line
    blob = load_checkpoint(run / "model.pt", "model")
    assert blob["config"]["train"]["seed"] == 42 and "seed = 42" in (run / "config.toml").read_text()
    assert os.listdir(run) and not [p for p in os.listdir(run) if p.endswith(".tmp")]
