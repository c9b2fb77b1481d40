"""Fixtures for end-to-end tests: a tiny model config on the session's synthetic category."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from trd.config import Config, load_config

TINY = [
    "model.backbone=resnet18", "model.weights=none", "model.decoder_blocks=1,1,1", "model.bottleneck_blocks=1",
    "data.image_size=64", "train.epochs=2", "train.batch_size=2",
]


@pytest.fixture(autouse=True)
def _quiet_random_teachers():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="teacher .* randomly initialised")
        yield


@pytest.fixture()
def tiny_cfg(synth_root: Path, tmp_path: Path) -> Config:
    """The smallest TRD that exercises every part: resnet18 teachers, 64 px, 2 epochs."""
    return load_config(None, [*TINY, f"data.root={synth_root}", "data.category=puck",
                              f"data.cache_dir={tmp_path / 'cache'}"])


@pytest.fixture()
def tiny_cli_args(synth_root: Path, tmp_path: Path) -> list[str]:
    """The same config as CLI arguments."""
    args = []
    for item in [*TINY, f"data.cache_dir={tmp_path / 'cache'}"]:
        args += ["--set", item]
    return [*args, "--data", str(synth_root), "--category", "puck"]
