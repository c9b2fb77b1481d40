"""``trd predict --shard i/N`` (a job array of plain processes) and ``trd predict-merge``: the parts
cover every sample once, the merge equals one single run, and merging again adds nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trd import api
from trd.data.samples import Sample
from trd.data.synth import generate
from trd.workflows.shards import Shard, shard_of


def _samples(folder: Path, names: range) -> list[Sample]:
    return [Sample(folder / "rgb" / f"{i:04d}.png", folder / "xyz" / f"{i:04d}.tiff", None, 0, "good", "line", "test",
                   "xyz_tiff") for i in names]


def test_parts_cover_every_sample_once_and_do_not_move_when_files_arrive(tmp_path: Path) -> None:
    samples = _samples(tmp_path, range(400))
    parts = [shard_of(samples, Shard(i, 4), tmp_path) for i in range(1, 5)]
    assert sorted(s.rgb for p in parts for s in p) == sorted(s.rgb for s in samples)  # each sample, once
    assert all(70 <= len(p) <= 130 for p in parts), [len(p) for p in parts]
    later = _samples(tmp_path, range(50, 500))  # some files gone, new ones arrived
    before, still = {s.rgb for s in samples}, {s.rgb for s in later}
    for i, part in enumerate(parts, start=1):
        now = {s.rgb for s in shard_of(later, Shard(i, 4), tmp_path)}
        assert now & before == {s.rgb for s in part} & still  # no file changed its part
    assert shard_of(samples, Shard(1, 1), tmp_path) == samples


def _records(out: Path) -> dict[str, dict]:
    return {r["name"]: r for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}


def test_sharded_run_merges_into_what_one_run_writes(exported, tmp_path: Path) -> None:
    generate(tmp_path / "data", ["puck"], size=64, n_train=1, n_validation=1, n_test_good=12, n_test_per_defect=0,
             seed=7)
    inputs = tmp_path / "data" / "puck" / "test" / "good"
    single = api.predict(None, tmp_path / "single", input_dir=inputs, onnx_path=exported[1], threads=1,
                         log=lambda _: None)
    parts = [tmp_path / f"part-{i}" for i in (1, 2, 3)]
    counts = [api.predict(None, part, input_dir=inputs, onnx_path=exported[1], threads=1, shard=f"{i}/3",
                          log=lambda _: None)["scored"] for i, part in enumerate(parts, start=1)]
    assert sum(counts) == single["scored"] == 12 and all(counts)
    merge = [sys.executable, "-m", "trd.cli", "predict-merge", *map(str, parts), "--out", str(tmp_path / "all")]
    done = subprocess.run(merge, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) | {"predictions": ""} == {"merged": 12, "duplicates": 0, "parts": 3,
                                                            "total": 12, "predictions": ""}
    merged, one = _records(tmp_path / "all"), _records(tmp_path / "single")
    assert merged.keys() == one.keys()
    for name, record in merged.items():
        assert {k: v for k, v in record.items() if k != "timings_ms"} == \
            {k: v for k, v in one[name].items() if k != "timings_ms"}
        for key in ("heatmap", "mask"):
            assert (tmp_path / "all" / record[key]).read_bytes() == (tmp_path / "single" / record[key]).read_bytes()
    again = subprocess.run(merge, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and json.loads(again.stdout)["merged"] == 0
    assert json.loads(again.stdout)["duplicates"] == 12 and len(_records(tmp_path / "all")) == 12


@pytest.mark.parametrize("text", ["1/1", "3/8", " 2 / 2 "])
def test_shard_text(text: str) -> None:
    from trd.workflows.shards import parse_shard

    index, count = (int(x) for x in text.split("/"))
    assert parse_shard(text) == Shard(index, count)
