"""`trd reproduce` on a fixture in MVTec 3D-AD layout: per-category runs, the paper table, the plan
and the estimate (the kill-and-resume test is in tests/robustness/test_reproduce_job.py)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch

from trd import api
from trd.config import load_config
from trd.errors import ConfigError
from trd.workflows.estimate import CategoryWork, Warmup, describe, estimate


@pytest.fixture()
def mvtec_root(synth_root, tmp_path):
    root = tmp_path / "mvtec3d"
    for name in ("bagel", "cookie"):  # real MVTec 3D-AD category names
        shutil.copytree(synth_root / "puck", root / name)
    return root


def test_reproduce_writes_the_table_beside_the_published_numbers(tiny_cfg, mvtec_root, tmp_path):
    tiny_cfg.data.root = str(mvtec_root)
    tiny_cfg.train.epochs = 1
    lines: list[str] = []
    text = api.reproduce(tiny_cfg, tmp_path / "runs", ["bagel"], log=lines.append)
    assert (tmp_path / "runs" / "bagel" / "model.pt").is_file()
    assert (tmp_path / "runs" / "reproduction.md").read_text() == text
    for header in ("I-AUROC", "P-AUROC", "AUPRO@30%"):
        assert header in text
    assert "98.9" in text  # published TRD RGB+Normal I-AUROC for bagel
    assert "bagel" in text and "dowel" in text  # all ten columns, missing ones marked
    # AU-PRO: both curves evaluated; the published numbers compared with the 100-threshold one.
    metrics = json.loads((tmp_path / "runs" / "bagel" / "metrics.json").read_text())
    assert {"aupro@0.3", "aupro100@0.3", "aupro@0.01", "aupro100@0.01"} <= set(metrics["overall"])
    assert "| ours (100-threshold curve) |" in text and "| ours (exact curve) |" in text
    assert "aupro@L is the official exact MVTec curve" in (tmp_path / "runs" / "bagel" / "report.md").read_text()
    assert lines[0].startswith("plan: 1 categories x 1 epochs") and any(ln.startswith("== bagel (1/1)") for ln in lines)

    # Run again: with settings that change results it is refused, naming them ...
    other = copy.deepcopy(tiny_cfg)
    other.train.lr, other.data.num_workers = 0.01, 1  # num_workers cannot change results: not named
    with pytest.raises(ConfigError, match=r"reproduction.json: .*other settings \(train.lr: 0.005 -> 0.01\)"):
        api.reproduce(other, tmp_path / "runs", ["bagel"], log=lambda _: None)
    # ... with the same settings the finished category is skipped, the table rebuilt from the saved results.
    lines.clear()
    assert api.reproduce(tiny_cfg, tmp_path / "runs", ["bagel"], log=lines.append) == text
    assert "== bagel (1/1): finished, skipped" in lines and "estimate: none (nothing left to do)" in lines[0]


def test_dry_run_prints_the_plan_and_estimate_and_trains_nothing(tiny_cfg, mvtec_root, tmp_path):
    tiny_cfg.data.root = str(mvtec_root)
    tiny_cfg.data.sobel_preset = "trd-per-class"
    lines: list[str] = []
    plan = api.reproduce(tiny_cfg, tmp_path / "runs", ["bagel", "cookie"], dry_run=True, log=lines.append)
    assert lines == [plan]
    assert plan.startswith("plan: 2 categories x 2 epochs (resnet18 @ 64 px, normals, batch 2, fp32) on cpu")
    assert "pairs: train 8, validation 4, test 16" in plan
    assert "estimate: 2 categories x 2 epochs, ~" in plan and "on this device" in plan and " in " in plan
    assert list((tmp_path / "runs").iterdir()) == []  # the warm-up's probes are gone; nothing trained


WARMUP = Warmup(seconds=1.0, batch=2, teacher_s=0.5, step_s=1.0, infer_s=0.25, load_s=0.1,
                write_bytes_per_s=1e9, state_bytes=4_000_000_000, model_bytes=1_500_000_000,
                cache_bytes_per_pair=1_000_000, panel_bytes=100_000)


def test_estimate_arithmetic_for_the_paper_config():
    cfg = load_config()  # paper: 200 epochs, teacher cache (8 GiB: fits 244 pairs), 10-minute checkpoints
    work = [CategoryWork("bagel", 244, 22, 110, epochs_left=200),
            CategoryWork("carrot", 286, 29, 159, epochs_left=0, done=True)]
    est = estimate(work, cfg, WARMUP)
    assert est.seconds["training"] == pytest.approx(244 * (200 * 1.0 + 0.5))  # teachers once (cached)
    # 244.6 s per epoch: a write every 3rd epoch (12.2 min >= 10), 66 of them, and after epoch 200.
    assert est.seconds["checkpoints"] == pytest.approx(67 * 4.0)
    assert est.seconds["loading"] == pytest.approx((244 + 132) * 0.1)  # once: preprocessing cache
    assert est.seconds["evaluation"] == pytest.approx(132 * 0.25)
    assert est.out_bytes == 2 * 1_500_000_000 + (110 + 159) * 100_000  # finished categories count too
    assert est.state_bytes == 4_000_000_000 and est.cache_bytes == (376 + 474) * 1_000_000

    cfg.train.checkpoint_minutes, cfg.train.keep_state, cfg.train.cache_teacher = 0.0, True, False
    resumed = [CategoryWork("bagel", 244, 22, 110, epochs_left=50), CategoryWork("cookie", 210, 22, 131, 200)]
    est = estimate(resumed, cfg, WARMUP)
    assert est.seconds["training"] == pytest.approx(244 * 50 * 1.5 + 210 * 200 * 1.5)  # teachers every epoch
    assert est.seconds["checkpoints"] == pytest.approx((50 + 200) * 4.0)  # every epoch
    assert est.state_bytes == 2 * 4_000_000_000  # keep_state: one state per category stays
    text = describe(resumed, cfg, torch.device("cpu"), WARMUP, est, Path("runs/paper"))
    assert "resumed: bagel (150/200 epochs done)" in text and f"~{est.total_s / 3600:.1f} h" in text
    assert "disk ~3.0 GB in runs/paper, +8.0 GB train state" in text
