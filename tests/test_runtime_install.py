"""The runtime install scores exported models without torch: proven in interpreters that cannot import it.

Each check runs ``trd`` in a fresh interpreter where ``import torch`` (and torchvision) fails, as on a
line PC with ``pip install trd-anomaly`` alone: ``predict --onnx`` scores exactly like the full
install, and the commands that need training say which extra to install, in one line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from trd import api
from trd.store import open_store

pytest.importorskip("onnx")


def test_predict_with_an_export_needs_no_torch(exported: tuple[Path, Path], synth_root: Path, tmp_path: Path,
                                               trd_without_torch) -> None:
    model, onnx_file = exported
    inputs = synth_root / "puck" / "test" / "crack"
    result = trd_without_torch("predict", "--onnx", str(onnx_file), "--input", str(inputs), "--out", str(tmp_path / "p"))
    assert result.returncode == 0, result.stderr
    assert "TORCH_MODULES []" in result.stderr  # nothing of torch was imported
    summary = json.loads(result.stdout)
    assert summary["scored"] == 2 and summary["engine"] == "onnxruntime"
    lines = [json.loads(line) for line in (tmp_path / "p" / "predictions.jsonl").read_text().splitlines()]
    full = api.predict(model, tmp_path / "q", input_dir=inputs, engine="torch", log=lambda _: None)
    assert full["scored"] == 2
    reference = [json.loads(line) for line in (tmp_path / "q" / "predictions.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([r["score"] for r in lines], [r["score"] for r in reference], rtol=1e-5, atol=1e-5)
    assert (tmp_path / "p" / lines[0]["heatmap"]).is_file()
    stored = open_store(str(onnx_file.parent / "results.db")).query(model=lines[0]["model"]["sha256"], limit=None)
    assert {line["key"] for line in lines} <= {s.key for s in stored}  # the store written without torch
    assert "SQLALCHEMY_LOADED True" in result.stderr


def test_predict_without_a_store_never_loads_the_database_code(exported: tuple[Path, Path], synth_root: Path,
                                                                tmp_path: Path, trd_without_torch) -> None:
    """``--store none``: SQLAlchemy (~0.15 s of every start) is not imported (issue 24)."""
    result = trd_without_torch("predict", "--onnx", str(exported[1]), "--input", str(synth_root / "puck" / "test" / "crack"),
                               "--out", str(tmp_path / "p"), "--store", "none")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["scored"] == 2 and json.loads(result.stdout)["store"] is None
    assert "SQLALCHEMY_LOADED False" in result.stderr


def test_training_commands_name_the_extra_to_install(exported: tuple[Path, Path], synth_root: Path,
                                                     tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
                                                     monkeypatch: pytest.MonkeyPatch, trd_without_torch) -> None:
    model, _ = exported
    fresh = tmp_path_factory.mktemp("never-scored") / "model.pt"  # no export cached anywhere: predict needs torch
    shutil.copyfile(model, fresh)
    monkeypatch.setenv("TRD_CACHE", str(fresh.parent / "cache" / "preprocess"))
    for args in (["fit", "--data", str(synth_root), "--category", "puck", "--out", str(tmp_path / "run")],
                 ["test", "--model", str(model)],
                 ["predict", "--model", str(fresh), "--input", str(synth_root / "puck" / "test" / "good"),
                  "--out", str(tmp_path / "p")],
                 ["demo", "--out", str(tmp_path / "demo")],  # was a ModuleNotFoundError traceback (issue 23.12)
                 ["calibrate", "--model", str(model)],
                 ["export", "--model", str(model), "--out", str(tmp_path / "m.onnx")],
                 ["reproduce", "--data", str(synth_root), "--out", str(tmp_path / "paper"), "--dry-run"],
                 ["weights", "list"]):
        result = trd_without_torch(*args)
        lines = [ln for ln in result.stderr.splitlines() if not ln.startswith("TORCH_MODULES")]
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert lines[0] == ("error: this command needs the training install (PyTorch), which is not installed "
                            "here: pip install 'trd-anomaly[train]'")
    assert not [p.name for p in tmp_path.iterdir()]  # nothing written by any of them
    synth = trd_without_torch("synth", "--out", str(tmp_path / "data"), "--size", "32", "--categories", "puck",
                               "--n-train", "1", "--n-validation", "1", "--n-test-good", "1", "--n-test-per-defect", "1")
    assert synth.returncode == 0 and "TORCH_MODULES []" in synth.stderr, synth.stderr
    listing = trd_without_torch("settings", "train.epochs")
    assert listing.returncode == 0 and "train.epochs = " in listing.stdout and "TORCH_MODULES []" in listing.stderr


def test_a_model_pt_whose_export_is_cached_needs_no_torch(exported: tuple[Path, Path], synth_root: Path,
                                                          tmp_path: Path, trd_without_torch) -> None:
    """The default engine's path for a model.pt scored before: neither torch nor model.pt is read (issue 24)."""
    import os
    import shutil

    from trd.workflows.engine import load_model

    model = tmp_path / "run" / "model.pt"
    model.parent.mkdir()
    shutil.copyfile(exported[0], model)
    os.environ["TRD_CACHE"] = str(tmp_path / "cache" / "preprocess")  # the subprocess's user cache too
    try:
        assert load_model(model, log=lambda _: None).name == "onnxruntime"  # exports, here with torch
        inputs = synth_root / "puck" / "test" / "crack"
        result = trd_without_torch("predict", "--model", str(model), "--input", str(inputs), "--out", str(tmp_path / "p"))
    finally:
        del os.environ["TRD_CACHE"]
    assert result.returncode == 0, result.stderr
    assert "TORCH_MODULES []" in result.stderr  # nothing of torch was imported
    assert json.loads(result.stdout)["engine"] == "onnxruntime"
    lines = [json.loads(line) for line in (tmp_path / "p" / "predictions.jsonl").read_text().splitlines()]
    assert {line["model"]["sha256"] for line in lines} == {identity_of(model)}
    full = api.predict(None, tmp_path / "q", onnx_path=exported[1], input_dir=inputs, log=lambda _: None)
    assert full["scored"] == 2
    reference = [json.loads(line) for line in (tmp_path / "q" / "predictions.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([r["score"] for r in lines], [r["score"] for r in reference], rtol=1e-6, atol=1e-6)


def identity_of(path: Path) -> str:
    from trd.data.identity import files_sha256

    return files_sha256(path)
