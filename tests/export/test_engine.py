"""The inference engine: threads sized from the CPU affinity, the default engine choice, the cached export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from trd import api
from trd.checkpoint import load_checkpoint
from trd.config import load_config
from trd.errors import ConfigError
from trd.runtime.threads import available_cpus, inference_threads
from trd.workflows.engine import load_model

pytest.importorskip("onnxruntime")  # installed with the package

TINY = ["model.backbone=resnet18", "model.weights=none", "model.decoder_blocks=1,1,1", "model.bottleneck_blocks=1",
        "data.image_size=64", "train.epochs=1", "train.batch_size=2"]


@pytest.fixture(scope="module")
def model(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("engine")
    cfg = load_config(None, [*TINY, f"data.root={synth_root}", "data.category=puck", "data.cache_dir=none"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return api.fit(cfg, run / "run", progress=False, log=lambda _: None)


def _probe(code: str, cpus: set[int] | None = None, env: dict[str, str] | None = None) -> str:
    """Run ``code`` in a fresh interpreter pinned to ``cpus``; its stdout."""
    pin = f"import os; os.sched_setaffinity(0, {sorted(cpus)!r}); " if cpus else ""
    proc = subprocess.run([sys.executable, "-c", pin + code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_sessions_and_torch_follow_the_cpu_affinity(model: Path) -> None:
    onnx = next((model.parent / ".onnx-cache").glob("*.onnx"), None) or api.export(model, model.parent / "m.onnx")
    code = ("from trd.runtime.ort import open_onnx; e = open_onnx({p!r}{extra}); "
            "print(e.session.get_session_options().intra_op_num_threads, e.threads)")
    assert _probe(code.format(p=str(onnx), extra=""), cpus={0}) == "1 1"  # pinned to one core: one thread
    if available_cpus() >= 2:
        assert _probe(code.format(p=str(onnx), extra=""), cpus={0, 1}) == "2 2"
    assert _probe(code.format(p=str(onnx), extra=", threads=3"), cpus={0}) == "3 3"  # an explicit count wins
    assert _probe(code.format(p=str(onnx), extra=""), cpus={0}, env={"TRD_THREADS": "2"}) == "2 2"
    torch_code = (f"import torch; from trd.workflows.engine import load_model; "
                  f"m = load_model(__import__('pathlib').Path({str(model)!r}), engine='torch', log=lambda _: None); "
                  "print(torch.get_num_threads())")
    assert _probe(torch_code, cpus={0}) == "1"
    with pytest.raises(ConfigError, match="threads=0"):
        inference_threads(0)


def test_the_default_engine_is_onnxruntime_on_a_cpu_and_torch_where_it_must(model: Path) -> None:
    auto = load_model(model, log=lambda _: None)
    assert auto.name == "onnxruntime" and auto.files == (model,)
    assert load_model(model, engine="torch", log=lambda _: None).name == "torch"
    assert load_model(model, explain=True, log=lambda _: None).name == "torch"  # attribution needs the detector
    with pytest.raises(ConfigError, match="--explain needs the torch engine"):
        load_model(model, engine="onnx", explain=True)
    # The two engines agree (same outputs within 1e-5).
    rng = np.random.default_rng(0)
    rgb, x3d = (rng.standard_normal((2, 3, 64, 64)).astype(np.float32) for _ in range(2))
    a = auto.engine(rgb, x3d)
    b = load_model(model, engine="torch", log=lambda _: None).engine(rgb, x3d)
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-4, err_msg=key)
    # Without onnxruntime installed, auto falls back to torch (a real interpreter that cannot import it).
    block = ("import sys; sys.modules['onnxruntime'] = sys.modules['onnx'] = None  # importing them fails\n"
             "from pathlib import Path\nfrom trd.workflows.engine import load_model\n"
             f"print(load_model(Path({str(model)!r}), log=lambda _: None).name)")
    assert _probe(block) == "torch"


def test_the_cached_export_is_reused_and_replaced_when_the_model_changes(model: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model.pt"
    copy.write_bytes(model.read_bytes())
    logs: list[str] = []
    first = load_model(copy, log=logs.append)
    cache = tmp_path / ".onnx-cache"
    exports = sorted(p.name for p in cache.iterdir())
    assert len(exports) == 1 and any("exporting" in line for line in logs)
    logs.clear()
    load_model(copy, log=logs.append)
    assert logs == [] and sorted(p.name for p in cache.iterdir()) == exports  # reused, not exported again
    blob = load_checkpoint(copy, "model")
    blob["thresholds"]["image"] += 1.0  # another model content (e.g. recalibrated into the same file)
    torch.save(blob, copy)
    second = load_model(copy, log=logs.append)
    assert any("exporting" in line for line in logs)
    assert sorted(p.name for p in cache.iterdir()) != exports and len(list(cache.iterdir())) == 1
    assert second.thresholds.image == pytest.approx(first.thresholds.image + 1.0)


def test_predict_and_test_report_their_engine(model: Path, synth_root: Path, tmp_path: Path) -> None:
    inputs = synth_root / "puck" / "test" / "dent"
    fast = api.predict(model, tmp_path / "a", input_dir=inputs, log=lambda _: None)
    slow = api.predict(model, tmp_path / "b", input_dir=inputs, engine="torch", log=lambda _: None)
    assert (fast["engine"], slow["engine"]) == ("onnxruntime", "torch")
    scores = [[json.loads(line)["score"] for line in (tmp_path / d / "predictions.jsonl").read_text().splitlines()]
              for d in ("a", "b")]
    np.testing.assert_allclose(scores[0], scores[1], rtol=1e-5, atol=1e-5)
    on_onnx = api.evaluate(model, out_dir=tmp_path / "ea", panels=False, log=lambda _: None)
    on_torch = api.evaluate(model, out_dir=tmp_path / "eb", panels=False, engine="torch", log=lambda _: None)
    for key, value in on_torch["overall"].items():
        assert on_onnx["overall"][key] == pytest.approx(value, abs=1e-4), key
