"""A hostile machine: a read-only or full disk and a folder without write permission.

Each fault gives one line ``error: <where>: cannot write: <what>; <what to do>`` and exit code 3
(not 1, "some samples could not be scored", nor 2, bad input), and leaves nothing that a later run
would take for complete. Real file systems: small tmpfs mounts (skipped where mounting is not
allowed) and a process without the capability to override file permissions (``setpriv``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from trd.checkpoint import load_checkpoint
from trd.workflows.predict import PREDICTIONS


@contextlib.contextmanager
def _tmpfs(target: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted on ``target`` for the block (the test is skipped where mounting is not allowed)."""
    target.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'not root'}): the disk-fault tests need one")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 40 MB file system: room for the configuration, not for a 224 MB training state."""
    with _tmpfs(tmp_path / "disk", "size=40m") as disk:
        yield disk


@pytest.fixture()
def read_only_disk(tmp_path: Path) -> Iterator[Path]:
    with _tmpfs(tmp_path / "ro", "ro,size=1m") as disk:
        yield disk


def _one_error(tools: SimpleNamespace, result, where: Path, what: str) -> str:
    lines = tools.visible_lines(result.stderr)
    assert result.code == 3 and len(lines) == 1, (result.code, result.stderr)
    assert lines[0].startswith(f"error: {where}") and f"cannot write: {what}" in lines[0], lines[0]
    return lines[0]


def test_read_only_output_folder(read_only_disk: Path, rob_root: Path, rob_cache: Path, ref_run: Path,
                                 tools: SimpleNamespace, messages) -> None:
    fit = tools.run_cli_inprocess(*tools.fit_args(rob_root, rob_cache, read_only_disk / "run", "--no-test"))
    line = _one_error(tools, fit, read_only_disk / "run", "read-only file system; choose a writable folder (--out)")
    messages.record("output", "fit --out on a read-only file system", line)
    pred = tools.run_cli_inprocess("predict", "--model", str(ref_run / "model.pt"), "--out", str(read_only_disk / "p"),
                                   "--input", str(rob_root / "puck" / "test" / "good"))
    _one_error(tools, pred, read_only_disk / "p", "read-only file system")


@pytest.mark.slow
def test_full_disk_during_a_checkpoint_leaves_nothing_half_written(small_disk: Path, rob_root: Path, rob_cache: Path,
                                                                   tools: SimpleNamespace, messages) -> None:
    run = small_disk / "run"
    args = tools.fit_args(rob_root, rob_cache, run, "--no-test")
    full = tools.run_cli_inprocess(*args)
    messages.record("output", "disk full while fit writes its training state",
                    _one_error(tools, full, run / "state.pt", "no space left on the device"))
    assert sorted(p.name for p in run.iterdir()) == ["config.toml"]  # no state.pt, no temp file, no lock
    subprocess.run(["mount", "-o", "remount,size=700m", str(small_disk)], check=True)  # space freed
    again = tools.run_cli_inprocess(*args)
    assert again.code == 0, again.stderr
    assert "resuming" not in again.stdout
    load_checkpoint(run / "model.pt", "model")


def test_full_disk_during_predict_keeps_consistent_lines(tmp_path: Path, rob_root: Path, ref_run: Path,
                                                         tools: SimpleNamespace, messages) -> None:
    inputs = tmp_path / "in"
    (inputs / "rgb").mkdir(parents=True)
    (inputs / "xyz").mkdir()
    for i in range(40):
        src = rob_root / "puck" / "test" / ("good", "color", "crack", "dent")[i % 4]
        os.link(src / "rgb" / "000.png", inputs / "rgb" / f"{i:03d}.png")
        os.link(src / "xyz" / "000.tiff", inputs / "xyz" / f"{i:03d}.tiff")
    with _tmpfs(tmp_path / "disk", "size=128k") as disk:
        out = disk / "pred"
        result = tools.run_cli_inprocess("predict", "--model", str(ref_run / "model.pt"), "--input", str(inputs),
                                         "--out", str(out))
        line = _one_error(tools, result, out, "no space left on the device")
        assert "free some space or write elsewhere" in line
        messages.record("output", "disk full while predict writes its outputs", line)
        written = (out / PREDICTIONS).read_text().splitlines() if (out / PREDICTIONS).exists() else []
        for text in written:  # every line is whole and its files are complete PNGs
            record = json.loads(text)
            for key in ("heatmap", "mask"):
                assert (out / record[key]).read_bytes().endswith(b"IEND\xaeB`\x82")
        assert len(written) < 40
        assert not [p for p in out.rglob("*.tmp")]


def test_no_permission_to_write(tmp_path: Path, rob_root: Path, ref_run: Path, tools: SimpleNamespace, messages) -> None:
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs setpriv and root to run a process without CAP_DAC_OVERRIDE")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
    proc = subprocess.run([*drop, "python3", "-c", f"open({str(locked / 'x')!r}, 'w')"], capture_output=True)
    if proc.returncode == 0:
        pytest.skip("this machine lets the process write anyway")
    import sys

    args = [sys.executable, "-m", "trd.cli", "predict", "--model", str(ref_run / "model.pt"), "--out",
            str(locked / "pred"), "--input", str(rob_root / "puck" / "test" / "good")]
    result = subprocess.run([*drop, *args], capture_output=True, text=True, env=tools.cli_env(), timeout=300)
    lines = tools.visible_lines(result.stderr)
    assert result.returncode == 3 and len(lines) == 1, result.stderr
    assert f"error: {locked / 'pred'}: cannot write: permission denied; choose a folder you may write to" in lines[0]
    messages.record("output", "predict --out in a folder without write permission", lines[0])
