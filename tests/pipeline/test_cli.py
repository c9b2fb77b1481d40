"""The whole command-line path on a tiny synthetic category, as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys


def trd(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "trd.cli", *args], capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"trd {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_synth_fit_test_predict(tiny_cli_args, synth_root, tmp_path):
    counts = json.loads(trd("synth", "--out", str(tmp_path / "gen"), "--size", "64", "--categories", "tile",
                            "--n-train", "3", "--n-validation", "2", "--n-test-good", "1",
                            "--n-test-per-defect", "1").stdout)
    assert counts["tile"]["test"] == {"good": 1, "color": 1, "dent": 1, "crack": 1}

    run = tmp_path / "run"
    fit = trd("fit", *tiny_cli_args, "--out", str(run))
    assert "I-AUROC" in fit.stdout
    for name in ("model.pt", "config.toml", "metrics.json", "metrics.csv", "report.html", "report.md"):
        assert (run / name).is_file(), name
    assert not (run / "state.pt").exists() or (run / "state.pt").stat().st_size > 0
    pictures = sorted((run / "samples").rglob("*.png"))
    assert len(pictures) == 8 * 5  # (2 good + 3 defect types x 2) x (RGB, 3D, heatmap and one per branch)
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["per_defect"]) >= {"color", "dent", "crack"}

    assert "warning: 1 validation samples cannot support the requested 1 %" in fit.stdout  # said at fit time
    again = trd("test", "--model", str(run / "model.pt"), "--out", str(tmp_path / "again"))
    fit_lines = fit.stdout.strip().splitlines()
    after_model = next(i for i, line in enumerate(fit_lines) if line.startswith("model: ")) + 1
    assert again.stdout.strip().splitlines() == fit_lines[after_model:-1]  # same model, same data, same metrics
    assert "on this split: " in again.stdout and "95 % CI" in again.stdout and "recall color" in again.stdout

    # predict on a folder with one corrupt pair: it is reported, the others are scored
    inputs = tmp_path / "inputs"
    shutil.copytree(synth_root / "puck" / "test" / "dent", inputs)
    (inputs / "rgb" / "000.png").write_bytes(b"not a png")
    out = trd("predict", "--model", str(run / "model.pt"), "--input", str(inputs), "--out", str(tmp_path / "pred"),
              check=False)
    assert out.returncode == 1
    summary = json.loads(out.stdout)
    assert summary["scored"] == 1 and len(summary["failed"]) == 1
    assert "000.png" in summary["failed"][0]["error"]
    lines = (tmp_path / "pred" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert set(record["branch_shares"]) == {"rgb", "geo"}
    assert (tmp_path / "pred" / record["heatmap"]).is_file()


def test_cli_errors_are_one_line(tmp_path):
    proc = trd("fit", "--data", str(tmp_path / "missing"), "--category", "x", "--out", str(tmp_path / "r"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert "missing" in proc.stderr

    proc = trd("test", "--model", str(tmp_path / "nope.pt"), check=False)
    assert proc.returncode == 2 and "checkpoint file not found" in proc.stderr

    proc = trd("fit", "--set", "train.epochs=many", "--out", str(tmp_path / "r"), check=False)
    assert proc.returncode == 2 and "train.epochs" in proc.stderr
