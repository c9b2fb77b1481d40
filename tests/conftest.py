"""Shared pytest fixtures: small datasets written in the exact on-disk layouts."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from trd.data.synth import generate
from trd.errors import DataError


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MVTec 3D-AD-layout root with one synthetic category ``puck``, 64x64; treat it as read-only.

    Holds train/good 4, validation/good 2, test/good 2 and 2 each of test/{color,dent,crack}.
    """
    root = tmp_path_factory.mktemp("synth")
    generate(root, ["puck"], size=64, n_train=4, n_validation=2, n_test_good=2, n_test_per_defect=2, seed=0)
    return root


@pytest.fixture
def data_error() -> Callable[..., AbstractContextManager[Any]]:
    """``data_error(path, *words)``: expect a DataError naming ``path.name`` and every word (regex)."""

    def expect(path: Path, *words: str) -> AbstractContextManager[Any]:
        return pytest.raises(DataError, match="(?s)" + "".join(f"(?=.*{w})" for w in (path.name, *words)))

    return expect
