"""The 3D reader registry: layouts, single pairs and the server learn the accepted files from it, and a
new kind of file is one `Reader` registered there (shown with a kind made up for the test)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from trd.config import DataConfig
from trd.data import readers
from trd.data.inputs import load_pair
from trd.data.readers import READERS, Reader, ReadOptions, folders, kind_of, reader, suffixes
from trd.data.readers.xyz_tiff import read_xyz
from trd.data.samples import list_samples, unlabelled_samples
from trd.errors import DataError


def test_every_format_learns_its_files_from_the_registry() -> None:
    clouds = {".tiff": "xyz_tiff", ".tif": "xyz_tiff", ".pcd": "pcd", ".ply": "ply"}  # one folder, several kinds
    assert folders("mvtec3d") == {"xyz": clouds}
    assert folders("folder") == {"xyz": clouds, "depth": {".png": "depth_png"}}
    assert folders("eyecandies") == {"normals": {".png": "normals_png"}}
    assert suffixes("folder") == [".pcd", ".ply", ".png", ".tif", ".tiff"]
    assert kind_of(Path("scan.TIF"), "folder") == "xyz_tiff" and kind_of(Path("scan.PLY"), "folder") == "ply"
    with pytest.raises(DataError, match="a mvtec3d model reads 3D files ending in .pcd, .ply, .tif, .tiff"):
        kind_of(Path("scan.png"), "mvtec3d")
    assert reader("depth_png").camera and not reader("normals_png").cloud
    with pytest.raises(ValueError, match="unknown 3D input kind 'obj'"):
        reader("obj")


def _npy_reader(path: Path, options: ReadOptions) -> np.ndarray:
    return np.load(path).astype(np.float32)


@pytest.fixture
def npy_kind(monkeypatch: pytest.MonkeyPatch) -> Reader:
    """A made-up kind of 3D file (a NumPy array of the cloud) registered for folder datasets."""
    kind = Reader(kind="xyz_npy", folder="xyz", suffixes=(".npy",), formats=("folder",), description="NumPy cloud",
                  read=_npy_reader, size=lambda path: np.load(path, mmap_mode="r").shape[:2])
    monkeypatch.setitem(READERS, kind.kind, kind)
    return kind


def test_a_new_kind_is_one_registered_reader(synth_root: Path, tmp_path: Path, npy_kind: Reader) -> None:
    # a folder dataset whose good samples are .npy clouds, the defective ones the original TIFFs
    root = tmp_path / "line"
    for split in ("train", "test"):
        shutil.copytree(synth_root / "puck" / split, root / split)
    for tiff in sorted((root / "train" / "good" / "xyz").glob("*.tiff")):
        np.save(tiff.with_suffix(".npy"), read_xyz(tiff))
        tiff.unlink()
    train = list_samples("folder", root, "", "train")
    assert {s.xyz_kind for s in train} == {"xyz_npy"} and all(s.xyz.suffix == ".npy" for s in train)
    assert {s.xyz_kind for s in list_samples("folder", root, "", "test")} == {"xyz_tiff"}
    cfg = DataConfig(root=str(root), format="folder", image_size=32)
    # read through the registry: the same cloud as a TIFF gives the same model inputs
    original = list_samples("mvtec3d", synth_root, "puck", "train")[0]
    rgb_a, x3d_a, *_ = load_pair(train[0], cfg)
    rgb_b, x3d_b, *_ = load_pair(original, cfg)
    np.testing.assert_array_equal(x3d_a, x3d_b)
    np.testing.assert_array_equal(rgb_a, rgb_b)
    # predict's single pairs and folders accept the new suffix; other formats do not
    pair, _ = unlabelled_samples(cfg, rgb=train[0].rgb, xyz=train[0].xyz)
    assert pair[0].xyz_kind == "xyz_npy"
    assert ".npy" in readers.suffixes("folder") and ".npy" not in readers.suffixes("mvtec3d")
