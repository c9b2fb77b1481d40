"""``trd predict`` never loses or mixes results: appended lines, resume, one writer, real SIGKILL.

Each test runs the real command (in-process or as a subprocess) on copies of the robustness test
pairs. What a line promises: it parses, and its heatmap and mask exist.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from trd.checkpoint import load_checkpoint
from trd.workflows.predict import PREDICTIONS

SOURCES = ("good", "color", "crack", "dent")


def _inputs(rob_root: Path, folder: Path, n: int) -> Path:
    """``n`` pairs named 0000.. as hard links to the 4 test pairs (distinct names, real files)."""
    (folder / "rgb").mkdir(parents=True)
    (folder / "xyz").mkdir()
    for i in range(n):
        src = rob_root / "puck" / "test" / SOURCES[i % 4]
        os.link(src / "rgb" / "000.png", folder / "rgb" / f"{i:04d}.png")
        os.link(src / "xyz" / "000.tiff", folder / "xyz" / f"{i:04d}.tiff")
    return folder


def _lines(out: Path) -> list[dict]:
    """Every line of predictions.jsonl, each checked: it parses and its files exist."""
    records = []
    for line in (out / PREDICTIONS).read_text().splitlines():
        record = json.loads(line)
        assert (out / record["heatmap"]).is_file() and (out / record["mask"]).is_file(), record
        records.append(record)
    return records


def _predict(tools: SimpleNamespace, model: Path, out: Path, *args: str):
    return tools.run_cli_inprocess("predict", "--model", str(model), "--out", str(out), *args)


def test_single_pair_runs_into_one_folder_accumulate(rob_root: Path, ref_run: Path, tmp_path: Path,
                                                      tools: SimpleNamespace) -> None:
    out = tmp_path / "pred"
    for defect in SOURCES[:3]:
        pair = rob_root / "puck" / "test" / defect
        copy = tmp_path / defect
        copy.mkdir()
        os.link(pair / "rgb" / "000.png", copy / f"{defect}.png")
        os.link(pair / "xyz" / "000.tiff", copy / f"{defect}.tiff")
        result = _predict(tools, ref_run / "model.pt", out, "--rgb", str(copy / f"{defect}.png"),
                          "--xyz", str(copy / f"{defect}.tiff"))
        assert result.code == 0, result.stderr
    records = _lines(out)
    assert [r["name"] for r in records] == ["good", "color", "crack"]  # was: 1 line, 3 heatmaps
    assert sorted(p.name for p in (out / "heatmaps").iterdir()) == sorted(
        f"{r['name']}-{r['key'][:12]}.png" for r in records)

    # the same name from another file is another scan: scored beside the first, nothing overwritten
    other = tmp_path / "other"
    other.mkdir()
    os.link(rob_root / "puck/test/dent/rgb/000.png", other / "good.png")
    os.link(rob_root / "puck/test/dent/xyz/000.tiff", other / "good.tiff")
    before = (out / records[0]["heatmap"]).read_bytes()
    result = _predict(tools, ref_run / "model.pt", out, "--rgb", str(other / "good.png"), "--xyz", str(other / "good.tiff"))
    assert result.code == 0, result.stderr
    goods = [r for r in _lines(out) if r["name"] == "good"]
    assert len(goods) == 2 and goods[0]["key"] != goods[1]["key"] and goods[0]["heatmap"] != goods[1]["heatmap"]
    assert (out / records[0]["heatmap"]).read_bytes() == before


def test_rerun_skips_done_samples_and_another_model_is_refused(rob_root: Path, ref_run: Path, tmp_path: Path,
                                                                tools: SimpleNamespace, messages) -> None:
    inputs, out = _inputs(rob_root, tmp_path / "in", 6), tmp_path / "pred"
    assert _predict(tools, ref_run / "model.pt", out, "--input", str(inputs)).code == 0
    first = (out / PREDICTIONS).read_bytes()
    again = _predict(tools, ref_run / "model.pt", out, "--input", str(inputs))
    assert again.code == 0 and "6 of 6 samples are already in" in again.stderr
    assert json.loads(again.stdout)["scored"] == 0 and (out / PREDICTIONS).read_bytes() == first

    other = tmp_path / "other.pt"  # another model: the same one with another image threshold
    blob = load_checkpoint(ref_run / "model.pt", "model")
    blob["thresholds"]["image"] += 1.0
    torch.save(blob, other)
    refused = _predict(tools, other, out, "--input", str(inputs))
    assert refused.code == 3 and "holds predictions of another model" in refused.stderr
    messages.record("output", "predict --out holding another model's predictions", tools.visible_lines(refused.stderr)[-1])
    assert (out / PREDICTIONS).read_bytes() == first  # refusal changes nothing
    replaced = _predict(tools, ref_run / "model.pt", out, "--input", str(inputs), "--overwrite")
    assert replaced.code == 0 and len(_lines(out)) == 6


def test_torn_last_line_is_dropped_and_rescored(rob_root: Path, ref_run: Path, tmp_path: Path,
                                                tools: SimpleNamespace) -> None:
    inputs, out = _inputs(rob_root, tmp_path / "in", 4), tmp_path / "pred"
    assert _predict(tools, ref_run / "model.pt", out, "--input", str(inputs)).code == 0
    text = (out / PREDICTIONS).read_text().splitlines()
    (out / PREDICTIONS).write_text("\n".join(text[:3]) + "\n" + text[3][: len(text[3]) // 2])  # killed mid-write
    (out / "heatmaps" / json.loads(text[0])["heatmap"].split("/")[-1]).unlink()  # a line whose file is gone
    result = _predict(tools, ref_run / "model.pt", out, "--input", str(inputs))
    assert result.code == 0 and "dropped 2 incomplete line(s)" in result.stderr
    records = _lines(out)
    assert sorted(r["name"] for r in records) == ["0000", "0001", "0002", "0003"]


@pytest.mark.slow
def test_sigkill_mid_predict_keeps_every_line_and_a_rerun_completes(rob_root: Path, ref_run: Path, tmp_path: Path,
                                                                     tools: SimpleNamespace) -> None:
    n = 120
    inputs, out = _inputs(rob_root, tmp_path / "in", n), tmp_path / "pred"
    args = [sys.executable, "-m", "trd.cli", "predict", "--model", str(ref_run / "model.pt"), "--input", str(inputs),
            "--out", str(out), "--batch-size", "1"]
    proc = subprocess.Popen(args, env=tools.cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            path = out / PREDICTIONS
            if path.is_file() and path.read_bytes().count(b"\n") >= 12:
                break
            time.sleep(0.005)
        assert proc.poll() is None, "predict finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    kept = _lines(out)  # every line present parses and matches its files (a torn tail is the only risk)
    assert 12 <= len(kept) < n
    rerun = tools.run_cli("predict", "--model", str(ref_run / "model.pt"), "--input", str(inputs), "--out", str(out))
    records = _lines(out)
    assert len(records) == n and len({r["name"] for r in records}) == n
    assert json.loads(rerun.stdout)["skipped"] >= len(kept) - 1


@pytest.mark.slow
def test_a_second_writer_on_a_busy_folder_stops_at_once(rob_root: Path, ref_run: Path, tmp_path: Path,
                                                        tools: SimpleNamespace, messages) -> None:
    inputs, out = _inputs(rob_root, tmp_path / "in", 2000), tmp_path / "pred"
    first = subprocess.Popen([sys.executable, "-m", "trd.cli", "predict", "--model", str(ref_run / "model.pt"),
                              "--input", str(inputs), "--out", str(out), "--batch-size", "1"],
                             env=tools.cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (out / PREDICTIONS).is_file() and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.01)
        assert first.poll() is None
        started = time.monotonic()
        second = tools.run_cli("predict", "--model", str(ref_run / "model.pt"), "--input", str(inputs),
                               "--out", str(out), check=False)
        fit = tools.run_cli(*tools.fit_args(rob_root, tmp_path / "cache", out, "--no-test"), check=False)
        assert time.monotonic() - started < 60
    finally:
        first.kill()
        first.wait()
    for result in (second, fit):
        lines = tools.visible_lines(result.stderr)
        assert result.returncode == 3 and len(lines) == 1, result.stderr
        assert f"in use by trd predict (pid {first.pid} on " in lines[0]
        messages.record("output", "a second predict or fit on a folder that predict is writing", lines[0])
    assert not (out / "config.toml").exists()  # the refused fit wrote nothing


def test_predict_keeps_no_preprocessing_cache(rob_root: Path, rob_cache: Path, ref_run: Path, tmp_path: Path,
                                              tools: SimpleNamespace, monkeypatch) -> None:
    # The reference model was trained with data.cache_dir = rob_cache; scoring must grow no cache
    # (a line scores millions of scans once each): neither that one, nor the default one, nor one
    # relative to the working directory.
    monkeypatch.setenv("TRD_CACHE", str(tmp_path / "env_cache"))
    monkeypatch.chdir(tmp_path)
    inputs = _inputs(rob_root, tmp_path / "in", 8)
    before = set(rob_cache.rglob("*.npy"))
    assert _predict(tools, ref_run / "model.pt", tmp_path / "pred", "--input", str(inputs)).code == 0
    assert set(rob_cache.rglob("*.npy")) == before and not list(tmp_path.rglob("*.npy"))
