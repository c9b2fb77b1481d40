"""Shared pieces of the robustness tests: a slightly larger synthetic category, one reference run
trained through the CLI (shared by the determinism, interruption, bad-input and memory tests), and
helpers to run the CLI in a subprocess or in-process."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from trd.data.synth import generate

#: The tiny model of tests/pipeline, trained for 3 epochs (resume is tested at an epoch boundary
#: in the middle of a run) on 16 training pairs (8 steps per epoch, so a kill lands mid-epoch).
#: Runs keep their final train state: the bad-input tests reuse the reference run's state.pt.
EPOCHS = 3
TINY = [
    "model.backbone=resnet18", "model.weights=none", "model.decoder_blocks=1,1,1", "model.bottleneck_blocks=1",
    "data.image_size=64", f"train.epochs={EPOCHS}", "train.batch_size=2", "train.device=cpu", "train.keep_state=true",
]


@pytest.fixture(autouse=True)
def _quiet_random_teachers():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="teacher .* randomly initialised")
        yield


@pytest.fixture(scope="session")
def rob_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MVTec 3D-AD-layout root, category ``puck``, 64 px: train 16, validation 2, test 1 per folder.

    The test split sorts as color/000, crack/000, dent/000, good/000. Treat it as read-only.
    """
    root = tmp_path_factory.mktemp("rob_data")
    generate(root, ["puck"], size=64, n_train=16, n_validation=2, n_test_good=1, n_test_per_defect=1, seed=3)
    return root


@pytest.fixture(scope="session")
def rob_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One preprocessing cache for every run of the session (entries are per file and parameters)."""
    return tmp_path_factory.mktemp("rob_cache")


def fit_args(root: Path, cache: Path, out: Path, *extra: str) -> list[str]:
    """``trd fit`` arguments of the tiny reference configuration."""
    args = ["fit", "--data", str(root), "--category", "puck", "--out", str(out)]
    for item in [*TINY, f"data.cache_dir={cache}"]:
        args += ["--set", item]
    return [*args, *extra]


#: Intra-op threads of every CLI subprocess: CPU results are bitwise reproducible for one thread count
#: (docs/REPRODUCIBILITY.md), so the runs that are compared must use the same one.
CLI_THREADS = "2"


def cli_env() -> dict[str, str]:
    """Environment of a CLI subprocess: this interpreter's path, unbuffered output, no warnings,
    a fixed number of intra-op threads."""
    return {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": CLI_THREADS}


def run_cli(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m trd.cli ARGS`` in a subprocess; output decoded without newline translation (a
    progress bar's ``\r`` stays a ``\r``)."""
    raw = subprocess.run([sys.executable, "-m", "trd.cli", *args], capture_output=True, env=cli_env(), timeout=timeout)
    proc = subprocess.CompletedProcess(raw.args, raw.returncode, raw.stdout.decode(), raw.stderr.decode())
    if check and proc.returncode != 0:
        raise AssertionError(f"trd {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli_inprocess(*args: str) -> CliResult:
    """``trd.cli.main()`` with ``sys.argv = ["trd", *args]``: the exact code path of the command,
    without a new interpreter; anything but a TRDError propagates (the test fails with it)."""
    from trd.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["trd", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    return CliResult(code, out.getvalue(), err.getvalue())


def visible_lines(text: str) -> list[str]:
    """What a terminal shows of ``text``: per line, the part after the last carriage return
    (progress bars redraw with ``\\r`` and clear themselves), empty lines dropped."""
    lines = [line.rsplit("\r", 1)[-1].rstrip() for line in text.split("\n")]
    return [line for line in lines if line.strip()]


#: The test pairs of `rob_root` that `scans` cycles through.
SOURCES = ("good", "color", "crack", "dent")


def scans(rob_root: Path, folder: Path, n: int) -> Path:
    """``folder`` with ``n`` pairs ``rgb/0000.png`` + ``xyz/0000.tiff``, ... cycling through the 4 test
    pairs: the XYZ TIFF a hard link, the RGB PNG rewritten with the pair's number in a text chunk (as
    scanners stamp theirs), so every pair is another scan (another content key) with the same pixels."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    (folder / "rgb").mkdir(parents=True)
    (folder / "xyz").mkdir()
    images = {}
    for i in range(n):
        src = rob_root / "puck" / "test" / SOURCES[i % len(SOURCES)]
        if src not in images:
            with Image.open(src / "rgb" / "000.png") as im:
                images[src] = im.copy()
        stamp = PngInfo()
        stamp.add_text("scan", str(i))
        images[src].save(folder / "rgb" / f"{i:04d}.png", pnginfo=stamp)
        os.link(src / "xyz" / "000.tiff", folder / "xyz" / f"{i:04d}.tiff")
    return folder


@pytest.fixture(scope="session")
def tools() -> SimpleNamespace:
    """The helpers of this file for the test modules (with --import-mode=importlib a conftest is not
    importable): TINY, fit_args, run_cli, run_cli_inprocess, visible_lines, cli_env, scans."""
    return SimpleNamespace(TINY=TINY, EPOCHS=EPOCHS, CLI_THREADS=CLI_THREADS, fit_args=fit_args, run_cli=run_cli,
                           run_cli_inprocess=run_cli_inprocess, visible_lines=visible_lines, cli_env=cli_env,
                           scans=scans, SOURCES=SOURCES)


@pytest.fixture(scope="session")
def ref_run(rob_root: Path, rob_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted ``trd fit`` (with the test split evaluated) of the reference configuration."""
    out = tmp_path_factory.mktemp("ref") / "run"
    run_cli(*fit_args(rob_root, rob_cache, out))
    return out


@pytest.fixture()
def data_copy(rob_root: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the robustness dataset."""
    root = tmp_path / "data"
    shutil.copytree(rob_root, root)
    return root
