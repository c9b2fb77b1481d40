"""A long ``trd predict`` (1000 pairs) holds flat memory: nothing grows with the number of samples.

The process's RSS is sampled while it runs, together with how many heatmaps it has written. Bound:
from sample 200 (model loaded, allocator and caches warm) to the last sample, RSS may grow by less
than 30 MB. Measured without a leak: 0-8 MB (allocator noise). Keeping a sample's input tensors (RGB +
3D, 2 x 48 KB) would add ~77 MB over 800 samples; keeping only its 64x64 float32 map (16 KB) added
117 MB when tried (each kept block also pins allocator pages), so any per-sample leak trips it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

N_SAMPLES = 1000
GROWTH_LIMIT_MB = 30.0


@pytest.mark.slow
def test_predict_memory_stays_flat(rob_root: Path, ref_run: Path, tmp_path: Path, tools: SimpleNamespace) -> None:
    inputs, out = tmp_path / "inputs", tmp_path / "pred"
    tools.scans(rob_root, inputs, N_SAMPLES)  # distinct scans: the same content is scored once
    # Output to files, not pipes: the summary lists every flagged scan and may exceed a pipe's buffer.
    stdout_file, stderr_file = (tmp_path / "stdout").open("w+b"), (tmp_path / "stderr").open("w+b")
    proc = subprocess.Popen(
        [sys.executable, "-m", "trd.cli", "predict", "--model", str(ref_run / "model.pt"), "--input", str(inputs),
         "--out", str(out), "--batch-size", "16"],
        stdout=stdout_file, stderr=stderr_file, env=tools.cli_env())
    watched = psutil.Process(proc.pid)
    samples: list[tuple[int, float]] = []  # (heatmaps written, RSS in MB)
    heatmaps = out / "heatmaps"
    try:
        while proc.poll() is None:
            try:
                rss = watched.memory_info().rss / 2**20
                done = len(os.listdir(heatmaps)) if heatmaps.is_dir() else 0
            except (psutil.Error, FileNotFoundError):
                break
            samples.append((done, rss))
            time.sleep(0.05)
        proc.wait(timeout=300)
    finally:
        proc.kill()
    stdout, stderr = (tmp_path / "stdout").read_bytes(), (tmp_path / "stderr").read_bytes()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert json.loads(stdout)["scored"] == N_SAMPLES

    at_200 = [rss for done, rss in samples if 150 <= done <= 250]
    # Until the last heatmap: at interpreter exit RSS jumps by 40-90 MB (measured; destructors page in
    # library code), which happens once, after the work, whatever the number of samples.
    late = [rss for done, rss in samples if 800 <= done < N_SAMPLES]
    assert at_200 and late, f"too few RSS samples: {samples[:: max(1, len(samples) // 20)]}"
    growth = max(late) - max(at_200)
    print(f"RSS {max(at_200):.1f} MB at sample 200, growth to sample 1000: {growth:.2f} MB")
    assert growth < GROWTH_LIMIT_MB, f"RSS grew {growth:.1f} MB from sample 200 to 1000"
