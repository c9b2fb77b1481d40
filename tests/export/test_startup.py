"""Start-up without repeated work (issue 24), and one model in two forms (issue 19 item 3).

Saved optimised onnxruntime graphs, the remembered model hash at the engine's level, the torch
engine's memory format, and a prediction folder that follows its model through export. (That a
cached model.pt is scored without torch: tests/test_runtime_install.py.)
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from trd import api
from trd.checkpoint import load_checkpoint
from trd.data import identity
from trd.detector import TorchEngine, load_detector
from trd.errors import OutputError
from trd.runtime import ort as runtime_ort
from trd.runtime.ort import open_onnx, optimised_dir
from trd.workflows.engine import load_model

pytest.importorskip("onnxruntime")


@pytest.fixture
def user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private user cache (``$TRD_CACHE`` and its siblings)."""
    monkeypatch.setenv("TRD_CACHE", str(tmp_path / "cache" / "preprocess"))
    return tmp_path / "cache"


def _inputs(n: int = 2, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return tuple(rng.standard_normal((n, 3, size, size)).astype(np.float32) for _ in range(2))


def test_the_optimised_graph_is_saved_once_and_loaded_after(exported: tuple[Path, Path], user_cache: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _, onnx = exported
    sha = identity.model_sha256(onnx, onnx.with_name(onnx.name + ".data"), missing_ok=True)
    first = open_onnx(onnx, 1, sha)
    (saved,) = optimised_dir().iterdir()
    assert (saved / "model.onnx").is_file() and (saved / "model.onnx.data").is_file()
    again = open_onnx(onnx, 1, sha)
    ort = runtime_ort.require("onnxruntime")
    off = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert again.session.get_session_options().graph_optimization_level == off  # loaded, not optimised again
    assert [p.name for p in optimised_dir().iterdir()] == [saved.name]
    plain = open_onnx(onnx, 1)  # without the file's identity: optimised in memory, nothing saved
    rgb, x3d = _inputs()
    expected = plain(rgb, x3d)
    for engine in (first, again):
        assert engine.source_sha256 == identity.files_sha256(exported[0])
        for key, value in engine(rgb, x3d).items():
            np.testing.assert_array_equal(value, expected[key], err_msg=key)
    # Other session settings get their own graph; the least recently used beyond KEEP_BYTES go.
    monkeypatch.setattr(runtime_ort, "KEEP_BYTES", 1)
    open_onnx(onnx, 2, sha)
    (kept,) = optimised_dir().iterdir()
    assert kept.name != saved.name
    # A damaged saved graph is made again, and scores the same.
    (kept / "model.onnx").write_bytes(b"damaged")
    rebuilt = open_onnx(onnx, 2, sha)
    assert (kept / "model.onnx").stat().st_size > 1000
    np.testing.assert_array_equal(rebuilt(rgb, x3d)["score"], expected["score"])


def test_a_model_changed_in_place_is_never_mistaken_for_the_old_one(exported: tuple[Path, Path], user_cache: Path,
                                                                     tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(identity, "RACY_NS", 0)  # hashes are trusted at once: only the file's fields can tell
    model = tmp_path / "run" / "model.pt"
    model.parent.mkdir()
    shutil.copyfile(exported[0], model)
    first = load_model(model, log=lambda _: None)
    assert load_model(model, log=lambda _: None).sha256 == first.sha256  # remembered
    blob = load_checkpoint(model, "model")
    blob["thresholds"]["image"] += 1.0  # recalibrated into the same file
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    stat = model.stat()
    assert len(buffer.getvalue()) == stat.st_size  # the same size: only the content differs
    with model.open("r+b") as fh:
        fh.write(buffer.getvalue())
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the old mtime
    second = load_model(model, log=lambda _: None)
    assert second.sha256 == identity.files_sha256(model) != first.sha256
    assert second.thresholds.image == pytest.approx(first.thresholds.image + 1.0)
    assert second.source_sha256 == second.sha256


def test_the_torch_engine_runs_channels_last_with_the_same_outputs(exported: tuple[Path, Path]) -> None:
    fast = TorchEngine(load_detector(exported[0])[0], torch.device("cpu"))
    plain = TorchEngine(load_detector(exported[0])[0], torch.device("cpu"), channels_last=False)
    conv = next(m for m in fast.detector.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    rgb, x3d = _inputs()
    expected = plain(rgb, x3d)
    for key, value in fast(rgb, x3d).items():
        np.testing.assert_allclose(value, expected[key], rtol=1e-5, atol=1e-5, err_msg=key)


def _scores(out: Path) -> dict[str, tuple[float, str]]:
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return {r["name"]: (r["score"], r["model"]["engine"]) for r in lines}


def test_a_prediction_folder_follows_its_model_through_export(exported: tuple[Path, Path], synth_root: Path,
                                                              user_cache: Path, tmp_path: Path) -> None:
    model = tmp_path / "run" / "model.pt"
    model.parent.mkdir()
    shutil.copyfile(exported[0], model)
    onnx = exported[1]
    dent, crack = synth_root / "puck" / "test" / "dent", tmp_path / "crack"
    for folder in ("rgb", "xyz"):  # other names than dent's (a name is one output)
        (crack / folder).mkdir(parents=True)
        for source in (synth_root / "puck" / "test" / "crack" / folder).iterdir():
            shutil.copyfile(source, crack / folder / f"crack-{source.name}")
    quiet = {"log": lambda _: None}
    for order in ((model, None), (None, onnx)), ((None, onnx), (model, None)):
        out = tmp_path / f"preds-{'pt' if order[0][0] else 'onnx'}-first"
        api.predict(order[0][0], out, onnx_path=order[0][1], input_dir=dent, **quiet)
        lines: list[str] = []
        second = api.predict(order[1][0], out, onnx_path=order[1][1], input_dir=crack, log=lines.append)
        assert second["scored"] == 2 and second["lines"] == 4  # was: OutputError, "another model"
        assert any("the same model" in line for line in lines)
        assert api.predict(order[1][0], out, onnx_path=order[1][1], input_dir=dent, **quiet)["skipped"] == 2
        assert sorted(engine for _, engine in _scores(out).values()) == ["onnxruntime"] * 4
    # Another model (the same network, other thresholds) is still refused, in either form.
    blob = load_checkpoint(model, "model")
    blob["thresholds"]["image"] += 1.0
    other = tmp_path / "other" / "model.pt"
    other.parent.mkdir()
    torch.save(blob, other)
    with pytest.raises(OutputError, match="holds predictions of another model"):
        api.predict(other, tmp_path / "preds-pt-first", input_dir=dent, **quiet)
    other_onnx = api.export(other, tmp_path / "other.onnx")
    with pytest.raises(OutputError, match="holds predictions of another model"):
        api.predict(None, tmp_path / "preds-onnx-first", onnx_path=other_onnx, input_dir=dent, **quiet)
