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
from trd.errors import OutputError
from trd.workflows.predict import PREDICTIONS, Ledger


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
    inputs = tools.scans(rob_root, tmp_path / "in", 40)
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


@pytest.fixture()
def read_only_model(tmp_path: Path, exported: tuple[Path, Path]) -> Iterator[Path]:
    """The tiny session model's model.pt on a read-only file system, as deployments mount models."""
    with _tmpfs(tmp_path / "models", "size=256m") as disk:
        shutil.copyfile(exported[0], disk / "model.pt")
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        yield disk / "model.pt"


def _serve_scores_one(model: Path, rgb: Path, xyz: Path, env: dict[str, str], drop: list[str] = ()) -> dict:
    """Start ``trd serve --model MODEL`` on a free port, score one pair, stop it with SIGTERM."""
    import select
    import sys
    import time

    import httpx

    proc = subprocess.Popen([*drop, sys.executable, "-m", "trd.cli", "serve", "--model", str(model), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline, url = time.monotonic() + 240, None
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            if select.select([proc.stdout], [], [], 0.2)[0]:
                line = proc.stdout.readline()
                url = line.split()[2].rstrip("/") if line.startswith("trd serve: http://") else None
        assert url is not None, proc.stderr.read() if proc.poll() is not None else "no URL printed"
        answer = httpx.post(f"{url}/v1/score", files={"rgb": (rgb.name, rgb.read_bytes()),
                                                      "xyz": (xyz.name, xyz.read_bytes())}, timeout=120)
        assert answer.status_code == 200, answer.text
        return answer.json()
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.mark.slow  # ~25 s on a quiet 2-core VM: predict, test twice, serve and export, each a new process
def test_a_model_on_a_read_only_mount_is_scored(read_only_model: Path, synth_root: Path, exported: tuple[Path, Path],
                                                tmp_path: Path, tools: SimpleNamespace,
                                                monkeypatch: pytest.MonkeyPatch, messages) -> None:
    """predict, test and serve a read-only model.pt: the export is cached in the user cache (issue 23 item 1)."""
    monkeypatch.setenv("TRD_CACHE", str(tmp_path / "cache" / "preprocess"))
    inputs = synth_root / "puck" / "test" / "good"
    pred = tools.run_cli("predict", "--model", str(read_only_model), "--input", str(inputs), "--out",
                         str(tmp_path / "p"), check=False)
    assert pred.returncode == 0, pred.stderr  # was: an OSError traceback, exit code 1
    assert json.loads(pred.stdout)["engine"] == "onnxruntime"
    assert len(list((tmp_path / "cache" / "onnx").glob("model-*.onnx"))) == 1
    tested = tools.run_cli("test", "--model", str(read_only_model), "--out", str(tmp_path / "t"), check=False)
    assert tested.returncode == 0, tested.stderr
    assert "i_auroc" in json.loads((tmp_path / "t" / "metrics.json").read_text())["overall"]
    beside = tools.run_cli("test", "--model", str(read_only_model), check=False)  # the report beside the model
    line = _one_error(tools, SimpleNamespace(code=beside.returncode, stderr=beside.stderr), read_only_model.parent,
                      "read-only file system; choose a writable folder (--out)")
    messages.record("output", "test of a read-only model without --out (the report goes beside the model)", line)
    record = _serve_scores_one(read_only_model, inputs / "rgb" / "000.png", inputs / "xyz" / "000.tiff", tools.cli_env())
    assert record["model"]["engine"] == "onnxruntime"
    export = tools.run_cli_inprocess("export", "--model", str(exported[0]), "--out",
                                     str(read_only_model.parent / "puck.onnx"))
    line = _one_error(tools, export, read_only_model.parent / "puck.onnx", "read-only file system")
    messages.record("output", "export --out on a read-only file system", line)


def test_a_model_in_a_folder_without_write_permission_is_scored(tmp_path: Path, synth_root: Path,
                                                                exported: tuple[Path, Path],
                                                                tools: SimpleNamespace) -> None:
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs setpriv and root to run a process without CAP_DAC_OVERRIDE")
    locked = tmp_path / "locked"
    locked.mkdir()
    shutil.copyfile(exported[0], locked / "model.pt")
    locked.chmod(0o555)
    drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
    if subprocess.run([*drop, "python3", "-c", f"open({str(locked / 'x')!r}, 'w')"], capture_output=True).returncode == 0:
        pytest.skip("this machine lets the process write anyway")
    import sys

    env = {**tools.cli_env(), "TRD_CACHE": str(tmp_path / "cache" / "preprocess")}
    inputs = synth_root / "puck" / "test" / "good"
    result = subprocess.run([*drop, sys.executable, "-m", "trd.cli", "predict", "--model", str(locked / "model.pt"),
                             "--input", str(inputs), "--out", str(tmp_path / "p")], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "cache" / "onnx").glob("model-*.onnx")) and sorted(os.listdir(locked)) == ["model.pt"]
    record = _serve_scores_one(locked / "model.pt", inputs / "rgb" / "000.png", inputs / "xyz" / "000.tiff", env, drop)
    assert record["score"] == pytest.approx(
        json.loads((tmp_path / "p" / PREDICTIONS).read_text().splitlines()[0])["score"], abs=1e-4)  # batch 2 vs 1


def test_a_ledger_line_is_whole_or_absent_when_the_disk_fills_mid_line(tmp_path: Path) -> None:
    """A nearly full disk takes only part of a line (a short write): the ledger writes the rest or,
    when the disk is full, cuts the file back to its last whole line (issue 23.5: the line was left cut)."""
    with _tmpfs(tmp_path / "disk", "size=64k") as disk:
        out = disk / "pred"
        out.mkdir()
        ledger = Ledger(out, log=lambda _: None)
        first = {"name": "a", "key": "1" * 64, "rgb": "rgb/a.png", "xyz": "xyz/a.tiff", "score": 1.0}
        ledger.append(first)
        fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):  # every page of the disk taken, but the ledger's first one
            while os.write(fd, b"\0" * 4096):
                pass
        os.close(fd)
        long = first | {"name": "b", "key": "2" * 64, "note": "x" * 6000}  # more than the page has left
        with pytest.raises(OutputError, match="predictions.jsonl: cannot write: no space left on the device"):
            ledger.append(long)
        assert ledger.path.read_bytes() == (json.dumps(first) + "\n").encode()  # whole lines only
        (disk / "filler").unlink()
        ledger.append(long)  # space again: the line goes in whole
        assert [json.loads(line)["name"] for line in ledger.path.read_text().splitlines()] == ["a", "b"]
