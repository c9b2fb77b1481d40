"""``trd predict --ray`` on a real two-node Ray cluster (tests/distributed/conftest.py): the same
folder as a single-process run, a worker node killed mid-run loses and doubles nothing, a second
run skips everything."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trd import api
from trd.data.synth import generate

N = 300


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 distinct synthetic good pairs at 64 px (``rgb/`` + ``xyz/``)."""
    root = tmp_path_factory.mktemp("ray300")
    generate(root, ["puck"], size=64, n_train=1, n_validation=1, n_test_good=N, n_test_per_defect=0, seed=5)
    return root / "puck" / "test" / "good"


def _lines(out: Path) -> list[dict]:
    path = out / "predictions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _without_timings(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("timings_ms", "score")}


@pytest.mark.slow
def test_ray_scores_like_one_process_survives_a_dead_worker_node_and_resumes(ray_cluster, exported, pairs: Path,
                                                                             tmp_path: Path) -> None:
    _, onnx_file = exported
    # The single-process run, while the cluster starts (workers use 1 thread each: so does it).
    reference = api.predict(None, tmp_path / "single", input_dir=pairs, onnx_path=onnx_file, threads=1,
                            log=lambda _: None)
    assert reference["scored"] == N
    ray_cluster.wait_ready()
    out = tmp_path / "ray"
    cmd = ray_cluster.command(sys.executable, "-m", "trd.cli", "predict", "--onnx", str(onnx_file), "--input",
                              str(pairs), "--out", str(out), "--ray", ray_cluster.address, "--workers", "2")
    driver = subprocess.Popen(cmd, env=ray_cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed_at = None
    deadline = time.monotonic() + 300
    while driver.poll() is None and time.monotonic() < deadline:
        done = len(_lines(out))
        if killed_at is None and done >= 30 and ray_cluster.has_actor("worker"):
            assert ray_cluster.kill_node("worker") > 0
            killed_at = done
        time.sleep(0.1)
    stdout, stderr = driver.communicate(timeout=30)
    assert driver.returncode == 0, stderr[-3000:]
    assert killed_at is not None and killed_at < N, f"the worker node was not killed mid-run ({killed_at})"
    assert not ray_cluster.node_pids("worker")  # it stayed dead: the head finished the work
    summary = json.loads(stdout)
    assert summary["total"] == N and summary["failed"] == [] and summary["workers"] == 2
    assert summary["provider"] == "CPUExecutionProvider"

    # Exactly 300 records, one per scan, each equal to the single-process run's, with the same images.
    ours = {r["name"]: r for r in _lines(out)}
    theirs = {r["name"]: r for r in _lines(tmp_path / "single")}
    assert len(_lines(out)) == N and ours.keys() == theirs.keys()
    for name, record in ours.items():
        assert record["score"] == pytest.approx(theirs[name]["score"], abs=1e-6)
        assert _without_timings(record) == _without_timings(theirs[name])
        for key in ("heatmap", "mask"):
            assert (out / record[key]).read_bytes() == (tmp_path / "single" / record[key]).read_bytes()
    assert sorted(p.name for p in (out / "heatmaps").iterdir()) == sorted(p.name for p in (tmp_path / "single" / "heatmaps").iterdir())

    # Run again: everything is done, nothing is scored.
    again = subprocess.run(cmd, env=ray_cluster.env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["skipped"] == N and json.loads(again.stdout)["scored"] == 0
    assert len(_lines(out)) == N
