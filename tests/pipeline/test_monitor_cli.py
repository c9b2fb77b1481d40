"""``trd monitor`` over the predictions.jsonl that ``trd predict`` wrote, as cron or CI runs it: the
runtime install alone, exit code 1 on an alarm, one-line errors for what is not a record file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trd import api
from trd.data.synth import Drift, write_line

pytest.importorskip("onnx")


def _predict(onnx: Path, scans: Path, out: Path) -> Path:
    api.predict(None, out, input_dir=scans, onnx_path=onnx, log=lambda _: None)
    return out


def _lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith("TORCH_MODULES")]


def test_monitor_reports_a_darkened_line_with_exit_code_1(exported: tuple[Path, Path], tmp_path: Path,
                                                          trd_without_torch) -> None:
    good = _predict(exported[1], write_line_folder(tmp_path / "good", Drift()), tmp_path / "p-good")
    quiet = trd_without_torch("monitor", str(good), "--window", "20")
    assert quiet.returncode == 0 and "TORCH_MODULES []" in quiet.stderr, quiet.stderr
    lines = quiet.stdout.splitlines()
    assert lines[0] == f"monitor: 20 records of {good}; the checks on the last 20 (window 20, false-alarm level 0.001 per check)"
    assert lines[-1] == "no alarm" and any(line.startswith("OK       RGB brightness: mean ") for line in lines)

    dark = _predict(exported[1], write_line_folder(tmp_path / "dark", Drift(brightness=0.5)), tmp_path / "p-dark")
    alarm = trd_without_torch("monitor", str(dark / "predictions.jsonl"), "--window", "20")
    assert alarm.returncode == 1 and "TORCH_MODULES []" in alarm.stderr, alarm.stderr
    assert alarm.stdout.splitlines()[-1] == "ALARM: the line is drifting (exit code 1)"
    assert any(line.startswith("ALARM    RGB brightness: mean ") and "first raised at record " in line
               for line in alarm.stdout.splitlines()), alarm.stdout
    summary = json.loads(trd_without_torch("monitor", str(dark), "--window", "20", "--json").stdout)
    assert summary["alarm"] and summary["records"] == 20 and summary["skipped_lines"] == 0
    first = summary["first_alarm"]["brightness"]
    assert 2 <= first["record"] <= 20 and first["name"] == f"{first['record'] - 1:05d}"
    assert {c["name"]: c["state"] for c in summary["checks"]}["brightness"] == "alarm"


def write_line_folder(folder: Path, drift: Drift) -> Path:
    write_line(folder, 20, size=64, drift=drift)
    return folder


def test_monitor_reads_a_ledger_being_written_and_skips_what_is_not_a_record(exported: tuple[Path, Path],
                                                                             tmp_path: Path, trd_without_torch) -> None:
    out = _predict(exported[1], write_line_folder(tmp_path / "scans", Drift()), tmp_path / "p")
    ledger = out / "predictions.jsonl"
    lines = ledger.read_bytes().splitlines(keepends=True)
    edited = json.dumps(json.loads(lines[5]) | {"p_value": 7.0}).encode() + b"\n"  # a p-value no record has
    ledger.write_bytes(b"".join(lines[:3]) + b"not json\n" + b"".join(lines[3:]) + edited + lines[4][:40])  # + torn
    result = trd_without_torch("monitor", str(out), "--window", "20", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["records"] == 20  # the torn last line is one being written: left out
    assert _lines(result.stderr) == [f"monitor: skipped 2 line(s) of {out} that are not trd records (the first: line 4)"]


def test_monitor_errors_are_one_line(tmp_path: Path, trd_without_torch, messages) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "scan.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64) + b"\n")
    cases = {
        "monitor a missing file": (["monitor", str(tmp_path / "missing.jsonl")], "input",
                                   "missing.jsonl: file not found; give a predictions.jsonl or a `trd predict --out` folder"),
        "monitor a folder without predictions.jsonl": (["monitor", str(tmp_path / "empty")], "input",
                                                       "empty: no predictions.jsonl in this folder"),
        "monitor a file that holds no records": (["monitor", str(tmp_path / "scan.png")], "input",
                                                 "scan.png: holds no trd records (not a predictions.jsonl?)"),
        "monitor --window 1": (["monitor", str(tmp_path / "empty"), "--window", "1"], "setting",
                               "monitor window must be an integer >= 2 scans, got 1"),
        "monitor --alpha 0.7": (["monitor", str(tmp_path / "empty"), "--alpha", "0.7"], "setting",
                                "monitor alpha (false-alarm level per check and window) must be in (0, 0.5), got 0.7"),
    }
    for case, (args, section, words) in cases.items():
        result = trd_without_torch(*args)
        errors = [line for line in _lines(result.stderr) if line.startswith("error: ")]
        assert result.returncode == 2 and len(errors) == 1 and words in errors[0], (case, result.stderr)
        messages.record(section, case, errors[0])
