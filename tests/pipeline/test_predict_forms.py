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


def test_depth_png_model_predicts_folders_and_pairs(synth_root: Path, tmp_path: Path) -> None:
    product = tmp_path / "rgbd"
    shutil.copytree(synth_root / "puck", product)
    for xyz_dir in list(product.glob("*/*/xyz")):
        (xyz_dir.parent / "depth").mkdir()
        for tiff in xyz_dir.iterdir():
            z = np.round(read_xyz(tiff)[..., 2] / CAMERA["depth_scale"]).astype(np.uint16)
            Image.fromarray(z).save(xyz_dir.parent / "depth" / f"{tiff.stem}.png")
        shutil.rmtree(xyz_dir)
    (product / "camera.json").write_text(json.dumps(CAMERA))
    model = _fit(product, tmp_path, "folder", "")
    expected = _expected_scores(model, "test")

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
