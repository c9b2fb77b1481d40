"""Eyecandies: raw download -> preprocessed layout -> samples, with masks for anomalous test samples."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trd.data.eyecandies import prepare_eyecandies
from trd.data.io import read_mask, read_rgb
from trd.data.samples import EYECANDIES_CATEGORIES, list_categories, list_samples
from trd.data.synth import render_sample

#: raw split folder -> (sample ids, which of them are anomalous)
RAW = {"train": (["000", "001", "002"], set()), "val": (["000", "001"], set()),
       "test_public": (["00", "01", "02", "03"], {"01", "03"})}


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A raw Eyecandies-layout download with one category, ``CandyCane``, built from synthetic renders."""
    root = tmp_path_factory.mktemp("eyecandies_raw")
    rng = np.random.default_rng(0)
    for split, (ids, bad) in RAW.items():
        data = root / "CandyCane" / split / "data"
        data.mkdir(parents=True)
        for sample_id in ids:
            rgb, xyz, mask = render_sample(rng, 32, "puck", "color" if sample_id in bad else "good")
            Image.fromarray(rgb).save(data / f"{sample_id}_image_4.png")
            Image.fromarray(rgb[..., ::-1].copy()).save(data / f"{sample_id}_image_0.png")  # other lighting
            Image.fromarray(np.round(xyz[..., 2] * 1000).astype(np.uint16)).save(data / f"{sample_id}_depth.png")
            Image.fromarray(rgb[::-1].copy()).save(data / f"{sample_id}_normals.png")
            Image.fromarray(mask.astype(np.uint8) * 255).save(data / f"{sample_id}_mask.png")
            (data / f"{sample_id}_info.yaml").write_text("ignored: true\n")
    return root


def test_prepare_then_list(raw_root: Path, tmp_path: Path) -> None:
    counts = prepare_eyecandies(raw_root, tmp_path)
    assert counts == {"CandyCane": {"train": {"good": 3}, "validation": {"good": 2},
                                    "test": {"bad": 2, "good": 2}}}
    assert list_categories("eyecandies", tmp_path) == ["CandyCane"] and "CandyCane" in EYECANDIES_CATEGORIES
    assert [s.rgb.name for s in list_samples("eyecandies", tmp_path, "CandyCane", "train")] == [
        "000.png", "001.png", "002.png"]
    assert len(list_samples("eyecandies", tmp_path, "CandyCane", "validation")) == 2
    test = list_samples("eyecandies", tmp_path, "CandyCane", "test")
    assert [(s.defect, s.rgb.name, s.label) for s in test] == [
        ("bad", "001.png", 1), ("bad", "003.png", 1), ("good", "000.png", 0), ("good", "002.png", 0)]
    for s in test:
        assert s.xyz_kind == "normals_png" and s.xyz.parent.name == "normals"
        np.testing.assert_array_equal(read_rgb(s.rgb), read_rgb(raw_root / "CandyCane" / "test_public" / "data"
                                                              / f"{s.rgb.stem[1:]}_image_4.png"))
        assert read_rgb(s.xyz).shape == (32, 32, 3)
        gt = s.rgb.parent.parent / "gt" / s.rgb.name
        assert read_mask(gt).any() == bool(s.label)  # bad samples keep their mask (method.md §10.4 fixed)
        assert s.mask == (gt if s.label else None)
    assert (tmp_path / "CandyCane" / "test" / "bad" / "depth" / "001.png").is_file()
    again = prepare_eyecandies(raw_root, tmp_path, ["CandyCane"])  # re-running replaces the category
    assert again == counts and sorted(p.name for p in tmp_path.iterdir()) == ["CandyCane"]


def test_missing_raw_files_are_errors(raw_root: Path, tmp_path: Path, data_error: Callable) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(raw_root, raw)
    test_data = raw / "CandyCane" / "test_public" / "data"
    (test_data / "02_mask.png").unlink()
    with data_error(test_data / "02_mask.png", "missing file of sample 02"):
        prepare_eyecandies(raw, tmp_path / "out")
    assert not (tmp_path / "out" / "CandyCane").exists()
    normals = raw / "CandyCane" / "train" / "data" / "001_normals.png"
    normals.rename(tmp_path / "kept.png")
    with data_error(normals, "missing file"):
        prepare_eyecandies(raw, tmp_path / "out")
    (tmp_path / "kept.png").rename(normals)
    shutil.rmtree(raw / "CandyCane" / "val")
    with data_error(raw / "CandyCane" / "val" / "data", "CandyCane/val/data", "missing folder"):
        prepare_eyecandies(raw, tmp_path / "out")
    with data_error(raw / "Lollipop", "category folder not found"):
        prepare_eyecandies(raw, tmp_path / "out", ["Lollipop"])
    shutil.rmtree(raw / "CandyCane")
    with data_error(raw, "no Eyecandies category folders"):
        prepare_eyecandies(raw, tmp_path / "out")
