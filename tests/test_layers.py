"""The layer contract of pyproject.toml ([tool.importlinter]): imports point down only.

Layers, highest first ("|": independent siblings): cli > cli_deploy > cli_setup > api | serve |
cli_store > workflows > calibration | export | reporting > detector | evaluation | runtime | store >
scoring | training > checkpoint | data | model | runfolder | settings > config > atomic | console >
errors (docs/ARCHITECTURE.md). Beside them: the runtime and the store never import torch, and
importing the runtime, the store, the service or the CLI loads no torch, package ``__init__`` files
included (`tests/import_contracts.py`).
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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(ROOT / "tests")])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=src, timeout=120)


def test_the_package_keeps_its_layer_contract() -> None:
    result = _lint(ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout  # the layers, the torch-free runtime, what imports load


@pytest.mark.parametrize("module, planted, reported", [
    # the model layer importing a workflow must be reported
    ("model/trd.py", "from ..workflows import fit as _upward", "trd.model.trd -> trd.workflows"),
    # the service importing torch itself must be reported
    ("serve/app.py", "import torch", "importing the runtime, the service or the CLI loads no torch BROKEN"),
    # package __init__ files that the runtime path loads: scoring (thresholds), data (readers)
    ("scoring/__init__.py", "import torch", "-> trd.scoring -> torch"),
    ("data/__init__.py", "import matplotlib.pyplot", "-> trd.data -> matplotlib"),
    # a module of the runtime itself, importing torch inside a function (caught by the static contract)
    ("runtime/heatmap.py", "def _late():\n    import torchvision", "the runtime never imports torch BROKEN"),
    # the CLI must start without torch (every command's errors come before heavy imports)
    ("cli.py", "from . import api", "importing the runtime, the service or the CLI loads no torch BROKEN"),
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
    assert _loaded_after("import trd.data.geometry, trd.data.transforms, trd.data.io, trd.data.readers",
                         ("torch",)) == []
