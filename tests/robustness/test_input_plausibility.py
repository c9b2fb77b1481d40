"""Scans judged against what the model was trained on (issue 23: unit slips, degenerate scans, advice
that works): the training scans' spread is recorded at fit, unit slips of exactly 10x are refused every
time, degenerate scans are refused (or warned about where the setting says so), and every message names
the setting of that file's format without advising a flag the command does not have."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile

from trd.checkpoint import load_checkpoint
from trd.config import DataConfig
from trd.data.inputs import DegenerateScanWarning, InputStats, load_pair
from trd.data.samples import Sample
from trd.errors import DataError

CAT = "puck"


def _scans(root: Path) -> list[Path]:
    """Every scan of the robustness dataset (train 16, validation 2, test 4), as its XYZ TIFF."""
    return sorted((root / CAT).glob("*/*/xyz/*.tiff"))


def _line(folder: Path, edit: Callable[[np.ndarray], np.ndarray], scans: list[Path]) -> Path:
    """A predict folder (rgb/ + xyz/) holding ``scans`` with their clouds edited."""
    (folder / "rgb").mkdir(parents=True)
    (folder / "xyz").mkdir()
    for i, tiff in enumerate(scans):
        shutil.copyfile(tiff.parents[1] / "rgb" / f"{tiff.stem}.png", folder / "rgb" / f"{i:02d}.png")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            tifffile.imwrite(folder / "xyz" / f"{i:02d}.tiff", edit(tifffile.imread(tiff)).astype(np.float32))
    return folder


def _predict(tools: SimpleNamespace, model: Path, folder: Path, out: Path) -> dict:
    result = tools.run_cli_inprocess("predict", "--model", str(model), "--input", str(folder), "--out", str(out))
    assert result.code in (0, 1), result.stderr
    return json.loads(result.stdout)


def test_fit_records_the_training_scans_spread(ref_run: Path) -> None:
    inputs = InputStats.from_dict(load_checkpoint(ref_run / "model.pt", "model", mmap=True)["extra"]["inputs"])
    assert inputs.n_scans == 18  # every train and validation scan, not a sample of them
    assert 0.39 < inputs.z_range_m.low <= inputs.z_median_m <= inputs.z_range_m.high < 0.41
    assert 0.0 <= inputs.missing_share.low <= inputs.missing_share.high < 0.1
    assert 0.05 < inputs.foreground_share.low <= inputs.foreground_share.high < 0.9
    assert inputs.camera is None  # XYZ TIFFs need no camera


@pytest.mark.parametrize("factor", [10.0, 0.1])
def test_unit_slips_of_ten_are_refused_every_time(factor: float, rob_root: Path, ref_run: Path, tmp_path: Path,
                                                  tools: SimpleNamespace, messages) -> None:
    scans = _scans(rob_root)
    folder = _line(tmp_path / "line", lambda xyz: xyz * factor, scans)
    summary = _predict(tools, ref_run / "model.pt", folder, tmp_path / "out")
    # was: x10 scored 5 of 10 scans silently, x0.1 3 of 5 (the scan-to-scan spread of the median decided)
    assert summary["scored"] == 0 and len(summary["failed"]) == len(scans) == 22, summary
    errors = [f["error"] for f in summary["failed"]]
    assert all("but the training scans were at 0.39" in e and "data.xyz_unit" in e for e in errors), errors[0]
    assert not any("--xyz-unit" in e for e in errors)
    messages.record("input", f"XYZ scan {factor:g}x off the training scans' scale (a unit slip)", f"error: {errors[0]}")


def _missing(share: float) -> Callable[[np.ndarray], np.ndarray]:
    def drop(xyz: np.ndarray) -> np.ndarray:
        gone = np.random.default_rng(0).random(xyz.shape[:2]) < share
        xyz[gone] = 0.0
        return xyz
    return drop


def _flat(xyz: np.ndarray) -> np.ndarray:
    """The same points moved onto one plane facing the camera: a scan without a product (blank 3D input)."""
    z = xyz[..., 2]
    z0 = float(np.median(z[z > 0]))
    scale = np.where(z > 0, z0 / np.where(z > 0, z, 1.0), 0.0)
    return xyz * scale[..., None]


@pytest.mark.parametrize("case, edit, words", [
    ("60 % of the 3D points missing", _missing(0.6), "% of its 3D points are missing, but the training scans had"),
    ("90 % of the 3D points missing", _missing(0.9), "% of its 3D points are missing, but the training scans had"),
    ("a flat scan: blank 3D input", _flat, "its 3D input is 0.0 % object"),
])
def test_degenerate_scans_are_refused(case: str, edit: Callable, words: str, rob_root: Path, ref_run: Path,
                                      tmp_path: Path, tools: SimpleNamespace, messages) -> None:
    test = sorted((rob_root / CAT / "test").glob("*/xyz/*.tiff"))
    folder = _line(tmp_path / "line", edit, test)
    summary = _predict(tools, ref_run / "model.pt", folder, tmp_path / "out")
    assert summary["scored"] == 0 and len(summary["failed"]) == len(test), summary  # was: all scored silently
    error = summary["failed"][0]["error"]
    assert words in error and "data.degenerate_scans=warn" in error, error
    messages.record("input", f"degenerate scan: {case}", f"error: {error}")


def test_a_setting_scores_degenerate_scans_with_a_warning(rob_root: Path, ref_run: Path, tmp_path: Path,
                                                          messages) -> None:
    reference = InputStats.from_dict(load_checkpoint(ref_run / "model.pt", "model", mmap=True)["extra"]["inputs"])
    folder = _line(tmp_path / "line", _missing(0.9), sorted((rob_root / CAT / "test" / "good").glob("xyz/*")))
    sample = Sample(folder / "rgb" / "00.png", folder / "xyz" / "00.tiff", None, 0, "unknown", CAT, "predict", "xyz_tiff")
    cfg = DataConfig(image_size=64, degenerate_scans="warn")
    with pytest.warns(DegenerateScanWarning, match="00.tiff: 9[0-9] % of its 3D points are missing") as caught:
        _, x3d, _, _ = load_pair(sample, cfg, None, reference)
    assert x3d.shape == (3, 64, 64)
    messages.record("warning", "degenerate scan with data.degenerate_scans=warn", f"warning: {caught[0].message}")
    with pytest.raises(DataError, match="degenerate scan"):  # the default refuses
        load_pair(sample, DataConfig(image_size=64), None, reference)


def test_advice_names_no_flag_the_command_lacks(data_copy: Path, ref_run: Path, tmp_path: Path,
                                                tools: SimpleNamespace, messages) -> None:
    for tiff in sorted((data_copy / CAT / "validation").glob("good/xyz/*.tiff")):
        tifffile.imwrite(tiff, tifffile.imread(tiff) * 1000.0)  # the new good scans came in millimetres
    result = tools.run_cli_inprocess("calibrate", "--model", str(ref_run / "model.pt"), "--data", str(data_copy),
                                     "--out", str(tmp_path / "new.pt"))
    assert result.code == 2
    (line,) = tools.visible_lines(result.stderr)
    # was: "... set data.xyz_unit=mm (trd predict/test: --xyz-unit mm)": calibrate has no --xyz-unit
    assert "the file looks like it is in mm: read it with data.xyz_unit=mm" in line and "--" not in line, line
    messages.record("input", "trd calibrate / trd serve: good scans in millimetres", line)
