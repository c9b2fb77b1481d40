"""What ``trd predict``, ``trd test`` and ``trd export`` tell the user (issue 19 item 8): a summary
that names the flagged scans and counts every given scan, the same answer on a rerun, progress
while they work (plain lines in a pipe, a bar on a terminal) and no lock file left behind."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

from trd.runfolder import LOCK_NAME
from trd.workflows.predict import PREDICTIONS


def _scans(rob_root: Path, folder: Path, tools: SimpleNamespace) -> Path:
    """8 RGB images: 6 pairs from the test split (each another scan), 1 pair whose RGB is noise
    (surely flagged), and 1 RGB image whose 3D file is missing."""
    tools.scans(rob_root, folder, 7)
    for i in range(7):
        for sub, suffix in (("rgb", ".png"), ("xyz", ".tiff")):
            (folder / sub / f"{i:04d}{suffix}").rename(folder / sub / f"{i:03d}{suffix}")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "rgb" / "006.png")
    shutil.copy(folder / "rgb" / "000.png", folder / "rgb" / "007.png")  # no xyz/007.tiff
    return folder


def test_summary_names_flagged_scans_counts_every_scan_and_a_rerun_says_the_same(
        rob_root: Path, ref_run: Path, tmp_path: Path, tools: SimpleNamespace) -> None:
    scans, out = _scans(rob_root, tmp_path / "scans", tools), tmp_path / "preds"
    args = ("predict", "--model", str(ref_run / "model.pt"), "--input", str(scans), "--out", str(out))
    first = tools.run_cli_inprocess(*args)
    assert first.code == 1  # the scan without its 3D file
    summary = json.loads(first.stdout)
    records = [json.loads(line) for line in (out / PREDICTIONS).read_text().splitlines()]
    flagged = sorted((r for r in records if r["anomalous"]), key=lambda r: -r["score"])
    assert "006" in [r["name"] for r in flagged]  # the noise image
    assert summary["total"] == 8 and summary["scored"] == 7 and len(summary["failed"]) == 1  # was: "total": 7
    assert summary["anomalous"] == len(flagged)
    assert [f["name"] for f in summary["flagged"]] == [r["name"] for r in flagged]  # was: no names at all
    for entry, record in zip(summary["flagged"], flagged):
        assert entry["score"] == record["score"] and Path(entry["heatmap"]) == out / record["heatmap"]
        assert Path(entry["heatmap"]).is_file() and Path(entry["mask"]).is_file()
    assert summary["heatmaps"] == str(out / "heatmaps") and summary["lines"] == 7

    again = json.loads(tools.run_cli_inprocess(*args).stdout)
    assert again["scored"] == 0 and again["skipped"] == 7 and again["total"] == 8
    assert again["anomalous"] == summary["anomalous"] and again["flagged"] == summary["flagged"]  # was: 0 and none
    assert not (out / LOCK_NAME).exists()  # was: .trd.lock left behind


def test_predict_and_test_show_progress_in_a_pipe(rob_root: Path, ref_run: Path, tmp_path: Path,
                                                  tools: SimpleNamespace, monkeypatch) -> None:
    monkeypatch.setenv("TRD_PROGRESS_SECONDS", "0")  # a line per batch instead of one per 10 s
    scans = _scans(rob_root, tmp_path / "scans", tools)
    (scans / "rgb" / "007.png").unlink()
    pred = tools.run_cli_inprocess("predict", "--model", str(ref_run / "model.pt"), "--input", str(scans),
                                   "--out", str(tmp_path / "p"), "--batch-size", "2")
    lines = tools.visible_lines(pred.stderr)
    assert pred.code == 0 and [ln for ln in lines if ln.startswith("predict: 2/7 scans (28 %), ")], lines
    assert lines[-1].startswith("predict: 7 scans in ")
    test = tools.run_cli_inprocess("test", "--model", str(ref_run / "model.pt"), "--out", str(tmp_path / "eval"))
    lines = tools.visible_lines(test.stderr)
    assert test.code == 0 and "test: scoring: 4 samples in " in "\n".join(lines), lines
    assert any(ln.startswith("test: regions and pictures: 4 samples in ") for ln in lines), lines
    assert not (tmp_path / "eval" / LOCK_NAME).exists()


def test_export_says_what_it_does_and_how_long_it_took(ref_run: Path, tmp_path: Path, tools: SimpleNamespace,
                                                       monkeypatch) -> None:
    monkeypatch.setenv("TRD_PROGRESS_SECONDS", "0")  # the closing line also for a step under 10 s
    result = tools.run_cli_inprocess("export", "--model", str(ref_run / "model.pt"), "--out", str(tmp_path / "m.onnx"))
    lines = tools.visible_lines(result.stderr)
    assert result.code == 0 and lines[0].startswith(f"export: exporting {ref_run / 'model.pt'} to ONNX"), lines
    assert lines[-1].startswith("export: done in "), lines


def test_a_terminal_gets_a_progress_bar(rob_root: Path, ref_run: Path, tmp_path: Path, tools: SimpleNamespace) -> None:
    """stderr on a pseudo-terminal: tqdm's bar (redrawn with carriage returns), then the summary line."""
    scans = _scans(rob_root, tmp_path / "scans", tools)
    (scans / "rgb" / "007.png").unlink()
    onnx = next((ref_run / ".onnx-cache").glob("*.onnx"))  # onnxruntime: no torch import, a quick process
    main, side = pty.openpty()
    fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal has a size
    proc = subprocess.Popen([sys.executable, "-m", "trd.cli", "predict", "--onnx", str(onnx), "--input", str(scans),
                             "--out", str(tmp_path / "p"), "--batch-size", "1"], stdout=subprocess.PIPE,
                            stderr=side, env={**tools.cli_env(), "TRD_PROGRESS_SECONDS": "0"})
    os.close(side)
    seen = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the other end closed: the process is gone
            break
        if not chunk:
            break
        seen += chunk
    os.close(main)
    assert proc.wait(timeout=120) == 0
    text = seen.decode(errors="replace").replace("\r\n", "\n")  # the terminal's line ends
    assert "\r" in text and "predict:" in text and "7/7" in text, text  # tqdm's bar: "predict: 100%|...| 7/7"
    assert tools.visible_lines(text)[-1].startswith("predict: 7 scans in ")
