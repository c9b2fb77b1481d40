"""Every trained model can be used: ``trd predict`` reads every input form ``fit`` accepts.

A model trained on folder data with depth PNGs + camera.json, and one trained on Eyecandies normal
maps, each score new pairs (a folder and a single pair, torch and ONNX) exactly as ``trd test``
scores the same files.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trd import api
from trd.config import load_config
from trd.data.dataset import PairDataset
from trd.data.inputs import InputStats
from trd.data.readers.xyz_tiff import read_xyz
from trd.data.samples import split_samples
from trd.detector import load_detector

from .conftest import TINY

CAMERA = {"fx": 256.0, "fy": 256.0, "cx": 31.5, "cy": 31.5, "depth_scale": 0.0001}


def _expected_scores(model: Path, split: str) -> dict[str, float]:
    """Scores of a split's samples, computed directly with the detector (the reference)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        detector, cfg, _, extra = load_detector(model)
    dataset = PairDataset(split_samples(cfg.data, split), cfg.data, None, InputStats.from_dict(extra["inputs"]))
    scores = {}
    with torch.inference_mode():
        for i, sample in enumerate(dataset.samples):
            item = dataset[i]
            scores[f"{sample.defect}/{sample.rgb.stem}"] = float(detector(item["rgb"][None], item["x3d"][None])["score"])
    return scores


def _predicted(out: Path) -> dict[str, float]:
    return {r["name"]: r["score"] for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}


def _fit(root: Path, tmp_path: Path, fmt: str, category: str) -> Path:
    cfg = load_config(None, [*TINY, "train.epochs=1", f"data.root={root}", f"data.format={fmt}",
                             f"data.category={category}", "data.cache_dir=none"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return api.fit(cfg, tmp_path / "run", progress=False, log=lambda _: None)


@pytest.fixture(scope="module")
def rgbd(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, float]]:
    """A folder product of 16-bit depth PNGs (0.1 mm per count) with its camera.json, the tiny model
    fitted on it, and the test split's scores computed directly with the detector."""
    tmp = tmp_path_factory.mktemp("rgbd")
    product = tmp / "rgbd"
    shutil.copytree(synth_root / "puck", product)
    for xyz_dir in list(product.glob("*/*/xyz")):
        (xyz_dir.parent / "depth").mkdir()
        for tiff in xyz_dir.iterdir():
            z = np.round(read_xyz(tiff)[..., 2] / CAMERA["depth_scale"]).astype(np.uint16)
            Image.fromarray(z).save(xyz_dir.parent / "depth" / f"{tiff.stem}.png")
        shutil.rmtree(xyz_dir)
    (product / "camera.json").write_text(json.dumps(CAMERA))
    model = _fit(product, tmp, "folder", "")
    return product, model, _expected_scores(model, "test")


def test_depth_png_model_predicts_folders_and_pairs(rgbd: tuple[Path, Path, dict[str, float]], tmp_path: Path) -> None:
    product, model, expected = rgbd

    line = tmp_path / "line"  # a line's folder: rgb/ + depth/ + its camera.json
    shutil.copytree(product / "test" / "dent", line, ignore=shutil.ignore_patterns("gt"))
    shutil.copyfile(product / "camera.json", line / "camera.json")
    summary = api.predict(model, tmp_path / "pred", input_dir=line, log=lambda _: None)
    assert summary["scored"] == 2 and not summary["failed"]
    got = _predicted(tmp_path / "pred")
    for name, score in got.items():
        assert score == pytest.approx(expected[f"dent/{name}"], abs=1e-5)

    pair = product / "test" / "good"  # one pair, camera given explicitly
    summary = api.predict(model, tmp_path / "one", rgb=pair / "rgb" / "000.png", xyz=pair / "depth" / "000.png",
                          camera=product / "camera.json", log=lambda _: None)
    assert summary["scored"] == 1
    assert _predicted(tmp_path / "one")["000"] == pytest.approx(expected["good/000"], abs=1e-5)

    # The exported file reads depth PNGs too: the camera comes with the scan, not with the model.
    pytest.importorskip("onnxruntime")
    onnx = api.export(model, tmp_path / "rgbd.onnx")
    summary = api.predict(None, tmp_path / "one_onnx", onnx_path=onnx, rgb=pair / "rgb" / "000.png",
                          xyz=pair / "depth" / "000.png", camera=product / "camera.json", log=lambda _: None)
    assert summary["scored"] == 1 and summary["engine"] == "onnxruntime"
    assert _predicted(tmp_path / "one_onnx")["000"] == pytest.approx(expected["good/000"], abs=1e-4)


def test_eyecandies_model_predicts_normal_maps(tmp_path: Path, synth_root: Path) -> None:
    root = tmp_path / "eyecandies" / "CandyCane"
    for split, defects in (("train", ("good",)), ("validation", ("good",)), ("test", ("good", "bad"))):
        for defect in defects:
            src = synth_root / "puck" / split / ("color" if defect == "bad" else "good")
            target = root / split / defect
            shutil.copytree(src / "rgb", target / "rgb")
            (target / "normals").mkdir()
            for rgb in sorted((src / "rgb").iterdir()):  # any RGB-like PNG serves as a normal map here
                Image.open(rgb).transpose(Image.FLIP_LEFT_RIGHT).save(target / "normals" / rgb.name)
            if split == "test":
                shutil.copytree(src / "gt", target / "gt")
    model = _fit(root.parent, tmp_path, "eyecandies", "CandyCane")
    expected = _expected_scores(model, "test")
    summary = api.predict(model, tmp_path / "pred", input_dir=root / "test" / "bad", log=lambda _: None)
    assert summary["scored"] == 2 and not summary["failed"]
    for name, score in _predicted(tmp_path / "pred").items():
        assert score == pytest.approx(expected[f"bad/{name}"], abs=1e-5)

    pytest.importorskip("onnxruntime")
    onnx = api.export(model, tmp_path / "eye.onnx")
    summary = api.predict(None, tmp_path / "pred_onnx", onnx_path=onnx, rgb=root / "test" / "good" / "rgb" / "000.png",
                          xyz=root / "test" / "good" / "normals" / "000.png", log=lambda _: None)
    assert summary["scored"] == 1
    assert _predicted(tmp_path / "pred_onnx")["000"] == pytest.approx(expected["good/000"], abs=1e-4)


def _depth_line(product: Path, folder: Path, metres_per_count: float, camera: dict | None) -> Path:
    """The test/dent scans as a line's folder: rgb/ + depth/ PNGs of ``metres_per_count``, and
    camera.json when ``camera`` is given (none: the scans come without one)."""
    shutil.copytree(product / "test" / "dent", folder, ignore=shutil.ignore_patterns("gt"))
    for png in (folder / "depth").iterdir():
        z = np.asarray(Image.open(png)).astype(np.float64) * CAMERA["depth_scale"]
        Image.fromarray(np.round(z / metres_per_count).astype(np.uint16)).save(png)
    if camera is not None:
        (folder / "camera.json").write_text(json.dumps(camera))
    return folder


def _predict_warned(model: Path, out: Path, line: Path) -> tuple[dict, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = api.predict(model, out, input_dir=line, log=lambda _: None)
    return summary, caught


def test_a_depth_model_keeps_its_camera_for_scans_without_one(rgbd: tuple[Path, Path, dict[str, float]],
                                                             tmp_path: Path, messages) -> None:
    product, model, expected = rgbd
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stored = InputStats.from_dict(load_detector(model)[3]["inputs"]).camera
    assert stored is not None and stored.to_dict() == CAMERA  # the intrinsics used at fit, in model.pt

    # The default engine scores through the ONNX export, whose metadata carries the camera too.
    line = _depth_line(product, tmp_path / "bare", CAMERA["depth_scale"], None)
    summary, caught = _predict_warned(model, tmp_path / "bare-out", line)
    assert summary["scored"] == 2 and not summary["failed"]  # was: "camera.json: camera file not found"
    for name, score in _predicted(tmp_path / "bare-out").items():
        assert score == pytest.approx(expected[f"dent/{name}"], abs=1e-5)
    said = [str(w.message) for w in caught if type(w.message).__name__ == "StoredCameraWarning"]
    assert len(said) == 2 and "the camera the model was trained with" in said[0]  # says which camera was used
    assert not [w for w in caught if type(w.message).__name__ == "CoarseDepthWarning"]  # 0.1 mm steps are fine
    messages.record("warning", "depth PNG without camera.json, read with the model's camera", f"warning: {said[0]}")

    # A scan's own camera.json always wins; its depth step may be written as a unit.
    in_units = {k: v for k, v in CAMERA.items() if k != "depth_scale"} | {"depth_unit": "0.1 mm"}
    own = _depth_line(product, tmp_path / "own", CAMERA["depth_scale"], in_units)
    summary, caught = _predict_warned(model, tmp_path / "own-out", own)
    assert summary["scored"] == 2 and not [w for w in caught if "StoredCamera" in type(w.message).__name__]
    assert _predicted(tmp_path / "own-out") == _predicted(tmp_path / "bare-out")
    # (that the scan's own file is the one used shows where it is wrong: the next test)


@pytest.mark.parametrize("depth_scale", [0.001, 0.00001])
def test_a_depth_scale_one_decade_off_is_refused_naming_camera_json(
        depth_scale: float, rgbd: tuple[Path, Path, dict[str, float]], tmp_path: Path, messages) -> None:
    product, model, _ = rgbd
    # The scan's own camera.json wins over the model's camera, which would have read it right.
    line = _depth_line(product, tmp_path / "line", CAMERA["depth_scale"], CAMERA | {"depth_scale": depth_scale})
    summary = api.predict(model, tmp_path / "out", input_dir=line, log=lambda _: None)
    assert summary["scored"] == 0 and len(summary["failed"]) == 2, summary  # was: some scored, some not
    error = summary["failed"][0]["error"]
    # was: "set data.xyz_unit=... (trd predict/test: --xyz-unit ...)", which does not apply to depth PNGs
    assert "1 count looks like 0.1 mm" in error and f"fix depth_scale (or depth_unit) in {line / 'camera.json'}" in error
    assert "xyz_unit" not in error and "--" not in error
    messages.record("input", f"depth PNG with depth_scale {depth_scale:g} (10x off) in camera.json", f"error: {error}")


def test_coarse_depth_steps_are_warned_about(rgbd: tuple[Path, Path, dict[str, float]], tmp_path: Path,
                                             messages) -> None:
    product, model, _ = rgbd
    line = _depth_line(product, tmp_path / "mm", 0.001, CAMERA | {"depth_scale": 0.001})  # whole millimetres
    summary, caught = _predict_warned(model, tmp_path / "out", line)
    assert summary["scored"] == 2
    coarse = [str(w.message) for w in caught if type(w.message).__name__ == "CoarseDepthWarning"]
    assert len(coarse) == 2 and all("depth steps are coarse for the surface" in c for c in coarse), coarse
    assert "(1 count = 1 mm" in coarse[0] and str(line / "depth") in coarse[0]  # names the file
    messages.record("warning", "depth PNG in whole millimetres (coarse steps)", f"warning: {coarse[0]}")
