"""The layer contract of pyproject.toml ([tool.importlinter]): imports point down only.

Layers, highest first: cli > api | serve > workflows > reporting | export > evaluation > detector | runtime >
scoring > training > model > data > checkpoint | runfolder > config > atomic > errors
(docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint(src: Path) -> subprocess.CompletedProcess:
    """Run lint-imports on the package under ``src`` with the project's contract (a fresh process:
    grimp reads the package from PYTHONPATH)."""
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}, no_cache=True, no_logo=True))")
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=src, timeout=120)


def test_the_package_keeps_its_layer_contract() -> None:
    result = _lint(ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout  # the layers, the torch-free runtime, the service


@pytest.mark.parametrize("module, planted, reported", [
    # the model layer importing a workflow must be reported
    ("model/trd.py", "from ..workflows import fit as _upward", "trd.model.trd -> trd.workflows"),
    # the service importing torch itself must be reported
    ("serve/app.py", "import torch", "the service imports no torch itself BROKEN"),
])
def test_a_planted_import_breaks_its_contract(tmp_path: Path, module: str, planted: str, reported: str) -> None:
    shutil.copytree(ROOT / "src" / "trd", tmp_path / "trd", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "trd" / module
    target.write_text(target.read_text() + f"\n{planted}  # noqa: E402,F401\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert reported in result.stdout, result.stdout


def _loaded_after(statement: str, modules: tuple[str, ...]) -> list[str]:
    code = f"import sys; {statement}; print(' '.join(m for m in {modules!r} if m in sys.modules))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()


def test_light_imports_stay_light() -> None:
    # The model needs no data readers; the numpy preprocessing needs no torch.
    assert _loaded_after("import trd.model", ("trd.data", "tifffile", "scipy")) == []
    assert _loaded_after("import trd.data.geometry, trd.data.transforms, trd.data.io", ("torch",)) == []
