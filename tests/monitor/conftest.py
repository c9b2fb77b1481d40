"""A tiny model of a simulated line, fit once per test session, and its scans scored by `trd predict`'s code.

``line_model``: (model.pt, its ONNX export) of synthetic ``puck`` at 32 px (resnet18 random teachers,
1 epoch) fit on 20 training and 49 validation scans, so its records carry p-values against 49
validation scores and the input-health moments of its 69 good scans (brightness: 64 of them). ``documented``: the
detection table of docs/MONITOR.md, which the tests hold the monitor to. ``score_line``: scans of
`trd.data.synth.write_line` scored by that export through `trd.workflows.predict.predict_samples`,
as records.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from trd.data.synth import Drift, generate, write_line

SIZE = 32
DOC = Path(__file__).parents[2] / "docs" / "MONITOR.md"


@pytest.fixture(scope="session")
def documented() -> dict[str, tuple[str, int]]:
    """docs/MONITOR.md's detection table: {drift: (the check that raises its alarm, alarm within N scans)}."""
    rows = re.findall(r"^\| ([^|]+?) \| `(\w+)` \| (\d+) \|", DOC.read_text(), re.M)
    return {drift: (check, int(limit)) for drift, check, limit in rows}


@pytest.fixture(scope="session")
def line_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pytest.importorskip("onnx")
    from trd import api
    from trd.config import load_config

    root = tmp_path_factory.mktemp("line-data")
    generate(root, ["puck"], size=SIZE, n_train=20, n_validation=49, n_test_good=0, n_test_per_defect=0, seed=3)
    run = tmp_path_factory.mktemp("line-model")
    cfg = load_config(None, ["model.backbone=resnet18", "model.weights=none", "model.decoder_blocks=1,1,1",
                             "model.bottleneck_blocks=1", f"data.image_size={SIZE}", "train.epochs=1",
                             "train.batch_size=4", "data.cache_dir=none", f"data.root={root}", "data.category=puck"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = api.fit(cfg, run / "run", progress=False, log=lambda _: None)
    return model, api.export(model, run / "model.onnx")


@pytest.fixture(scope="session")
def score_line(line_model: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Callable[..., list[dict]]:
    """``score_line(name, count, start=0, drift=None)``: write scans ``start..`` of the line (with
    ``drift``) and score them into the output folder ``<tmp>/<name>``; their records, in order."""
    from trd.data.samples import unlabelled_samples
    from trd.workflows.engine import load_model
    from trd.workflows.predict import PREDICTIONS, predict_samples

    model = load_model(None, line_model[1])
    base = tmp_path_factory.mktemp("line")

    def score(name: str, count: int, start: int = 0, drift: Drift | None = None) -> list[dict]:
        scans, out = base / f"{name}-scans", base / name
        write_line(scans, count, start=start, size=SIZE, drift=drift)
        out.mkdir()
        samples, _ = unlabelled_samples(model.config.data, scans)
        predict_samples(model, samples, out, batch_size=32, log=lambda _: None)
        return [json.loads(line) for line in (out / PREDICTIONS).read_text().splitlines()]

    return score
