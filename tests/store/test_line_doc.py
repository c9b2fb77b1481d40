"""docs/LINE.md, run as written: every command of its ```bash blocks, in order, in a fresh folder, with
a tiny model (the fit gets the tiny settings and random teachers added, synth a small size) and a
simulated scanner copying scan pairs into the watched folder. `trd serve` and `trd predict --watch`
run in the background as the page says (a terminal each) and are stopped with SIGTERM, exit code 0."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trd.detector import load_detector
from trd.store import open_store

from ..serve.conftest import wait_ready

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--backbone-weights", "none", "--set", "model.backbone=resnet18", "--set", "model.decoder_blocks=1,1,1",
        "--set", "model.bottleneck_blocks=1", "--set", "data.image_size=64", "--set", "train.epochs=1",
        "--set", "train.batch_size=2", "--set", "data.cache_dir=none"]
SMALL_SYNTH = ["--size", "64", "--n-train", "4", "--n-validation", "2", "--n-test-good", "2", "--n-test-per-defect", "1"]


def commands() -> list[list[str]]:
    text = (ROOT / "docs" / "LINE.md").read_text(encoding="utf-8")
    lines = [ln for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S) for ln in block.splitlines()]
    return [shlex.split(ln.partition("#")[0]) for ln in lines if ln.strip()]


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


def _wait(condition, what: str, timeout: float = 300) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _scanner(data: Path, folder: Path) -> int:
    """Copy the synthetic test pairs into the watched folder as a scanner would; how many."""
    pairs = sorted((data / "puck" / "test").glob("*/rgb/*.png"))
    for folder_name in ("rgb", "xyz"):
        (folder / folder_name).mkdir(parents=True, exist_ok=True)
    for i, rgb in enumerate(pairs):
        xyz = rgb.parent.parent / "xyz" / f"{rgb.stem}.tiff"
        shutil.copyfile(xyz, folder / "xyz" / f"{i:03d}.tiff")
        shutil.copyfile(rgb, folder / "rgb" / f"{i:03d}.png")
    return len(pairs)


@pytest.mark.slow
def test_the_line_page_runs_in_order(tmp_path: Path) -> None:
    background: dict[str, subprocess.Popen] = {}
    outputs: list[str] = []
    scans = 0

    def stop(kind: str) -> None:
        process = background.pop(kind, None)
        if process is not None:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=120) == 0, process.stderr.read() if process.stderr else kind

    try:
        for words in commands():
            assert words[0] == "trd", words
            args = words[1:]
            if args[0] == "synth":
                args += SMALL_SYNTH
            elif args[0] == "fit":
                args += TINY
            elif args[:2] == ["store", "label"]:
                listed = [json.loads(x)["id"] for x in outputs[-1].splitlines()]  # from the `store list` before it
                args[args.index("ID")] = str(listed[0] if listed else open_store(
                    str(tmp_path / "runs/puck/results.db")).query(limit=1)[0].id)
            command = [sys.executable, "-m", "trd.cli", *args]
            if args[0] == "serve":
                stop("serve")
                background["serve"] = subprocess.Popen([*command, "--port", "0"], cwd=tmp_path, text=True,
                                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                wait_ready(background["serve"])
            elif "--watch" in args:
                stop("watch")
                out = tmp_path / args[args.index("--out") + 1]
                background["watch"] = subprocess.Popen([*command, "--settle", "0.3", "--poll", "0.1"], cwd=tmp_path,
                                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                scans = scans or _scanner(tmp_path / "line-data", tmp_path / args[args.index("--watch") + 1])
                _wait(lambda: _lines(out / "predictions.jsonl") == scans, f"{scans} scans in {out}")
            else:
                done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
                assert done.returncode == 0, f"{' '.join(words)}: {done.stderr}"
                outputs.append(done.stdout)
        stop("serve")
        stop("watch")
    finally:
        for process in background.values():
            process.kill()
    run = tmp_path / "runs" / "puck"
    store = open_store(str(run / "results.db"))
    assert store.count(source="predict") == 2 * scans  # once per model, each scan once
    assert store.count(label="good") == 1
    assert load_detector(run / "model.v2.pt")[2].n_validation == load_detector(run / "model.pt")[2].n_validation + 1
    assert (tmp_path / "reviewed" / "labels.csv").is_file() and (tmp_path / "reviewed.csv").is_file()
