"""`trd predict --watch`: 200 pairs written slowly by another process (one 3D file late, one pair
rewritten with other content), the watcher killed with SIGKILL in the middle and started again:
every scan is scored exactly once, into the ledger and the store (201 records: the rewritten pair
is a new scan), and SIGTERM ends the watch with exit code 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trd.data.identity import content_key
from trd.store import open_store

SCANNER = Path(__file__).with_name("scanner.py")
N = 200


def _lines(out: Path) -> list[dict]:
    path = out / "predictions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _wait(condition, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.slow
def test_a_watched_folder_scores_each_scan_once_across_a_kill(exported, synth_root: Path, tmp_path: Path) -> None:
    base = synth_root / "puck" / "test" / "good"
    folder, out, store = tmp_path / "scanner", tmp_path / "pred", str(tmp_path / "results.db")
    folder.mkdir()
    watcher = [sys.executable, "-m", "trd.cli", "predict", "--onnx", str(exported[1]), "--watch", str(folder), "--out",
               str(out), "--store", store, "--settle", "0.3", "--poll", "0.1", "--batch-size", "4"]
    scanner = subprocess.Popen([sys.executable, str(SCANNER), str(base / "rgb" / "000.png"),
                                str(base / "xyz" / "000.tiff"), str(folder), str(N), "0.01"],
                               stdout=subprocess.PIPE, text=True)
    logs = [(tmp_path / f"watch{i}.out").open("w+") for i in range(4)]  # files: a full pipe would stall the watcher
    first = subprocess.Popen(watcher, stdout=logs[0], stderr=logs[1], text=True)
    second = None
    try:
        _wait(lambda: len(_lines(out)) >= 60, 300, "60 scored pairs")
        os.kill(first.pid, signal.SIGKILL)  # mid-watch, mid-batch
        first.wait()
        second = subprocess.Popen(watcher, stdout=logs[2], stderr=logs[3], text=True)
        _wait(lambda: any(line["name"] == "0100" for line in _lines(out)), 300, "pair 100 scored")
        Path(f"{folder}.rewrite").touch()  # now the scanner writes pair 100 again, with other content
        assert scanner.wait(timeout=300) == 0 and scanner.stdout.read().strip() == "done"
        _wait(lambda: len(_lines(out)) >= N + 1 or second.poll() is not None, 300, f"{N + 1} records")
        time.sleep(1.0)  # anything more would be a repeat
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=60)
    finally:
        for process in (scanner, first, second):
            if process is not None and process.poll() is None:
                process.kill()
    stdout, stderr = ((tmp_path / f"watch{i}.out").read_text() for i in (2, 3))
    assert second.returncode == 0, stderr
    assert "SIGTERM received" in stderr and json.loads(stdout)["watched"] == str(folder)
    expected = {content_key(folder / "rgb" / f"{i:04d}.png", folder / "xyz" / f"{i:04d}.tiff") for i in range(N)}
    expected.add(content_key(Path(f"{folder}.first100.png"), folder / "xyz" / "0100.tiff"))
    keys = [line["key"] for line in _lines(out)]
    assert len(keys) == len(set(keys)) == N + 1  # none repeated
    assert set(keys) == expected  # none lost: the late pair, both versions of the rewritten one
    stored = open_store(store).query(limit=None)
    assert sorted(s.key for s in stored) == sorted(keys) and {s.source for s in stored} == {"predict"}
