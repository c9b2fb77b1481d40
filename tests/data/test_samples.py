"""Sample listing for the mvtec3d and folder layouts, and the errors for broken datasets."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trd.data.readers.depth_png import Camera, read_depth_png
from trd.data.readers.xyz_tiff import read_xyz
from trd.data.samples import MVTEC3D_CATEGORIES, Sample, list_categories, list_samples


@pytest.fixture
def synth_copy(synth_root: Path, tmp_path: Path) -> Path:
    """A private, modifiable copy of the shared synthetic root."""
    shutil.copytree(synth_root, tmp_path / "data")
    return tmp_path / "data"



def _defects(samples: list[Sample]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in samples:
        counts[s.defect] = counts.get(s.defect, 0) + 1
    return counts


def test_mvtec3d_listing(synth_root: Path) -> None:
    assert list_categories("mvtec3d", synth_root) == ["puck"]
    assert _defects(list_samples("mvtec3d", synth_root, "puck", "train")) == {"good": 4}
    assert _defects(list_samples("mvtec3d", synth_root, "puck", "validation")) == {"good": 2}
    test = list_samples("mvtec3d", synth_root, "puck", "test")
    assert _defects(test) == {"color": 2, "crack": 2, "dent": 2, "good": 2}
    assert [(s.defect, s.rgb.name) for s in test] == sorted((s.defect, s.rgb.name) for s in test)
    for s in test:
        assert s.category == "puck" and s.split == "test" and s.xyz_kind == "xyz_tiff"
        assert s.xyz == s.rgb.parent.parent / "xyz" / f"{s.rgb.stem}.tiff"
        assert s.label == (s.defect != "good")
        assert (s.mask is None) == (s.defect == "good")
        assert s.mask is None or s.mask.is_file()
    assert len(MVTEC3D_CATEGORIES) == 10 and MVTEC3D_CATEGORIES[0] == "bagel"


def test_mvtec3d_pairing_errors(synth_copy: Path, data_error: Callable) -> None:
    good = synth_copy / "puck" / "test" / "good"
    (good / "xyz" / "001.tiff").unlink()
    with data_error(good / "rgb" / "001.png", "RGB image without its 3D file", "001.tiff"):
        list_samples("mvtec3d", synth_copy, "puck", "test")
    (good / "rgb" / "001.png").unlink()
    (good / "rgb" / "000.png").unlink()
    with data_error(good / "xyz" / "000.tiff", "3D file without its RGB image"):
        list_samples("mvtec3d", synth_copy, "puck", "test")
    shutil.rmtree(good)
    dent = synth_copy / "puck" / "test" / "dent"
    (dent / "gt" / "001.png").unlink()
    with data_error(dent / "gt" / "001.png", "missing mask", "001.png"):
        list_samples("mvtec3d", synth_copy, "puck", "test")
    shutil.rmtree(dent / "xyz")
    with data_error(dent, "missing 3D folder", "xyz/"):
        list_samples("mvtec3d", synth_copy, "puck", "test")


def test_mvtec3d_folder_errors(synth_copy: Path, data_error: Callable) -> None:
    val = synth_copy / "puck" / "validation"
    for p in [*(val / "good" / "rgb").iterdir(), *(val / "good" / "xyz").iterdir()]:
        p.unlink()
    with data_error(val, "empty split"):
        list_samples("mvtec3d", synth_copy, "puck", "validation")
    shutil.rmtree(val)
    with data_error(val, "split folder not found"):
        list_samples("mvtec3d", synth_copy, "puck", "validation")
    with data_error(synth_copy, "unknown split 'val'", "train, validation, test"):
        list_samples("mvtec3d", synth_copy, "puck", "val")
    with data_error(synth_copy / "bagel", "category folder not found", "puck"):
        list_samples("mvtec3d", synth_copy, "bagel", "train")
    with data_error(synth_copy, "no category given"):
        list_samples("mvtec3d", synth_copy, "", "train")
    with data_error(synth_copy, "unknown dataset format"):
        list_samples("mvtec", synth_copy, "puck", "train")
    with data_error(synth_copy / "nowhere", "dataset root folder not found"):
        list_samples("mvtec3d", synth_copy / "nowhere", "puck", "train")
    shutil.copytree(synth_copy / "puck" / "test" / "dent", synth_copy / "puck" / "train" / "dent")
    with data_error(synth_copy / "puck" / "train" / "dent", "only contain good"):
        list_samples("mvtec3d", synth_copy, "puck", "train")
    shutil.rmtree(synth_copy / "puck")
    with data_error(synth_copy, "no category folders"):
        list_categories("mvtec3d", synth_copy)


def test_folder_format_with_xyz_and_implicit_validation(synth_root: Path, tmp_path: Path, data_error: Callable) -> None:
    product = tmp_path / "widget"
    shutil.copytree(synth_root / "puck", product)
    assert list_categories("folder", product) == ["widget"]
    val = list_samples("folder", product, "", "validation")
    assert len(val) == 2 and {s.category for s in val} == {"widget"}
    shutil.rmtree(product / "validation")
    train = list_samples("folder", product, "widget", "train")
    held = list_samples("folder", product, "", "validation")
    assert [s.rgb.name for s in train] == ["000.png", "001.png", "002.png"]
    assert [(s.rgb.name, s.split, s.label) for s in held] == [("003.png", "validation", 0)]
    assert _defects(list_samples("folder", product, "", "test")) == {"color": 2, "crack": 2, "dent": 2, "good": 2}
    with data_error(product, "does not match the folder name"):
        list_samples("folder", product, "puck", "train")
    for p in [*(product / "train" / "good" / "rgb").glob("00[1-3].png"),
              *(product / "train" / "good" / "xyz").glob("00[1-3].tiff")]:
        p.unlink()
    with data_error(product / "train", "at least 2 train samples"):
        list_samples("folder", product, "", "validation")


def _to_depth_pngs(product: Path, units: float) -> None:
    """Replace every xyz/*.tiff by depth/*.png holding z in ``units`` metres."""
    for xyz_dir in list(product.glob("*/*/xyz")):
        depth_dir = xyz_dir.parent / "depth"
        depth_dir.mkdir()
        for tiff in xyz_dir.iterdir():
            z = np.round(read_xyz(tiff)[..., 2] / units).astype(np.uint16)
            Image.fromarray(z).save(depth_dir / f"{tiff.stem}.png")
        shutil.rmtree(xyz_dir)


def test_folder_format_with_depth_pngs(synth_root: Path, tmp_path: Path, data_error: Callable) -> None:
    product = tmp_path / "rgbd"
    shutil.copytree(synth_root / "puck", product)
    _to_depth_pngs(product, 0.0001)
    with data_error(product / "camera.json", "camera file not found"):
        list_samples("folder", product, "", "train")
    # The synthetic camera: focal length 0.40 m / (0.1 m / 64 px), principal point at the centre.
    camera = {"fx": 256.0, "fy": 256.0, "cx": 31.5, "cy": 31.5, "depth_scale": 0.0001}
    (product / "camera.json").write_text(json.dumps(camera))
    test = list_samples("folder", product, "", "test")
    assert {s.xyz_kind for s in test} == {"depth_png"} and len(test) == 8
    sample = test[0]
    xyz = read_depth_png(sample.xyz, Camera.from_json(product / "camera.json"))
    original = read_xyz(synth_root / "puck" / "test" / sample.defect / "xyz" / f"{sample.rgb.stem}.tiff")
    np.testing.assert_allclose(xyz, original, atol=6e-5)
    shutil.copytree(synth_root / "puck" / "test" / "good" / "xyz", product / "test" / "good" / "xyz")
    with data_error(product / "test" / "good", "both xyz/ and depth/"):
        list_samples("folder", product, "", "test")
    (product / "camera.json").write_text(json.dumps({**camera, "fx": 0}))
    with data_error(product / "camera.json", "fx=0"):
        list_samples("folder", product, "", "train")
