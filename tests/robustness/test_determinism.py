"""Two CPU runs with the same seed, in separate run folders on the same data, are bitwise identical.

Exactly what docs/REPRODUCIBILITY.md claims: same machine, same software, same number of intra-op
threads (both runs here use OMP_NUM_THREADS=2, and model.pt records the count). Another thread
count changes the order of floating-point sums, hence the last bits of the weights.

metrics.json holds no timings (checked). model.pt does: its training history records ``seconds`` and
``pairs_per_s`` per epoch, the only entries allowed to differ.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from trd.checkpoint import load_checkpoint
from trd.training.trainer import TIMING_KEYS

def _tensors_equal(a: dict, b: dict, where: str) -> None:
    assert a.keys() == b.keys(), where
    for key in a:
        if isinstance(a[key], dict):
            _tensors_equal(a[key], b[key], f"{where}.{key}")
        else:
            assert torch.equal(a[key], b[key]), f"{where}.{key}"


def _keys(tree: object, prefix: str = "") -> set[str]:
    if isinstance(tree, dict):
        return set().union(*(_keys(v, f"{prefix}{k}.") | {f"{prefix}{k}"} for k, v in tree.items()))
    if isinstance(tree, list):
        return set().union(set(), *(_keys(v, prefix) for v in tree))
    return set()


@pytest.mark.slow
def test_two_runs_with_one_seed_are_bitwise_identical(rob_root: Path, rob_cache: Path, ref_run: Path, tmp_path: Path,
                                                      tools: SimpleNamespace) -> None:
    other = tmp_path / "run"
    tools.run_cli(*tools.fit_args(rob_root, rob_cache, other))

    metrics = json.loads((ref_run / "metrics.json").read_text())
    assert not {k.rsplit(".", 1)[-1] for k in _keys(metrics)} & (TIMING_KEYS | {"time", "timestamp", "date"})
    for name in ("metrics.json", "metrics.csv", "report.md"):
        assert (ref_run / name).read_bytes() == (other / name).read_bytes(), name

    a, b = load_checkpoint(ref_run / "model.pt", "model"), load_checkpoint(other / "model.pt", "model")
    assert a.keys() == b.keys()
    for part in ("students", "teachers", "scorer"):
        _tensors_equal(a[part], b[part], part)
    assert a["thresholds"] == b["thresholds"] and a["config"] == b["config"]
    history_a, history_b = a["extra"].pop("history"), b["extra"].pop("history")
    assert a["extra"] == b["extra"] and a["extra"]["threads"] == int(tools.CLI_THREADS)
    assert len(history_a) == len(history_b) == tools.EPOCHS
    for x, y in zip(history_a, history_b, strict=True):
        assert set(x) == set(y) and TIMING_KEYS <= set(x)
        assert {k: v for k, v in x.items() if k not in TIMING_KEYS} == {k: v for k, v in y.items() if k not in TIMING_KEYS}
