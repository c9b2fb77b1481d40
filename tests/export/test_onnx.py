"""ONNX export: onnxruntime reproduces the PyTorch detector, the file describes itself, bad files fail clearly.

Tolerance: both runtimes compute in float32 but sum convolutions in different orders, so raw maps
agree to ~1e-6; z-scoring divides by the validation std (small for a 2-epoch model), which scales
that up, hence ``atol = rtol = 1e-4`` on the z-scored outputs. The peak of the fused map may move
only to a neighbouring pixel (a near-tie of the blurred map), never to another region.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from trd import __version__, api
from trd.cli import main
from trd.config import Config, load_config, without_machine_paths
from trd.data.cache import build_cache
from trd.data.dataset import PairDataset
from trd.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from trd.data.samples import list_samples
from trd.errors import CheckpointError, ConfigError
from trd.export import onnx as trd_onnx
from trd.export.onnx import export_onnx
from trd.runtime.ort import OrtEngine, open_onnx
from trd.detector import Detector, load_detector
from trd.scoring.threshold import Thresholds

#: The smallest TRD that exercises every part (the same settings as the pipeline tests).
TINY = [
    "model.backbone=resnet18", "model.weights=none", "model.decoder_blocks=1,1,1", "model.bottleneck_blocks=1",
    "data.image_size=64", "train.epochs=2", "train.batch_size=2",
]
TOL = {"atol": 1e-4, "rtol": 1e-4}


@pytest.fixture(scope="module")
def trained(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model.pt, its ONNX export) of a tiny model trained once for this module.

    The export is forced into the external-data layout (weights in ``model.onnx.data``) that large models
    get (the paper model), so the parity tests below cover it; the CLI test covers the single-file layout.
    It is traced at batch 2; the CLI export at the default batch 1.
    """
    run = tmp_path_factory.mktemp("onnx_run")
    cfg = load_config(None, [*TINY, f"data.root={synth_root}", "data.category=puck",
                             f"data.cache_dir={run / 'cache'}"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="teacher .* randomly initialised")
        model = api.fit(cfg, run, progress=False, log=lambda _: None)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trd_onnx, "EXTERNAL_DATA_FROM", 0)
        return model, export_onnx(model, run / "export" / "model.onnx", batch=2)


@pytest.fixture(scope="module")
def detector(trained: tuple[Path, Path]) -> tuple[Detector, Config, Thresholds]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="teacher .* randomly initialised")
        det, cfg, thresholds, _ = load_detector(trained[0], "cpu")
    return det, cfg, thresholds


def _tensors(engine: OrtEngine) -> Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]:
    """The numpy engine as a tensor function, for comparing with the torch detector."""
    return lambda rgb, x3d: {k: torch.from_numpy(v) for k, v in engine(rgb.numpy(), x3d.numpy()).items()}


@pytest.fixture(scope="module")
def runner(trained: tuple[Path, Path]) -> Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]:
    return _tensors(open_onnx(trained[1]))


def _real_inputs(cfg: Config, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` defective test samples, preprocessed as for training."""
    samples = [s for s in list_samples("mvtec3d", Path(cfg.data.root), "puck", "test") if s.label == 1][:n]
    dataset = PairDataset(samples, cfg.data, build_cache(cfg.data))
    items = [dataset[i] for i in range(n)]
    return torch.stack([it["rgb"] for it in items]), torch.stack([it["x3d"] for it in items])


def _assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    if not any(k.startswith("scored_") for k in got):  # older exports lack the evaluation maps
        want = {k: v for k, v in want.items() if not k.startswith("scored_")}
    assert set(got) == set(want)
    for key in want:
        assert got[key].shape == want[key].shape and got[key].dtype == torch.float32, key
        torch.testing.assert_close(got[key], want[key], **TOL, msg=lambda m, k=key: f"{k}: {m}")
    side = want["anomaly_map"].shape[-1]
    for a, b in zip(got["anomaly_map"].flatten(1).argmax(1), want["anomaly_map"].flatten(1).argmax(1)):
        (ya, xa), (yb, xb) = divmod(int(a), side), divmod(int(b), side)
        assert max(abs(ya - yb), abs(xa - xb)) <= 1, ((ya, xa), (yb, xb))


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("source", ["random", "real"])
def test_onnxruntime_matches_pytorch(runner, detector, batch, source) -> None:
    det, cfg, _ = detector
    size = cfg.data.image_size
    if source == "real":
        rgb, x3d = _real_inputs(cfg, batch)
    else:
        generator = torch.Generator().manual_seed(batch)
        rgb, x3d = (torch.randn(batch, 3, size, size, generator=generator) for _ in range(2))
    with torch.inference_mode():
        want = det(rgb, x3d)
    got = runner(rgb, x3d)
    assert set(got) == {"anomaly_map", "score", "map_rgb", "map_geo", "share_rgb", "share_geo", "scored_rgb",
                        "scored_geo"}
    assert got["anomaly_map"].shape == (batch, 1, size, size) and got["score"].shape == (batch,)
    _assert_same(got, want)


def test_foreground_only_detector_exports(trained, tmp_path) -> None:
    """score.foreground_only: the mask is derived from the 3D input inside the graph, so the
    export keeps its two inputs and onnxruntime still matches PyTorch."""
    blob = torch.load(trained[0], map_location="cpu", weights_only=False)
    blob["config"]["score"]["foreground_only"] = True
    path = tmp_path / "model.pt"
    torch.save(blob, path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="teacher .* randomly initialised")
        det, cfg, _, _ = load_detector(path, "cpu")
        runner = _tensors(open_onnx(export_onnx(path, tmp_path / "fg.onnx")))
    assert det.scorer.foreground_margin == cfg.score.foreground_margin
    rgb, x3d = _real_inputs(cfg, 2)
    with torch.inference_mode():
        want = det(rgb, x3d)
    _assert_same(runner(rgb, x3d), want)


def test_exports_with_the_older_output_names_load(trained, detector, tmp_path) -> None:
    """Exports written before the branch shares were named so call them contrib_<branch>: the same
    graph with those output names (renamed here in the file) loads and gives the current keys."""
    path = export_onnx(trained[0], tmp_path / "old.onnx")
    model = onnx.load(str(path))
    renamed = {f"share_{b}": f"contrib_{b}" for b in ("rgb", "geo")}
    for node in model.graph.node:
        node.output[:] = [renamed.get(name, name) for name in node.output]
    for value in model.graph.output:
        value.name = renamed.get(value.name, value.name)
    onnx.save(model, str(path))
    assert [o.name for o in onnx.load(str(path)).graph.output][2:4] == ["contrib_rgb", "contrib_geo"]
    det, cfg, _ = detector
    rgb, x3d = _real_inputs(cfg, 1)
    with torch.inference_mode():
        want = det(rgb, x3d)
    _assert_same(_tensors(open_onnx(path))(rgb, x3d), want)


def test_metadata_round_trip(trained, detector) -> None:
    _, cfg, thresholds = detector
    engine = open_onnx(trained[1])
    onnx_cfg, onnx_thresholds, onnx_inputs = engine.config, engine.thresholds, engine.inputs
    # an export leaves the machine: the settings and thresholds as trained, without its absolute paths
    assert onnx_cfg.to_dict() == without_machine_paths(cfg.to_dict()) and onnx_cfg.data.root == Path(cfg.data.root).name
    assert onnx_thresholds == dataclasses.replace(thresholds, source=without_machine_paths(thresholds.source))
    assert onnx_thresholds.source == "puck (validation split)"
    # the training inputs' scale and image size travel with the export (new scans are checked)
    assert onnx_inputs is not None and onnx_inputs.image_hw == (64, 64) and 0.3 < onnx_inputs.z_median_m < 0.5

    model = onnx.load(str(trained[1]))
    meta = {p.key: p.value for p in model.metadata_props}
    assert not [key for key, value in meta.items() if str(Path(cfg.data.root).parent) in value]  # issue 23.12
    assert json.loads(meta["trd.branches"]) == ["rgb", "geo"] and meta["trd.version"] == __version__
    spec = json.loads(meta["trd.input"])
    np.testing.assert_allclose(spec["mean"], IMAGENET_MEAN)
    np.testing.assert_allclose(spec["std"], IMAGENET_STD)
    assert spec["size"] == [64, 64] and spec["names"] == ["rgb", "x3d"]
    assert model.opset_import[0].version == trd_onnx.DEFAULT_OPSET
    for value in (*model.graph.input, *model.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch", value.name


def test_large_models_use_external_data(trained) -> None:
    folder = trained[1].parent
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "model.onnx.data"]  # no staging left over
    assert trained[1].stat().st_size * 10 < (folder / "model.onnx.data").stat().st_size  # the weights moved out


def test_graph_has_no_shape_arithmetic_that_openvino_cannot_compile(trained, tmp_path) -> None:
    """The blur pads with slices of constant size and the branch shares index without a squeeze:
    index arithmetic on the input's shape (Range, Mod) and an If split the graph into pieces that
    OpenVINO refuses to run ("Output names mismatch"; tests/runtime/test_openvino.py runs it). The
    IR version is the one every onnxruntime build loads."""
    import onnx

    for path in (trained[1], export_onnx(trained[0], tmp_path / "one-file.onnx")):  # both layouts
        model = onnx.load(str(path), load_external_data=False)
        assert {n.op_type for n in model.graph.node}.isdisjoint({"If", "Range", "Mod"}), path
        assert model.ir_version == trd_onnx.IR_VERSION == 8


def test_export_arguments_are_checked(trained, tmp_path) -> None:
    with pytest.raises(ConfigError, match="opset 9"):
        export_onnx(trained[0], tmp_path / "m.onnx", opset=9)
    with pytest.raises(ConfigError, match="batch"):
        export_onnx(trained[0], tmp_path / "m.onnx", batch=0)
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        export_onnx(tmp_path / "missing.pt", tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def _bad_files(tmp_path: Path, exported: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, words its error must contain); ``exported`` is an export with external data."""
    orphan = tmp_path / "orphan.onnx"
    shutil.copyfile(exported, orphan)  # without its model.onnx.data
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 100)
    plain = tmp_path / "plain.onnx"
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    onnx.save(model, str(plain))
    damaged = tmp_path / "damaged.onnx"
    onnx.helper.set_model_props(model, {"trd.format": "trd-onnx", "trd.format_version": "1", "trd.config": "{",
                                        "trd.thresholds": "{}", "trd.branches": "[]"})
    onnx.save(model, str(damaged))
    return {"missing": (tmp_path / "missing.onnx", "not found"),
            "corrupt": (corrupt, "not a readable ONNX model"),
            "plain": (plain, "no trd metadata"),
            "damaged": (damaged, "damaged trd metadata"),
            "orphan": (orphan, "not a readable ONNX model")}


def test_bad_onnx_files_raise_checkpoint_error(trained, tmp_path) -> None:
    for path, words in _bad_files(tmp_path, trained[1]).values():
        with pytest.raises(CheckpointError, match=words) as info:
            open_onnx(path)
        assert info.value.path == path and path.name in str(info.value)


def _trd(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the ``trd`` entry point in this process (exit code, stdout, stderr): as ``python -m trd.cli``
    without paying a torch import per call (tests/pipeline/test_cli.py covers the subprocess)."""
    monkeypatch.setattr(sys, "argv", ["trd", *args])
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _scores(pred_dir: Path) -> dict[str, float]:
    lines = (pred_dir / "predictions.jsonl").read_text().splitlines()
    return {r["name"]: r["score"] for r in map(json.loads, lines)}


def test_cli_export_then_predict_matches_checkpoint(trained, synth_root, tmp_path, monkeypatch, capsys) -> None:
    model = trained[0]
    out = tmp_path / "cli.onnx"
    (tmp_path / "cli.onnx.data").write_bytes(b"weights of an earlier, larger export")
    code, stdout, stderr = _trd(monkeypatch, capsys, "export", "--model", str(model), "--out", str(out))
    assert code == 0, stderr
    assert stdout.strip() == str(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli.onnx"]  # stale weights and staging removed
    inputs = str(synth_root / "puck" / "test" / "dent")
    for flag, value, pred in (("--onnx", out, "p_onnx"), ("--model", model, "p_torch")):
        code, _, stderr = _trd(monkeypatch, capsys, "predict", flag, str(value), "--input", inputs,
                               "--out", str(tmp_path / pred), *(("--engine", "torch") if flag == "--model" else ()))
        assert code == 0, stderr
    onnx_scores, torch_scores = _scores(tmp_path / "p_onnx"), _scores(tmp_path / "p_torch")
    assert list(onnx_scores) == list(torch_scores) == ["000", "001"]
    np.testing.assert_allclose(list(onnx_scores.values()), list(torch_scores.values()), **TOL)
    assert [p.name.split("-")[0] for p in sorted((tmp_path / "p_onnx" / "heatmaps").iterdir())] == ["000", "001"]


def test_cli_bad_onnx_is_one_line_exit_2(trained, synth_root, tmp_path, monkeypatch, capsys) -> None:
    inputs = str(synth_root / "puck" / "test" / "dent")
    for path, words in _bad_files(tmp_path, trained[1]).values():
        code, _, stderr = _trd(monkeypatch, capsys, "predict", "--onnx", str(path), "--input", inputs,
                               "--out", str(tmp_path / "p"))
        assert code == 2, stderr
        assert stderr.startswith("error: ") and len(stderr.strip().splitlines()) == 1, stderr
        assert path.name in stderr and words in stderr
