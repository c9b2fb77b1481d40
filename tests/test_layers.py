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


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    # The contract itself is checked: the model layer importing a workflow must be reported.
    shutil.copytree(ROOT / "src" / "trd", tmp_path / "trd", ignore=shutil.ignore_patterns("__pycache__"))
    model = tmp_path / "trd" / "model" / "trd.py"
    model.write_text(model.read_text() + "\nfrom ..workflows import fit as _upward  # noqa: E402\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "trd.model.trd -> trd.workflows" in result.stdout, result.stdout


def test_the_service_importing_torch_itself_breaks_the_contract(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "src" / "trd", tmp_path / "trd", ignore=shutil.ignore_patterns("__pycache__"))
    app = tmp_path / "trd" / "serve" / "app.py"
    app.write_text(app.read_text() + "\nimport torch  # noqa: E402,F401\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "the service imports no torch itself BROKEN" in result.stdout, result.stdout


def _loaded_after(statement: str, modules: tuple[str, ...]) -> list[str]:
    code = f"import sys; {statement}; print(' '.join(m for m in {modules!r} if m in sys.modules))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()


def test_light_imports_stay_light() -> None:
    # The model needs no data readers; the numpy preprocessing needs no torch.
    assert _loaded_after("import trd.model", ("trd.data", "tifffile", "scipy")) == []
    assert _loaded_after("import trd.data.geometry, trd.data.transforms, trd.data.io", ("torch",)) == []
