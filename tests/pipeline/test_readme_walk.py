"""The README's Quick start and Deploy sections, walked in order in a temporary folder (issue 19).

The commands are parsed out of README.md's code blocks, so a change there changes this test. Only
what must be is substituted: a tiny model and dataset (``data.image_size=32``, ``train.epochs=1``,
synth ``--size 32`` with a few samples of one category), and the scans a user would bring
(``my_scans/``, ``line_scans/``, ``scan.png``, ``scan.tiff``) are made from the synthetic test split.
The ImageNet teachers cannot be downloaded here: a resnet18 weights file made by the test is
imported first with ``trd weights import --sha256`` into a temporary TORCH_HOME, so the README's
``fit`` (teachers ``imagenet``, the default) loads it from torchvision's cache.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
SECTIONS = ("## Quick start", "## Deploy: predict, export, ONNX")
#: README text -> what the walk runs instead (each must be found in the README's commands).
TINY = {"--set data.image_size=128": "--set data.image_size=32", "--set train.epochs=20": "--set train.epochs=1"}
SYNTH_SMALL = ["--size", "32", "--categories", "puck", "--n-train", "4", "--n-validation", "2", "--n-test-good", "1",
               "--n-test-per-defect", "1"]


def readme_commands() -> list[str]:
    """The ``.venv/bin/trd`` commands of the first bash block of each section, in order, without
    comments, continuation lines joined."""
    text = README.read_text()
    commands = []
    for heading in SECTIONS:
        section = text.split(heading + "\n", 1)[1]
        block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
        commands += [" ".join(shlex.split(line, comments=True)) for line in block.splitlines()
                     if line.startswith(".venv/bin/trd ")]
    return commands


def _argv(command: str) -> list[str]:
    for old, new in TINY.items():
        command = command.replace(old, new)
    args = shlex.split(command)[1:]
    assert args, command
    if args[0] == "synth":
        args += SYNTH_SMALL
    return [sys.executable, "-m", "trd.cli", *args]


def _user_files(home: Path) -> None:
    """The scans a user brings, made from the synthetic test split."""
    test = home / "data" / "synth" / "puck" / "test"
    for name, defects in (("my_scans", ("crack",)), ("line_scans", ("good", "color"))):
        for sub in ("rgb", "xyz"):
            (home / name / sub).mkdir(parents=True)
        for defect in defects:
            for rgb in (test / defect / "rgb").iterdir():
                shutil.copy(rgb, home / name / "rgb" / f"{defect}_{rgb.name}")
                shutil.copy(test / defect / "xyz" / f"{rgb.stem}.tiff", home / name / "xyz" / f"{defect}_{rgb.stem}.tiff")
    shutil.copy(test / "dent" / "rgb" / "000.png", home / "scan.png")
    shutil.copy(test / "dent" / "xyz" / "000.tiff", home / "scan.tiff")


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Every README step, in order, in one folder; the results of each step."""
    import torch
    import torchvision

    home = tmp_path_factory.mktemp("readme")
    env = {**os.environ, "TORCH_HOME": str(home / "torch"), "TRD_CACHE": str(home / "cache"),
           "OMP_NUM_THREADS": "2"}
    env.pop("PYTHONWARNINGS", None)
    weights = home / "download" / "resnet18-f37072fd.pth"  # stands in for torchvision's file
    weights.parent.mkdir()
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    imported = subprocess.run([sys.executable, "-m", "trd.cli", "weights", "import", str(weights), "--sha256", sha],
                              capture_output=True, text=True, env=env, cwd=home, timeout=300)
    assert imported.returncode == 0, imported.stderr
    commands = readme_commands()
    assert all(any(old in c for c in commands) for old in TINY), "the README's fit no longer sets these: update TINY"
    done = []
    for command in commands:
        proc = subprocess.run(_argv(command), capture_output=True, text=True, env=env, cwd=home, timeout=600)
        done.append((command, proc))
        if command.startswith(".venv/bin/trd synth"):
            _user_files(home)
    return SimpleNamespace(home=home, env=env, done=done, commands=commands)


@pytest.mark.slow
def test_every_readme_step_exits_0(walk: SimpleNamespace) -> None:
    assert [c for c, _ in walk.done][:4] == walk.commands[:4]  # the Quick start, in order
    for command, proc in walk.done:
        assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
    fit = next(proc for command, proc in walk.done if " fit " in command)
    assert "not torchvision's published resnet18 weights" in fit.stderr  # the imported teachers were used
    assert (walk.home / "runs" / "puck" / "report.html").is_file() and (walk.home / "puck.onnx").is_file()
    assert (walk.home / "preds" / "predictions.jsonl").is_file()


@pytest.mark.slow
def test_onnx_predict_continues_the_folder_of_its_model_pt(walk: SimpleNamespace) -> None:
    """Deploy in order: ``predict --onnx`` into the ``--out`` of ``predict --model`` of the same
    model continues it (issue 19 item 3: it was refused as another model's folder)."""
    pairs = [(c, p) for c, p in walk.done if c.startswith(".venv/bin/trd predict")]
    outs = [re.search(r"--out (\S+)", c).group(1) for c, _ in pairs]
    shared = [out for out in set(outs) if any("--onnx" in c and f"--out {out}" in c for c, _ in pairs)
              and any("--model" in c and f"--out {out}" in c for c, _ in pairs)]
    assert shared, "the README no longer predicts with both forms into one folder: remove this test"
    for command, proc in pairs:
        assert proc.returncode == 0 and "another model" not in proc.stderr, f"{command}\n{proc.stderr}"
