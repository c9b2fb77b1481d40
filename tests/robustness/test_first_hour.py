"""A quality engineer's first hour (issue 19): what the CLI does with a dataset without test/, real
sensors' repeated warnings, wrong-kind model files, simple mistakes, help texts and settings.

Each test failed on the main branch before these fixes (checked by running it with
``PYTHONPATH=/work/main/src``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import torch

from trd.config import setting_names
from trd.console import WarningTally
from trd.data.inputs import PlaneFallbackWarning
from trd.data.io import MaskWarning
from trd.runfolder import LOCK_NAME
from trd.settings import MEANINGS

DEAD_COLUMNS = 4  # a line scanner's dead edge: no 3D points in the first columns


@pytest.fixture(scope="module")
def no_test_fit(rob_root: Path, tmp_path_factory: pytest.TempPathFactory, tools: SimpleNamespace):
    """``trd fit`` (a real subprocess, warnings on) on a copy of the robustness category without
    ``test/`` and with 6 of its train pairs, whose clouds have dead edge columns like a real
    sensor's; 2 epochs at 32 px."""
    tmp = tmp_path_factory.mktemp("no_test")
    root = tmp / "data"
    shutil.copytree(rob_root, root, ignore=shutil.ignore_patterns("test"))
    for extra in sorted((root / "puck" / "train" / "good" / "rgb").iterdir())[6:]:
        extra.unlink()
        (extra.parents[1] / "xyz" / f"{extra.stem}.tiff").unlink()
    clouds = sorted((root / "puck").rglob("*.tiff"))
    for path in clouds:
        xyz = tifffile.imread(path)
        xyz[:, :DEAD_COLUMNS] = 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            tifffile.imwrite(path, xyz)
    out = tmp / "run"
    args = tools.fit_args(root, tmp / "cache", out, "--set", "train.epochs=2", "--set", "data.cache_dir=none",
                          "--set", "data.image_size=32")
    env = {k: v for k, v in tools.cli_env().items() if k != "PYTHONWARNINGS"}
    proc = subprocess.run([sys.executable, "-m", "trd.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)
    return SimpleNamespace(proc=proc, out=out, root=root, clouds=clouds)


def test_fit_without_a_test_split_trains_and_exits_0(no_test_fit: SimpleNamespace) -> None:
    proc = no_test_fit.proc
    assert proc.returncode == 0, proc.stderr  # was: exit 2, ".../test: split folder not found" after training
    assert (no_test_fit.out / "model.pt").is_file()
    assert "evaluation skipped: no test split" in proc.stdout and str(no_test_fit.root / "puck" / "test") in proc.stdout
    assert not (no_test_fit.out / "report.html").exists()


def test_a_warning_repeated_for_every_file_is_one_line_and_a_count(no_test_fit: SimpleNamespace, tools,
                                                                   messages) -> None:
    lines = [ln for ln in tools.visible_lines(no_test_fit.proc.stderr) if "widened" in ln]
    n_files = len([p for p in no_test_fit.clouds if "train" in p.parts or "validation" in p.parts])
    assert len(lines) == 2, lines  # was: one line per file (8 here, 54 in the fit)
    first, summary = lines
    assert first.startswith("warning: ") and str(no_test_fit.clouds[0].parent) in first
    assert f"warning: {n_files} warnings of this kind in this run (PlaneFallbackWarning)" in summary, summary
    assert f"and {n_files - 3} more" in summary
    messages.record("warning", "the same warning for many files (once, then a count at the end)", summary)


def test_fit_says_how_much_training_is_left_after_each_epoch(no_test_fit: SimpleNamespace) -> None:
    epochs = [ln for ln in no_test_fit.proc.stdout.splitlines() if ln.startswith("epoch ")]
    assert len(epochs) == 2
    assert "of training left" in epochs[0] and "of training left" not in epochs[1], epochs


def test_no_lock_file_stays_behind(no_test_fit: SimpleNamespace, ref_run: Path) -> None:
    assert not (no_test_fit.out / LOCK_NAME).exists()  # was: .trd.lock left in every run folder
    assert not (ref_run / LOCK_NAME).exists()  # fit, then test in the same folder


def test_warnings_of_one_kind_are_counted_and_different_problems_kept() -> None:
    printed: list[str] = []
    tally = WarningTally(printed.append)
    for i in range(5):  # as the 3D reader words it: the file, then the problem
        tally.show(PlaneFallbackWarning(f"/scans/xyz/{i:03d}.tiff: corner patches without valid 3D points were "
                                        f"widened (top-left {5 + 2 * i}x{5 + 2 * i})"), PlaneFallbackWarning, "", 0)
    tally.show(MaskWarning("/d/gt/a.png: values are 0 and 1; every value > 0 counts as defect"), MaskWarning, "", 0)
    tally.show(MaskWarning("/d/gt/b.png: inverted mask?"), MaskWarning, "", 0)
    assert printed == ["warning: /scans/xyz/000.tiff: corner patches without valid 3D points were widened "
                       "(top-left 5x5)", "warning: /d/gt/a.png: values are 0 and 1; every value > 0 counts as defect",
                       "warning: /d/gt/b.png: inverted mask?"]
    (summary,) = tally.summary()
    assert summary.startswith("warning: 5 warnings of this kind in this run (PlaneFallbackWarning)")
    assert summary.endswith("files: /scans/xyz/000.tiff, /scans/xyz/001.tiff, /scans/xyz/002.tiff and 2 more")


# --- errors before heavy imports ----------------------------------------------------------------------

_PROBE = ("import sys, time; start = time.perf_counter(); from trd.cli import main\ncode = 0\n"
          "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
          "print('torch-imported' if 'torch' in sys.modules else 'no-torch', code, round(time.perf_counter() - start, 2))")


def _bad_calls(rob_root: Path, ref_run: Path, tmp: Path) -> dict[str, list[str]]:
    model = str(ref_run / "model.pt")
    return {
        "wrong --data": ["fit", "--data", str(tmp / "nowhere"), "--category", "puck", "--out", str(tmp / "r")],
        "wrong --category": ["fit", "--data", str(rob_root), "--category", "puk", "--out", str(tmp / "r")],
        "missing --model file": ["test", "--model", str(tmp / "nope.pt")],
        "wrong --data of test": ["test", "--model", model, "--data", str(tmp / "nowhere")],
        "bad --input": ["predict", "--model", model, "--input", str(tmp / "nowhere"), "--out", str(tmp / "p")],
        "--model given an ONNX file": ["predict", "--model", str(next((ref_run / ".onnx-cache").glob("*.onnx"))),
                                       "--input", str(rob_root / "puck" / "test" / "good"), "--out", str(tmp / "p")],
    }


@pytest.mark.parametrize("case", ["wrong --data", "wrong --category", "missing --model file", "wrong --data of test",
                                  "bad --input", "--model given an ONNX file"])
def test_argument_and_path_errors_come_before_torch(case: str, rob_root: Path, ref_run: Path, tmp_path: Path,
                                                    tools: SimpleNamespace) -> None:
    args = _bad_calls(rob_root, ref_run, tmp_path)[case]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True,
                          env=tools.cli_env(), timeout=60)
    wall = time.perf_counter() - start
    imported, code, _ = proc.stdout.split()
    assert code == "2" and proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert imported == "no-torch", proc.stderr  # was: torch (and the whole toolkit) imported first: 9-18 s
    assert wall < 4.0, f"{case}: {wall:.1f} s"  # interpreter start included; ~0.5-1 s on a quiet 2-vCPU VM


# --- wrong-kind model files ------------------------------------------------------------------------------

def _made_files(folder: Path) -> dict[str, Path]:
    """Files a user may give by mistake, each a real file of its kind."""
    folder.mkdir()
    files = {"state dict": folder / "resnet.pth", "pickle": folder / "model.pkl", "zip": folder / "model.zip",
             "text": folder / "model.txt", "image": folder / "scan.png", "empty": folder / "empty.pt"}
    torch.save({"conv1.weight": torch.zeros(2, 3, 1, 1)}, files["state dict"])
    torch.save({"weights": [1, 2]}, files["pickle"], _use_new_zipfile_serialization=False)
    with zipfile.ZipFile(files["zip"], "w") as archive:
        archive.writestr("readme.txt", "not a model")
    files["text"].write_text("model: runs/puck/model.pt\n")
    from PIL import Image

    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(files["image"])
    files["empty"].write_bytes(b"")
    return files


WRONG_KINDS = [  # (file, flag, what the line says)
    ("onnx", "--model", "is an ONNX export, not a trd model.pt: give it to --onnx"),
    ("model.pt", "--onnx", "is a trd 'model' checkpoint, not an ONNX export: give it to --model"),
    ("state dict", "--model", "is a PyTorch file, not a trd checkpoint (no trd header); another tool's checkpoint"),
    ("pickle", "--model", "is a Python pickle"),
    ("zip", "--model", "is a zip archive with no PyTorch data inside, not a trd checkpoint"),
    ("text", "--model", "is a text file, not a trd checkpoint"),
    ("image", "--model", "is a PNG image, not a trd checkpoint"),
    ("empty", "--model", "not a readable checkpoint (truncated or corrupt?): it is empty (0 bytes)"),
]


@pytest.mark.parametrize(("kind", "flag", "says"), WRONG_KINDS, ids=[f"{k} as {f}" for k, f, _ in WRONG_KINDS])
def test_a_wrong_kind_model_file_is_named_with_the_flag_that_takes_it(kind: str, flag: str, says: str, ref_run: Path,
                                                                      rob_root: Path, tmp_path: Path, tools,
                                                                      messages) -> None:
    files = _made_files(tmp_path / "files")
    files["onnx"] = next((ref_run / ".onnx-cache").glob("*.onnx"))
    files["model.pt"] = ref_run / "model.pt"
    path = files[kind]
    result = tools.run_cli_inprocess("predict", flag, str(path), "--input", str(rob_root / "puck" / "test" / "good"),
                                     "--out", str(tmp_path / "p"))
    (line,) = tools.visible_lines(result.stderr)
    assert result.code == 2 and line.startswith(f"error: {path}: ") and says in line, line
    messages.record("input", f"{kind} given to predict {flag}", line)


def test_test_and_export_name_an_onnx_file_too(ref_run: Path, tmp_path: Path, tools: SimpleNamespace) -> None:
    onnx = next((ref_run / ".onnx-cache").glob("*.onnx"))
    for args in (["test", "--model", str(onnx)], ["export", "--model", str(onnx), "--out", str(tmp_path / "x.onnx")],
                 ["calibrate", "--model", str(onnx)]):
        result = tools.run_cli_inprocess(*args)
        assert result.code == 2 and "is an ONNX export, not a trd model.pt" in result.stderr, result.stderr


# --- discoverability ------------------------------------------------------------------------------------

def test_help_marks_what_is_required_and_does_not_cut_descriptions(tools: SimpleNamespace) -> None:
    fit = tools.run_cli_inprocess("fit", "--help").stdout
    flat = " ".join(fit.split())
    assert "Dataset root. [required here or as data.root in --config]" in flat
    assert "[required for mvtec3d and eyecandies, here or as data.category in --config]" in flat
    assert "--format [mvtec3d|eyecandies|folder] Dataset layout:" in flat  # was: no help at all
    top = tools.run_cli_inprocess("--help").stdout
    commands = top.split("Commands:")[1]
    assert "..." not in commands  # was: "Train both students, calibrate on the validation..."
    assert "weights" in commands and "settings" in commands


@pytest.mark.parametrize(("override", "says"), [
    ("trian.epochs=1", "unknown setting 'trian.epochs'; did you mean train.epochs?"),
    ("train.epoch=1", "unknown setting 'train.epoch'; did you mean train.epochs?"),
    ("epochs=1", "unknown setting 'epochs'; did you mean train.epochs?"),
    ("data.imagesize=64", "did you mean data.image_size?"),
    ("train.epochs=many", "train.epochs='many' is not valid: expected an integer"),
    ("score.foreground_only=sometimes", "score.foreground_only='sometimes' is not valid: expected true or false"),
])
def test_a_mistyped_setting_gets_a_suggestion_and_a_wrong_type_the_expected_one(override: str, says: str,
                                                                                  tmp_path: Path, tools,
                                                                                  messages) -> None:
    result = tools.run_cli_inprocess("fit", "--set", override, "--out", str(tmp_path / "r"))
    (line,) = tools.visible_lines(result.stderr)
    assert result.code == 2 and says in line, line
    assert not (tmp_path / "r").exists()
    messages.record("setting", f"--set {override}", line)


def test_trd_settings_lists_every_setting_with_default_accepts_and_meaning(tools: SimpleNamespace) -> None:
    assert set(MEANINGS) == set(setting_names())  # the listing cannot drift from trd.config
    listing = tools.run_cli_inprocess("settings").stdout
    for name in setting_names():
        assert f"  {name} = " in listing, name
    flat = " ".join(listing.split())
    assert "train.epochs = 200 (mvtec3d) / 100 (eyecandies) / 200 (folder)" in flat
    assert "score.target_fpr = 0.01 Image false-positive rate" in flat and "Accepts a number in (0, 1)." in flat
    one = tools.run_cli_inprocess("settings", "data.image_size").stdout
    assert "data.image_size = 256" in one and "train." not in one
