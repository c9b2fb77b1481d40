"""Checkpoints written before the geometry branch was renamed ("3d" -> "geo", format version 1) load unchanged."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from trd.checkpoint import load_checkpoint
from trd.config import load_config
from trd.detector import Detector, load_detector, save_detector
from trd.model.trd import build_model
from trd.scoring.maps import Scorer
from trd.scoring.threshold import Thresholds

TINY = ["model.backbone=resnet18", "model.weights=none", "model.decoder_blocks=1,1,1",
        "model.bottleneck_blocks=1", "data.image_size=64"]


def _as_version_1(blob: dict) -> dict:
    """The same content in the version-1 layout: the geometry branch is called "3d" everywhere."""
    def rename(entries: dict) -> dict:
        out = {}
        for key, value in entries.items():
            parts = key.split(".")
            out[".".join("3d" if p == "geo" and i < 2 else p for i, p in enumerate(parts))] = value
        return out

    old = dict(blob, version=1)
    for key in ("students", "teachers", "scorer", "optimizers", "schedulers"):
        if isinstance(old.get(key), dict):
            old[key] = rename(old[key])
    old["extra"] = {"history": [{"epoch": 1, "loss_rgb": 0.5, "loss_3d": 0.4}]}
    return old


def test_a_version_1_model_loads_with_identical_outputs(tmp_path: Path) -> None:
    cfg = load_config(None, TINY)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(cfg.model, 64).eval()
    scorer = Scorer(["rgb", "geo"])
    scorer.set_stats({"rgb": (0.5, 0.1), "geo": (0.4, 0.2)})
    detector = Detector(model, scorer).eval()
    save_detector(tmp_path / "new.pt", detector, cfg, Thresholds(1.0, 2.0, 0.01, 0.01))
    blob = torch.load(tmp_path / "new.pt", weights_only=True)
    old = _as_version_1(blob)
    assert any(k.startswith("3d.") for k in old["students"]) and "norm.3d.mean" in old["scorer"]
    torch.save(old, tmp_path / "old.pt")

    loaded, _, thresholds, extra = load_detector(tmp_path / "old.pt")
    assert thresholds.image == 1.0 and extra["history"][0]["loss_geo"] == 0.4
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected, got = detector(x, x.flip(0)), loaded(x, x.flip(0))
    assert set(got) == set(expected) and "share_geo" in got
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
    upgraded = load_checkpoint(tmp_path / "old.pt", "model")
    assert upgraded["version"] == 2 and set(upgraded["teachers"]) == {"rgb", "geo"}
