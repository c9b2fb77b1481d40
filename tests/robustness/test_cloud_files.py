"""PCD and PLY point clouds from real sensors: the same scan gives the same score in every format, and a
file that is not an organised cloud, or lies about itself, is refused with one line naming it."""

from __future__ import annotations

import json
import re
import shutil
import struct
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile

from trd.data.readers.pcd import read_pcd
from trd.data.readers.ply import read_ply
from trd.errors import DataError

from ..cloud_writers import write_pcd, write_ply

CAT = "puck"


def test_one_scan_in_every_format_gets_the_same_score(rob_root: Path, ref_run: Path, tmp_path: Path,
                                                      tools: SimpleNamespace) -> None:
    scan = rob_root / CAT / "test" / "dent"
    xyz = tifffile.imread(scan / "xyz" / "000.tiff")
    zeros = xyz.copy()
    missing = (zeros[..., 2] == 0)
    assert missing.any()  # the synthetic scan has dropouts: they must read the same in every convention
    nans = zeros.copy()
    nans[missing] = np.nan
    folder = tmp_path / "line"
    (folder / "rgb").mkdir(parents=True)
    (folder / "xyz").mkdir()
    writers = {
        "tiff": lambda p: shutil.copyfile(scan / "xyz" / "000.tiff", p.with_suffix(".tiff")),
        "pcd-ascii": lambda p: write_pcd(p.with_suffix(".pcd"), nans, "ascii"),
        "pcd-binary": lambda p: write_pcd(p.with_suffix(".pcd"), nans, "binary"),
        "pcd-compressed-zeros": lambda p: write_pcd(p.with_suffix(".pcd"), zeros, "binary_compressed"),
        "ply-ascii-nan": lambda p: write_ply(p.with_suffix(".ply"), nans, "ascii"),
        "ply-binary-nan": lambda p: write_ply(p.with_suffix(".ply"), nans),
        "ply-binary-zeros-grid": lambda p: write_ply(p.with_suffix(".ply"), zeros, "binary_big_endian",
                                                     notes=("obj_info num_cols 64", "obj_info num_rows 64")),
    }
    for name, write in writers.items():
        shutil.copyfile(scan / "rgb" / "000.png", folder / "rgb" / f"{name}.png")
        write(folder / "xyz" / name)
    result = tools.run_cli_inprocess("predict", "--model", str(ref_run / "model.pt"), "--input", str(folder),
                                     "--out", str(tmp_path / "preds"))
    assert result.code == 0, result.stderr  # was: .pcd / .ply not read at all ("no 3D file with this name")
    scores = {r["name"]: r["score"] for r in map(json.loads, (tmp_path / "preds" / "predictions.jsonl").open())}
    assert set(scores) == set(writers)
    assert len(set(scores.values())) == 1, scores  # bit-identical, not merely close


def _cut(path: Path, keep: int) -> Path:
    path.write_bytes(path.read_bytes()[:keep])
    return path


def _without_last_row(path: Path) -> Path:
    data = path.read_bytes().rstrip(b"\n")
    return _cut(path, data.rindex(b"\n") + 1)


def _cloud() -> np.ndarray:
    rows, cols = np.indices((6, 8), dtype=np.float32)
    return np.stack([cols * 1e-3, rows * 1e-3, 0.4 + 1e-4 * cols], axis=2)


def _refusals(folder: Path) -> dict[str, tuple[Path, dict, str]]:
    """case -> (file, read options, words of the message); every file made here."""
    xyz = _cloud()
    header_size = len(write_pcd(folder / "probe.pcd", xyz).read_bytes()) - xyz.nbytes
    png = folder / "scan.pcd"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    lzf = write_pcd(folder / "damaged.pcd", xyz, "binary_compressed")
    body = bytearray(lzf.read_bytes())
    start = body.index(b"DATA binary_compressed\n") + len(b"DATA binary_compressed\n") + 8  # after the size words
    body[start: start + 12] = b"\xff" * 12
    lzf.write_bytes(bytes(body))
    bad_token = write_pcd(folder / "token.pcd", xyz, "ascii")
    bad_token.write_text(bad_token.read_text().replace("0.400", "0.4x0", 1))
    return {
        "PCD with HEIGHT 1 (an unorganised list of points)":
            (write_pcd(folder / "list.pcd", xyz, height=1), {"rgb_hw": (8, 8)}, "unorganised cloud: HEIGHT is 1"),
        "PLY without its missing points (unordered export)":
            (write_ply(folder / "unordered.ply", xyz, vertices=40), {"rgb_hw": (6, 8)}, "do not fill the 8x6 grid"),
        "PLY without a grid, no RGB size":
            (write_ply(folder / "nogrid.ply", xyz), {}, "no pixel grid"),
        "PCD declaring 100000 x 100000 points (8 KB file)":
            (write_pcd(folder / "huge.pcd", xyz, header={"WIDTH": "100000", "HEIGHT": "100000", "POINTS": "10000000000"}),
             {}, r"10000 Mpx is over the limit of 64 Mpx \(data.max_image_pixels"),
        "PLY declaring 4 billion vertices":
            (_set(write_ply(folder / "huge.ply", xyz), b"element vertex 48", b"element vertex 4000000000"), {},
             "Mpx is over the limit"),
        "binary PCD cut on a point boundary":
            (_cut(write_pcd(folder / "cut.pcd", xyz), header_size + 12 * 40), {}, "the binary body ends early: 480 of 576"),
        "compressed PCD cut short":
            (_cut(write_pcd(folder / "cutz.pcd", xyz, "binary_compressed"), header_size + 30), {}, "ends early"),
        "ascii PCD missing its last rows":
            (_without_last_row(write_pcd(folder / "short.pcd", xyz, "ascii")), {},
             "the ascii body has 47 rows but the header declares 48"),
        "binary PLY cut short": (_cut(write_ply(folder / "cut.ply", xyz, notes=("comment width 8", "comment height 6")),
                                      300), {}, "the vertex data ends early"),
        "PCD without a z field":
            (_set(write_pcd(folder / "noz.pcd", xyz), b"FIELDS x y z", b"FIELDS x y d"), {}, "no z field"),
        "PLY without a z property":
            (_set(write_ply(folder / "noz.ply", xyz), b"float z", b"float d"), {"rgb_hw": (6, 8)}, "no z property"),
        "PCD whose POINTS is not WIDTH x HEIGHT":
            (write_pcd(folder / "points.pcd", xyz, header={"POINTS": "40"}), {}, "POINTS 40 is not WIDTH 8 x HEIGHT 6"),
        "binary PCD holding more points than its header":
            (write_pcd(folder / "more.pcd", xyz, header={"HEIGHT": "5", "POINTS": "40"}), {}, "more points than"),
        "compressed PCD whose sizes lie":
            (_set(write_pcd(folder / "lie.pcd", xyz, "binary_compressed"), b"DATA binary_compressed\n",
                  b"DATA binary_compressed\n", sizes=(20, 1 << 30)), {}, "declares 1073741824 bytes of points"),
        "damaged compressed PCD": (lzf, {}, "cannot decompress"),
        "PNG renamed to .pcd": (png, {}, "not a PCD file"),
        "PCD DATA binary_lzma": (write_pcd(folder / "lzma.pcd", xyz, header={"DATA": "binary_lzma"}), {},
                                 "PCD DATA 'binary_lzma' is not supported"),
        "PCD with integer x y z":
            (write_pcd(folder / "int.pcd", (xyz * 1000).round(), dtype="<u2"), {}, "expected one float"),
        "PCD whose every point is NaN":
            (write_pcd(folder / "nan.pcd", np.full_like(xyz, np.nan)), {}, "no valid points"),
        "ascii PCD with a bad number": (bad_token, {}, "cannot parse the ascii body"),
    }


def _set(path: Path, old: bytes, new: bytes, sizes: tuple[int, int] | None = None) -> Path:
    """Replace the first ``old`` by ``new`` (and with ``sizes`` the two size words after it)."""
    data = path.read_bytes()
    at = data.index(old)
    data = data[:at] + new + data[at + len(old):]
    if sizes is not None:
        at += len(new)
        data = data[:at] + struct.pack("<II", *sizes) + data[at + 8:]
    path.write_bytes(data)
    return path


def test_files_that_are_not_organised_clouds_are_refused_naming_them(tmp_path: Path, messages) -> None:
    for case, (path, options, words) in _refusals(tmp_path).items():
        read = read_pcd if path.suffix == ".pcd" else read_ply
        start = time.perf_counter()
        with pytest.raises(DataError) as info:
            read(path, **options)
        line = str(info.value)
        assert line.startswith(f"{path}: ") and "\n" not in line, (case, line)
        assert re.search(words, line), (case, line)
        assert time.perf_counter() - start < 5, case  # refused from the header, nothing decoded
        messages.record("input", case, f"error: {line}")
