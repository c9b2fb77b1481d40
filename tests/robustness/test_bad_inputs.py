"""Bad input through every entry point: a one-line error naming the file and the problem, never a traceback.

`CASES` is the table (case, expected message fragment, entry point). Each case runs the real command
(``trd.cli.main`` in-process: the path `python -m trd.cli` takes, which calls `trd.api`) and must exit
with code 2 and print exactly one visible line ``error: <file>: <problem>``. A few cases also run in a
real subprocess (stderr as a user sees it: no log records, no progress bars left) and through the
Python API (a TRDError). Batch ``predict`` instead reports and skips bad samples (exit code 1).
The messages seen go into docs/ERRORS.md (TRD_ERRORS_DOC, see tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from trd import api
from trd.config import load_config
from trd.data.dataset import PairDataset
from trd.data.samples import list_samples
from trd.errors import CheckpointError, DataError, TRDError
from trd.checkpoint import load_checkpoint

CAT = "puck"
TEST_RGB = f"{CAT}/test/color/rgb/000.png"  # the first sample of the test split
TEST_XYZ = f"{CAT}/test/color/xyz/000.tiff"
TEST_GT = f"{CAT}/test/color/gt/000.png"
TRAIN = f"{CAT}/train/good"


# --- writing bad files ---------------------------------------------------------------------------


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def write_tiff(path: Path, arr: np.ndarray) -> None:
    with warnings.catch_warnings():  # tifffile's notice about its future default layout
        warnings.simplefilter("ignore", DeprecationWarning)
        tifffile.imwrite(path, arr)


def edit_cloud(path: Path, edit: Callable[[np.ndarray], None]) -> None:
    xyz = tifffile.imread(path)
    edit(xyz)
    write_tiff(path, xyz)


def png16(path: Path, arr: np.ndarray) -> None:
    """Write a 16-bit-per-channel RGB PNG (PIL cannot): HxWx3 uint16."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


# --- the table -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Env:
    root: Path  # a private copy of the dataset
    tmp: Path
    model: Path  # a hard link to the reference model.pt (call private() before changing it)
    cache: Path
    tools: SimpleNamespace

    def test(self, model: Path | None = None) -> list[str]:
        return ["test", "--model", str(model or self.model), "--data", str(self.root), "--out", str(self.tmp / "eval")]

    def fit(self, *extra: str) -> list[str]:
        return self.tools.fit_args(self.root, self.cache, self.tmp / "run", "--no-test", *extra)


@dataclass(frozen=True)
class Case:
    case: str
    fragment: str
    entry: str  # the command that meets the bad input
    build: Callable[[Env], tuple[list[str], Path]]  # -> (CLI arguments, the file the message must name)


def _data(rel: str, mutate: Callable[[Path], None], entry: str = "test") -> Callable[[Env], tuple[list[str], Path]]:
    def build(env: Env) -> tuple[list[str], Path]:
        path = env.root / rel
        mutate(path)
        return (env.test() if entry == "test" else env.fit()), path
    return build


def _nan(xyz: np.ndarray) -> None:
    xyz[10, 20, 2] = np.nan


def _inf(xyz: np.ndarray) -> None:
    xyz[5, 5, 0] = np.inf


def _empty_split(env: Env) -> tuple[list[str], Path]:
    for folder in (env.root / TRAIN / "rgb", env.root / TRAIN / "xyz"):
        shutil.rmtree(folder)
        folder.mkdir()
    return env.fit(), env.root / CAT / "train"


def _empty_test_split(env: Env) -> tuple[list[str], Path]:
    shutil.rmtree(env.root / CAT / "test")
    (env.root / CAT / "test").mkdir()
    return env.test(), env.root / CAT / "test"


def _no_validation(env: Env) -> tuple[list[str], Path]:
    shutil.rmtree(env.root / CAT / "validation")
    return env.fit(), env.root / CAT / "validation"


def _workers(env: Env) -> tuple[list[str], Path]:
    """A bad training file met inside a DataLoader worker (data.num_workers=1)."""
    path = env.root / TRAIN / "xyz/001.tiff"
    edit_cloud(path, _nan)
    return env.fit("--set", "data.num_workers=1"), path


def _state(mutate: Callable[[Env, Path], None]) -> Callable[[Env], tuple[list[str], Path]]:
    """A run folder whose state.pt is bad: fit resumes from it."""
    def build(env: Env) -> tuple[list[str], Path]:
        state = env.tmp / "run" / "state.pt"
        state.parent.mkdir(parents=True)
        mutate(env, state)
        return env.fit(), state
    return build


def private(path: Path) -> None:
    """Replace a hard link to the shared reference file by a copy of its own (before editing it)."""
    tmp = path.with_name(path.name + ".copy")
    shutil.copyfile(path, tmp)
    os.replace(tmp, path)


def _checkpoint(mutate: Callable[[Path], None], entry: str = "test") -> Callable[[Env], tuple[list[str], Path]]:
    def build(env: Env) -> tuple[list[str], Path]:
        private(env.model)
        mutate(env.model)
        if entry == "predict":
            inputs = env.root / CAT / "test" / "good"
            return ["predict", "--model", str(env.model), "--input", str(inputs), "--out", str(env.tmp / "pred")], env.model
        return env.test(), env.model
    return build


def _edited(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    """Rewrite model.pt with ``edit`` applied to the loaded checkpoint dict."""
    def mutate(path: Path) -> None:
        blob = load_checkpoint(path, "model")
        edit(blob)
        torch.save(blob, path)
    return mutate


def _set_model(key: str, value: object) -> Callable[[dict], None]:
    def edit(blob: dict) -> None:
        blob["config"]["model"][key] = value
    return edit


def _rename_keys(blob: dict) -> None:
    blob["students"] = {k.replace("decoder", "decodr"): v for k, v in blob["students"].items()}


def _predict_args(env: Env, *args: str) -> list[str]:
    return ["predict", "--model", str(env.model), *args, "--out", str(env.tmp / "pred")]


def _predict_no_xyz(env: Env) -> tuple[list[str], Path]:
    folder = env.tmp / "inputs"
    shutil.copytree(env.root / CAT / "test" / "good" / "rgb", folder / "rgb")
    return _predict_args(env, "--input", str(folder)), folder


def _predict_empty(env: Env) -> tuple[list[str], Path]:
    folder = env.tmp / "inputs"
    (folder / "rgb").mkdir(parents=True)
    (folder / "xyz").mkdir()
    return _predict_args(env, "--input", str(folder)), folder


def _predict_rgb_only(env: Env) -> tuple[list[str], Path]:
    rgb = env.root / TEST_RGB
    return _predict_args(env, "--rgb", str(rgb)), rgb


def _predict_missing_xyz(env: Env) -> tuple[list[str], Path]:
    xyz = env.tmp / "nowhere.tiff"
    return _predict_args(env, "--rgb", str(env.root / TEST_RGB), "--xyz", str(xyz)), xyz


CASES: list[Case] = [
    # file contents (met while loading a sample: the same PairDataset code serves fit, test and predict)
    Case("truncated RGB PNG", "cannot decode image (corrupt or truncated?)", "test", _data(TEST_RGB, truncate)),
    Case("RGB file that is not an image", "cannot decode image", "test",
         _data(TEST_RGB, lambda p: p.write_bytes(b"this is not a PNG"))),
    Case("truncated XYZ TIFF", "cannot read TIFF (corrupt or truncated?)", "test", _data(TEST_XYZ, truncate)),
    Case("corrupt XYZ TIFF (bad first-page offset)", "cannot read TIFF", "test",
         _data(TEST_XYZ, lambda p: p.write_bytes(b"II*\x00garbage!"))),
    Case("XYZ HxW (one channel)", "expected an HxWx3 point cloud, found shape (64, 64)", "test",
         _data(TEST_XYZ, lambda p: write_tiff(p, np.ones((64, 64), np.float32)))),
    Case("XYZ HxWx4", "found shape (64, 64, 4)", "test",
         _data(TEST_XYZ, lambda p: write_tiff(p, np.ones((64, 64, 4), np.float32)))),
    Case("XYZ complex64", "unsupported point cloud dtype complex64", "test",
         _data(TEST_XYZ, lambda p: write_tiff(p, np.ones((64, 64, 3), np.complex64)))),
    Case("XYZ bool", "unsupported point cloud dtype bool", "test",
         _data(TEST_XYZ, lambda p: write_tiff(p, np.ones((64, 64, 3), bool)))),
    Case("XYZ with a NaN", "1 NaN or inf values", "test", _data(TEST_XYZ, lambda p: edit_cloud(p, _nan))),
    Case("XYZ with an inf", "1 NaN or inf values", "test", _data(TEST_XYZ, lambda p: edit_cloud(p, _inf))),
    Case("XYZ all zero (no valid point)", "no valid points: z is 0 everywhere", "test",
         _data(TEST_XYZ, lambda p: write_tiff(p, np.zeros((64, 64, 3), np.float32)))),
    Case("XYZ flat and constant (corners collinear)", "define no plane", "test",
         _data(TEST_XYZ, lambda p: write_tiff(p, np.full((64, 64, 3), 0.4, np.float32)))),
    Case("RGB and XYZ 2x2 (too small)", "too small", "test",
         _data(TEST_XYZ, lambda p: (write_tiff(p, np.full((2, 2, 3), 0.4, np.float32)),
                                    Image.new("RGB", (2, 2)).save(p.parents[1] / "rgb/000.png"),
                                    Image.new("L", (2, 2)).save(p.parents[1] / "gt/000.png")))),
    Case("RGB 64x64 but XYZ 48x48", "RGB image is 64x64 but its 3D file", "test",
         _data(TEST_RGB, lambda p: edit_cloud_size(p.parents[1] / "xyz/000.tiff", 48))),
    Case("mask of the wrong size", "mask is 32x32 but its image is 64x64", "test",
         _data(TEST_GT, lambda p: Image.new("L", (32, 32)).save(p))),
    Case("truncated RGB PNG in train (fit)", "cannot decode image (corrupt or truncated?)", "fit",
         _data(f"{TRAIN}/rgb/001.png", truncate, "fit")),
    Case("XYZ with a NaN in train, data.num_workers=1 (fit)", "NaN or inf values", "fit", _workers),
    # layout
    Case("RGB without its XYZ (train)", "RGB image without its 3D file", "fit",
         _data(f"{TRAIN}/rgb/003.png", lambda p: (p.parents[1] / "xyz/003.tiff").unlink(), "fit")),
    Case("XYZ without its RGB (train)", "3D file without its RGB image", "fit",
         _data(f"{TRAIN}/xyz/003.tiff", lambda p: (p.parents[1] / "rgb/003.png").unlink(), "fit")),
    Case("RGB without its XYZ (test)", "RGB image without its 3D file", "test",
         _data(TEST_RGB, lambda p: (p.parents[1] / "xyz/000.tiff").unlink())),
    Case("defect sample without its mask", "missing mask for defect sample 000.png", "test",
         _data(TEST_GT, lambda p: p.unlink())),
    Case("empty train split (empty rgb/ and xyz/)", "empty split: no samples found", "fit", _empty_split),
    Case("empty test split (no defect folders)", "empty split: no samples found", "test", _empty_test_split),
    Case("no validation/ folder", "split folder not found", "fit", _no_validation),
    # checkpoints
    Case("truncated model.pt", "not a readable checkpoint (truncated or corrupt?)", "test", _checkpoint(truncate)),
    Case("empty model.pt", "not a readable checkpoint (truncated or corrupt?)", "test",
         _checkpoint(lambda p: p.write_bytes(b""))),
    Case("text file as model.pt", "is a text file, not a trd checkpoint", "test",
         _checkpoint(lambda p: p.write_text("hello, I am a checkpoint"))),
    Case("PNG image as model.pt", "is a PNG image, not a trd checkpoint", "test",
         _checkpoint(lambda p: Image.new("RGB", (8, 8)).save(p, format="PNG"))),
    Case("plain torch state dict as model.pt", "not a trd checkpoint (no trd header)", "test",
         _checkpoint(lambda p: torch.save(torch.nn.Linear(2, 2).state_dict(), p))),
    Case("state.pt given to test", "is a 'train_state' checkpoint, expected 'model'", "test",
         lambda env: (env.test(env.model.parent / "state.pt"), env.model.parent / "state.pt")),
    Case("state.pt given to predict", "is a 'train_state' checkpoint, expected 'model'", "predict",
         _checkpoint(lambda p: shutil.copyfile(p.parent / "state.pt", p), "predict")),
    Case("model.pt of another backbone (config says resnet34)", "rgb teacher weights do not match this model", "test",
         _checkpoint(_edited(_set_model("backbone", "resnet34")))),
    Case("model.pt of another variant (config says trd_no_filter)", "student weights do not match this model",
         "predict", _checkpoint(_edited(_set_model("variant", "trd_no_filter")), "predict")),
    Case("model.pt of another variant (config says rd_rgb)", "student weights do not match this model", "test",
         _checkpoint(_edited(_set_model("variant", "rd_rgb")))),
    Case("model.pt whose student keys do not match", "Missing key(s) in state_dict", "test",
         _checkpoint(_edited(_rename_keys))),
    Case("model.pt without its thresholds", "incomplete 'model' checkpoint: missing thresholds", "test",
         _checkpoint(_edited(lambda b: b.pop("thresholds")))),
    Case("model.pt of a future format version", "checkpoint version 3 is not supported", "test",
         _checkpoint(_edited(lambda b: b.update(version=3)))),
    Case("model.pt is a folder", "is a folder, expected a checkpoint file", "test",
         _checkpoint(lambda p: (p.unlink(), p.mkdir()))),
    Case("truncated state.pt in the run folder (fit resumes)", "not a readable checkpoint", "fit",
         _state(lambda env, s: (shutil.copyfile(env.model.parent / "state.pt", s), truncate(s, 0.3)))),
    Case("model.pt as the run folder's state.pt (fit resumes)", "is a 'model' checkpoint, expected 'train_state'",
         "fit", _state(lambda env, s: shutil.copyfile(env.model, s))),
    # predict inputs
    Case("predict --input without xyz/", "--input expects a folder with rgb/ and exactly one of xyz/", "predict",
         _predict_no_xyz),
    Case("predict --input with empty rgb/ and xyz/", "no RGB/3D pairs found", "predict", _predict_empty),
    Case("predict --rgb without --xyz", "--rgb needs --xyz", "predict", _predict_rgb_only),
    Case("predict --xyz that does not exist", "file not found", "predict", _predict_missing_xyz),
]

def edit_cloud_size(path: Path, size: int) -> None:
    write_tiff(path, tifffile.imread(path)[:size, :size])


@pytest.fixture()
def env(data_copy: Path, tmp_path: Path, ref_run: Path, rob_cache: Path, tools: SimpleNamespace) -> Env:
    """A private dataset copy and a private copy of the reference run's model.pt (and state.pt),
    with its cached ONNX export (made once by the reference run's test), so no case exports again."""
    run = tmp_path / "refcopy"
    run.mkdir()
    for name in ("model.pt", "state.pt"):
        os.link(ref_run / name, run / name)  # hard links: call private() before writing to one
    shutil.copytree(ref_run / ".onnx-cache", run / ".onnx-cache", copy_function=os.link)
    return Env(data_copy, tmp_path, run / "model.pt", rob_cache, tools)


def _assert_one_line_error(env: Env, stderr: str, named: Path, fragment: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = env.tools.visible_lines(stderr)
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith("error: "), line
    assert str(named) in line, f"{named} not named in: {line}"
    assert fragment in line, line
    return line


@pytest.mark.parametrize("case", CASES, ids=[c.case for c in CASES])
def test_bad_input_gives_one_line_error(case: Case, env: Env, messages) -> None:
    args, named = case.build(env)
    assert args[0] == case.entry
    result = env.tools.run_cli_inprocess(*args)
    assert result.code == 2, (result.stdout, result.stderr)
    messages.record("input", case.case, _assert_one_line_error(env, result.stderr, named, case.fragment))


# --- the same errors from the Python API ---------------------------------------------------------


def test_api_raises_trd_errors(env: Env) -> None:
    cfg = load_config(None, [*env.tools.TINY, f"data.root={env.root}", f"data.category={CAT}", f"data.cache_dir={env.cache}"])
    edit_cloud(env.root / TEST_XYZ, _nan)
    test_split = PairDataset(list_samples("mvtec3d", env.root, CAT, "test"), cfg.data)
    with pytest.raises(DataError, match="NaN or inf") as info:
        test_split[0]
    assert info.value.path == env.root / TEST_XYZ
    with pytest.raises(DataError, match="NaN or inf"):
        api.evaluate(env.model, data_root=env.root, out_dir=env.tmp / "eval", panels=False)
    with pytest.raises(CheckpointError, match="expected 'model'"):
        api.predict(env.model.parent / "state.pt", env.tmp / "pred", input_dir=env.root / CAT / "test" / "good")
    (env.root / TRAIN / "xyz/002.tiff").unlink()
    with pytest.raises(DataError, match="RGB image without its 3D file"):
        api.fit(cfg, env.tmp / "run", progress=False)


def test_fit_with_dataloader_workers_raises_the_data_error(env: Env) -> None:
    """api.fit with data.num_workers=1: a bad training file in a worker surfaces as a DataError."""
    path = env.root / TRAIN / "xyz/003.tiff"
    edit_cloud(path, _nan)
    cfg = load_config(None, [*env.tools.TINY, f"data.root={env.root}", f"data.category={CAT}",
                             "data.cache_dir=none", "data.num_workers=1"])
    with pytest.raises(DataError, match="NaN or inf") as info:
        api.fit(cfg, env.tmp / "run", progress=False)
    assert info.value.path == path


def test_test_with_dataloader_workers_raises_the_data_error(env: Env) -> None:
    """evaluate with data.num_workers=1: the worker's DataError arrives as a DataError, not a RuntimeError."""
    private(env.model)
    blob = load_checkpoint(env.model, "model")
    blob["config"]["data"]["num_workers"] = 1
    torch.save(blob, env.model)
    truncate(env.root / TEST_RGB)
    with pytest.raises(DataError, match="cannot decode image") as info:
        api.evaluate(env.model, data_root=env.root, out_dir=env.tmp / "eval", panels=False)
    assert info.value.path == env.root / TEST_RGB


def test_predict_rejects_batch_size_zero_without_traceback(env: Env) -> None:
    result = env.tools.run_cli_inprocess(*_predict_args(env, "--input", str(env.root / CAT / "test" / "good"),
                                              "--batch-size", "0"))
    assert result.code == 2 and "Traceback" not in result.stderr
    assert "--batch-size" in result.stderr


def test_binary_config_file(env: Env) -> None:
    result = env.tools.run_cli_inprocess("fit", "--config", str(env.model), "--out", str(env.tmp / "run"))
    assert result.code == 2
    assert "cannot read config file" in result.stderr and str(env.model) in result.stderr


def test_unknown_variant_in_checkpoint_names_the_file(env: Env) -> None:
    private(env.model)
    _edited(_set_model("variant", "no_such_variant"))(env.model)
    with pytest.raises(TRDError) as info:
        api.evaluate(env.model, data_root=env.root, out_dir=env.tmp / "eval", panels=False)
    assert str(env.model) in str(info.value)


# --- real subprocesses: stderr exactly as a user sees it -------------------------------------------


def test_cli_subprocess_error_is_one_line(env: Env) -> None:
    """Real stderr: a library's log record (tifffile warns about this file) must not add a line."""
    (env.root / TEST_XYZ).write_bytes(b"II*\x00garbage!")
    proc = env.tools.run_cli(*env.test(), check=False)
    assert proc.returncode == 2
    _assert_one_line_error(env, proc.stderr, env.root / TEST_XYZ, "cannot read TIFF")


# --- batch predict: bad samples are reported and skipped ---------------------------------------------


BATCH_BAD: dict[str, tuple[str, Callable[[Path, Path], None]]] = {
    # name -> (expected fragment, mutate(rgb, xyz))
    "b_trunc_png": ("cannot decode image", lambda rgb, xyz: truncate(rgb)),
    "b_junk_tiff": ("cannot read TIFF", lambda rgb, xyz: xyz.write_bytes(b"II*\x00garbage!")),
    "b_trunc_tiff": ("cannot read TIFF", lambda rgb, xyz: truncate(xyz)),
    "b_hw": ("found shape (64, 64)", lambda rgb, xyz: write_tiff(xyz, np.ones((64, 64), np.float32))),
    "b_hw4": ("found shape (64, 64, 4)", lambda rgb, xyz: write_tiff(xyz, np.ones((64, 64, 4), np.float32))),
    "b_complex": ("dtype complex64", lambda rgb, xyz: write_tiff(xyz, np.ones((64, 64, 3), np.complex64))),
    "b_bool": ("dtype bool", lambda rgb, xyz: write_tiff(xyz, np.ones((64, 64, 3), bool))),
    "b_nan": ("NaN or inf", lambda rgb, xyz: edit_cloud(xyz, _nan)),
    "b_inf": ("NaN or inf", lambda rgb, xyz: edit_cloud(xyz, _inf)),
    "b_zero": ("no valid points", lambda rgb, xyz: write_tiff(xyz, np.zeros((64, 64, 3), np.float32))),
    "b_size": ("RGB image is 64x64 but its 3D file", lambda rgb, xyz: edit_cloud_size(xyz, 40)),
    "b_no_xyz": ("no 3D file with this name in xyz/", lambda rgb, xyz: xyz.unlink()),
    "b_no_rgb": ("no RGB image with this name", lambda rgb, xyz: rgb.unlink()),
}
CONVERTED = ("c_grey", "c_rgba", "c_grey16", "c_rgb16")


def _convert(name: str, rgb: Path) -> None:
    img = np.asarray(Image.open(rgb).convert("RGB"))
    if name == "c_grey":
        Image.fromarray(img).convert("L").save(rgb)
    elif name == "c_rgba":
        Image.fromarray(img).convert("RGBA").save(rgb)
    elif name == "c_grey16":
        grey = np.asarray(Image.fromarray(img).convert("L")).astype(np.uint16) * 257
        Image.fromarray(grey).save(rgb)
    else:
        png16(rgb, img.astype(np.uint16) * 257)  # 16-bit RGB: v * 257 maps back to v exactly


@pytest.fixture()
def batch_inputs(rob_root: Path, tmp_path: Path) -> Path:
    """good_0..3, the BATCH_BAD samples, the CONVERTED copies of good_0, and a macOS '._' file."""
    src = rob_root / CAT / "test"
    folder = tmp_path / "inputs"
    (folder / "rgb").mkdir(parents=True)
    (folder / "xyz").mkdir()
    names = [f"good_{i}" for i in range(4)] + list(BATCH_BAD) + list(CONVERTED)
    for i, name in enumerate(names):
        origin = "good" if name.startswith("c_") or name == "good_0" else ("good", "color", "crack", "dent")[i % 4]
        rgb, xyz = folder / "rgb" / f"{name}.png", folder / "xyz" / f"{name}.tiff"
        shutil.copyfile(src / origin / "rgb/000.png", rgb)
        shutil.copyfile(src / origin / "xyz/000.tiff", xyz)
        if name in BATCH_BAD:
            BATCH_BAD[name][1](rgb, xyz)
        elif name in CONVERTED:
            _convert(name, rgb)
    (folder / "rgb" / "._good_0.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")  # hidden: ignored
    return folder


def _check_batch(summary: dict, out: Path, folder: Path) -> None:
    failed = {Path(f["file"]).stem: f for f in summary["failed"]}
    assert set(failed) == set(BATCH_BAD), failed
    for name, (fragment, _) in BATCH_BAD.items():
        assert fragment in failed[name]["error"], failed[name]
        if name not in ("b_no_xyz", "b_no_rgb"):  # a file that was read: the message names it
            assert f"{folder}/" in failed[name]["error"] and name in failed[name]["error"], failed[name]
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    scores = {r["name"]: r["score"] for r in records}
    assert sorted(scores) == sorted([f"good_{i}" for i in range(4)] + list(CONVERTED))
    assert summary["scored"] == len(records)
    assert all(np.isfinite(s) for s in scores.values())
    for r in records:
        assert (out / r["heatmap"]).is_file() and (out / r["mask"]).is_file()
    # alpha dropped and 16-bit RGB scaled back: the very same pixels as good_0, so the same score
    # (approx: batches of other sizes may round differently)
    assert scores["c_rgba"] == pytest.approx(scores["good_0"], rel=1e-5)
    assert scores["c_rgb16"] == pytest.approx(scores["good_0"], rel=1e-5)
    assert scores["c_grey16"] == pytest.approx(scores["c_grey"], rel=1e-5)  # 16-bit grey = 8-bit grey * 257


def test_batch_predict_api_reports_and_skips_bad_samples(batch_inputs: Path, ref_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred"
    summary = api.predict(ref_run / "model.pt", out, input_dir=batch_inputs, batch_size=4)
    _check_batch(summary, out, batch_inputs)


def test_batch_predict_cli_exit_code_1_and_failures_listed(batch_inputs: Path, ref_run: Path, tmp_path: Path,
                                                           tools: SimpleNamespace) -> None:
    out = tmp_path / "pred"
    proc = tools.run_cli("predict", "--model", str(ref_run / "model.pt"), "--input", str(batch_inputs),
                   "--out", str(out), "--batch-size", "4", check=False)
    assert proc.returncode == 1, proc.stderr
    assert tools.visible_lines(proc.stderr) == [], proc.stderr  # nothing on stderr: not even tifffile's log
    _check_batch(json.loads(proc.stdout), out, batch_inputs)


def test_converted_images_load_as_expected(batch_inputs: Path) -> None:
    """Grey, RGBA, 16-bit grey and 16-bit RGB inputs become the RGB tensor the conversion promises."""
    from trd.data.io import read_rgb

    rgb = batch_inputs / "rgb"
    original = read_rgb(rgb / "good_0.png")
    grey = read_rgb(rgb / "c_grey.png")
    assert grey.shape == original.shape and np.array_equal(grey[..., 0], grey[..., 2])
    assert np.array_equal(read_rgb(rgb / "c_rgba.png"), original)
    assert np.array_equal(read_rgb(rgb / "c_rgb16.png"), original)
    assert np.array_equal(read_rgb(rgb / "c_grey16.png"), grey)
