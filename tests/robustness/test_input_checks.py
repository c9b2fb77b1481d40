"""Inputs that used to change results silently: each is now read right, refused, or warned about.

Units and orientation of point clouds, aspect ratio, PNGs whose data ends early, decompression
bombs, compressed TIFFs, upper-case file names, masks that are not 0/255, empty corner patches.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
from PIL import Image

from trd.data.io import read_rgb
from trd.data.readers.xyz_tiff import read_xyz
from trd.errors import DataError

CAT = "puck"


def _clouds(root: Path, split: str) -> list[Path]:
    return sorted((root / CAT / split).glob("*/xyz/*.tiff"))


def _rewrite_clouds(paths: list[Path], edit: Callable[[np.ndarray], np.ndarray], **kwargs) -> None:
    for path in paths:
        xyz = tifffile.imread(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            tifffile.imwrite(path, edit(xyz).astype(np.float32), **kwargs)


def _test(tools: SimpleNamespace, model: Path, root: Path, out: Path, *extra: str):
    return tools.run_cli_inprocess("test", "--model", str(model), "--data", str(root), "--out", str(out), *extra)


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())["overall"]


@pytest.fixture(scope="module")
def ref_metrics(ref_run: Path, rob_root: Path, tmp_path_factory: pytest.TempPathFactory, tools: SimpleNamespace) -> dict:
    out = tmp_path_factory.mktemp("ref_eval")
    assert _test(tools, ref_run / "model.pt", rob_root, out).code == 0
    return _metrics(out)


def test_scans_in_millimetres_are_refused_then_read_right_with_their_unit(
        data_copy: Path, ref_run: Path, ref_metrics: dict, tmp_path: Path, tools: SimpleNamespace, messages) -> None:
    _rewrite_clouds(_clouds(data_copy, "test"), lambda xyz: xyz * 1000.0)  # the same scans in mm
    refused = _test(tools, ref_run / "model.pt", data_copy, tmp_path / "a")
    assert refused.code == 2  # was: scored, flagged defective (score 25.7 instead of 2.1)
    (line,) = tools.visible_lines(refused.stderr)
    assert "outside the plausible" in line and "looks like it is in mm: read it with data.xyz_unit=mm" in line
    messages.record("input", "point clouds in millimetres, read as metres", line)
    converted = _test(tools, ref_run / "model.pt", data_copy, tmp_path / "b", "--xyz-unit", "mm")
    assert converted.code == 0, converted.stderr
    for key, value in ref_metrics.items():  # float32 mm -> m (x 1000, then x 0.001) moves a pixel score by ~1e-7,
        assert _metrics(tmp_path / "b")[key] == pytest.approx(value, abs=1e-5), key  # which can swap pixel ranks


def test_a_scan_far_from_the_training_scale_is_refused(data_copy: Path, ref_run: Path, tmp_path: Path,
                                                       tools: SimpleNamespace, messages) -> None:
    # 20x farther: plausible as a distance, implausible for this model (trained at ~0.4 m).
    _rewrite_clouds(_clouds(data_copy, "test")[:1], lambda xyz: xyz * 20.0)
    result = _test(tools, ref_run / "model.pt", data_copy, tmp_path / "a")
    assert result.code == 2 and "but the training scans were at 0.39" in result.stderr
    messages.record("input", "a scan 20x farther than the training scans", tools.visible_lines(result.stderr)[0])


def test_mixed_units_in_a_training_set_stop_fit_before_anything_is_written(
        data_copy: Path, rob_cache: Path, tmp_path: Path, tools: SimpleNamespace, messages) -> None:
    odd = _clouds(data_copy, "train")[5]
    _rewrite_clouds([odd], lambda xyz: xyz * 0.01)  # one scan 100x smaller (a cm/m mix-up)
    run = tmp_path / "run"
    result = tools.run_cli_inprocess(*tools.fit_args(data_copy, rob_cache, run, "--no-test"))
    assert result.code == 2 and str(odd) in result.stderr
    assert not run.exists()
    messages.record("input", "one training scan in other units (fit)", tools.visible_lines(result.stderr)[0])


def test_negative_z_is_refused_unless_flipped(data_copy: Path, ref_run: Path, ref_metrics: dict, tmp_path: Path,
                                              tools: SimpleNamespace, messages) -> None:
    def negate(xyz: np.ndarray) -> np.ndarray:
        xyz[..., 2] *= -1.0
        return xyz

    _rewrite_clouds(_clouds(data_copy, "test"), negate)
    refused = _test(tools, ref_run / "model.pt", data_copy, tmp_path / "a")
    assert refused.code == 2 and "have z < 0" in refused.stderr and "data.flip_z=true" in refused.stderr
    messages.record("input", "point cloud with negative z (camera z axis reversed)", tools.visible_lines(refused.stderr)[0])
    flipped = _test(tools, ref_run / "model.pt", data_copy, tmp_path / "b", "--flip-z")
    assert flipped.code == 0, flipped.stderr
    assert _metrics(tmp_path / "b") == pytest.approx(ref_metrics, abs=1e-6)


def test_compressed_xyz_tiffs_are_read(data_copy: Path, ref_run: Path, ref_metrics: dict, tmp_path: Path,
                                       tools: SimpleNamespace) -> None:
    clouds = _clouds(data_copy, "test")
    _rewrite_clouds(clouds[::2], lambda xyz: xyz, compression="lzw", photometric="rgb")  # OpenCV's default
    _rewrite_clouds(clouds[1::2], lambda xyz: xyz, compression="zlib", photometric="rgb")
    assert tifffile.TiffFile(clouds[0]).pages[0].compression == 5  # really LZW
    assert _test(tools, ref_run / "model.pt", data_copy, tmp_path / "a").code == 0
    assert _metrics(tmp_path / "a") == pytest.approx(ref_metrics, abs=1e-6)


def test_upper_case_file_names_train_and_test(data_copy: Path, rob_cache: Path, tmp_path: Path,
                                              tools: SimpleNamespace) -> None:
    for path in sorted(data_copy.rglob("*.*")):
        path.rename(path.with_name(path.stem + path.suffix.upper()))  # 000.PNG, 000.TIFF, gt/000.PNG
    run = tmp_path / "run"
    result = tools.run_cli_inprocess(*tools.fit_args(data_copy, rob_cache, run, "--set", "train.epochs=1"))
    assert result.code == 0, result.stderr  # was: trained, then failed at test on a "missing mask"
    assert json.loads((run / "metrics.json").read_text())["counts"]["defective"] == 3


def _png_without_its_last_rows(path: Path) -> None:
    """A PNG with a complete zlib stream that holds only half of the declared rows (PIL decodes it
    with black rows), valid chunk CRCs and an IEND."""
    arr = np.asarray(Image.open(path).convert("RGB"))
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].tobytes() for y in range(h // 2))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_a_png_whose_data_ends_early_is_refused(data_copy: Path, ref_run: Path, tmp_path: Path,
                                                tools: SimpleNamespace, messages) -> None:
    rgb = data_copy / CAT / "test" / "color" / "rgb" / "000.png"
    _png_without_its_last_rows(rgb)
    with warnings.catch_warnings():
        assert (np.asarray(Image.open(rgb))[-1] == 0).all()  # PIL alone: black rows, no error
    result = _test(tools, ref_run / "model.pt", data_copy, tmp_path / "a")
    assert result.code == 2 and str(rgb) in result.stderr and "pixel data ends early" in result.stderr
    messages.record("input", "PNG whose pixel data ends before its last row", tools.visible_lines(result.stderr)[0])


def _peak_rss_mb_of(code: str) -> tuple[int, float, str]:
    """Run ``code`` in a new interpreter; (exit code, its peak RSS in MB from VmHWM, stderr)."""
    probe = ("import sys\n" + code + "\nhwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]"
             "\nprint(int(hwm.split()[1]) / 1024, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    return proc.returncode, float(proc.stderr.strip().splitlines()[-1]), proc.stderr


def test_decompression_bombs_are_refused_from_their_declared_size(tmp_path: Path, messages) -> None:
    bomb = tmp_path / "bomb.png"
    Image.new("L", (12000, 12000)).save(bomb)  # ~150 KB on disk, 144 Mpx (0.4 GB as RGB) once decoded
    assert bomb.stat().st_size < 1_000_000
    code = f"""
from trd.data.io import read_rgb
from trd.errors import DataError
try:
    read_rgb({str(bomb)!r})
except DataError as exc:
    print(exc, file=sys.stderr)
"""
    rc, peak_mb, err = _peak_rss_mb_of(code)
    assert rc == 0 and "144 Mpx is over the limit of 64 Mpx (data.max_image_pixels" in err
    assert peak_mb < 400, f"peak RSS {peak_mb:.0f} MB: the image was decoded"

    cloud = tmp_path / "bomb.tiff"  # a small TIFF whose header declares 20000 x 20000 x 3 float32 (4.8 GB)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tifffile.imwrite(cloud, np.ones((8, 8, 3), np.float32), photometric="rgb")
    with tifffile.TiffFile(cloud) as tif:
        offsets = [tif.pages[0].tags[name].valueoffset for name in ("ImageWidth", "ImageLength")]
    data = bytearray(cloud.read_bytes())
    for offset in offsets:
        data[offset: offset + 4] = struct.pack("<I", 20000)
    cloud.write_bytes(bytes(data))
    with pytest.raises(DataError, match="400 Mpx is over the limit") as info:
        read_xyz(cloud)
    messages.record("input", "3 KB-like PNG declaring 12000 x 12000 px", "error: " + err.strip().splitlines()[-2])
    messages.record("input", "small TIFF declaring a 20000 x 20000 x 3 cloud", f"error: {info.value}")
    small = tmp_path / "small.png"
    Image.new("RGB", (64, 64)).save(small)
    with pytest.raises(DataError, match="data.max_image_pixels"):
        read_rgb(small, max_pixels=1024)  # the limit is a setting


def test_masks_that_are_not_clean_binary_are_warned_about(data_copy: Path, ref_run: Path, tmp_path: Path,
                                                          tools: SimpleNamespace, messages) -> None:
    gts = {d: data_copy / CAT / "test" / d / "gt" / "000.png" for d in ("color", "crack", "dent")}
    mask = {d: np.asarray(Image.open(p)) for d, p in gts.items()}
    Image.fromarray(255 - mask["color"]).save(gts["color"])  # inverted
    Image.fromarray(np.maximum(mask["crack"], 1)).save(gts["crack"])  # background 1
    noisy = mask["dent"].astype(int) + np.random.default_rng(0).integers(-3, 4, mask["dent"].shape)
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(gts["dent"])  # JPEG-like grey levels
    result = _test(tools, ref_run / "model.pt", data_copy, tmp_path / "a")
    assert result.code == 0, result.stderr
    warned = [ln for ln in tools.visible_lines(result.stderr) if ln.startswith("warning: ")]
    assert any(str(gts["color"]) in ln and "inverted mask?" in ln for ln in warned), warned
    assert any(str(gts["crack"]) in ln and "no 0 pixels" in ln for ln in warned), warned
    assert any(str(gts["dent"]) in ln and "grey levels" in ln for ln in warned), warned
    for what, key in (("inverted mask", "color"), ("mask with background 1", "crack"), ("JPEG-like mask", "dent")):
        messages.record("warning", what, next(ln for ln in warned if str(gts[key]) in ln))


def test_an_empty_corner_patch_falls_back_per_sample(data_copy: Path, ref_run: Path, rob_cache: Path,
                                                     tmp_path: Path, tools: SimpleNamespace, messages) -> None:
    def hole_in_corner(xyz: np.ndarray) -> np.ndarray:
        xyz[:4, :4] = 0.0
        return xyz

    train, test = _clouds(data_copy, "train")[3], _clouds(data_copy, "test")[0]
    _rewrite_clouds([train, test], hole_in_corner)
    fitted = tools.run_cli_inprocess(*tools.fit_args(data_copy, tmp_path / "cache", tmp_path / "run", "--no-test",
                                                     "--set", "train.epochs=1"))
    assert fitted.code == 0, fitted.stderr  # was: the whole fit aborted
    widened = [ln for ln in tools.visible_lines(fitted.stderr) if str(train) in ln and "widened (top-left 5x5)" in ln]
    assert widened
    messages.record("warning", "a few missing points in a corner patch", widened[0])
    scored = tools.run_cli_inprocess("predict", "--model", str(ref_run / "model.pt"), "--rgb",
                                     str(test.parents[1] / "rgb" / "000.png"), "--xyz", str(test),
                                     "--out", str(tmp_path / "pred"))
    assert scored.code == 0, scored.stderr
    assert json.loads(scored.stdout)["scored"] == 1


def test_an_aspect_ratio_unlike_training_is_warned_about_once(data_copy: Path, ref_run: Path, tmp_path: Path,
                                                             tools: SimpleNamespace, messages) -> None:
    folder = tmp_path / "in"
    (folder / "rgb").mkdir(parents=True)
    (folder / "xyz").mkdir()
    for i, defect in enumerate(("good", "color")):
        src = data_copy / CAT / "test" / defect
        Image.open(src / "rgb" / "000.png").crop((0, 0, 64, 48)).save(folder / "rgb" / f"{i}.png")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            tifffile.imwrite(folder / "xyz" / f"{i}.tiff", tifffile.imread(src / "xyz" / "000.tiff")[:48])
    result = tools.run_cli_inprocess("predict", "--model", str(ref_run / "model.pt"), "--input", str(folder),
                                     "--out", str(tmp_path / "pred"))
    assert result.code == 0, result.stderr
    warned = [ln for ln in tools.visible_lines(result.stderr) if "stretched" in ln]
    assert len(warned) == 1 and "64x48 px (aspect 1.33) differ from the training images (64x64" in warned[0]
    messages.record("warning", "scans of another aspect ratio than training (once per run)", warned[0])
