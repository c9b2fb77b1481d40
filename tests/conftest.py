"""Shared pytest fixtures: small datasets written in the exact on-disk layouts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from trd.data.synth import generate
from trd.errors import DataError


def pytest_configure(config: pytest.Config) -> None:
    """The caches trd keeps between runs (saved onnxruntime graphs, model hashes, exports of read-only
    models, preprocessing) go into this run's temporary folder, not the user's ~/.cache/trd: a test run
    leaves nothing behind there and finds nothing of an earlier run. Child processes inherit it."""
    if "TRD_CACHE" not in os.environ:
        home = tempfile.mkdtemp(prefix="trd-test-cache-")  # its siblings (ort/, identity/, ...) land in it too
        os.environ["TRD_CACHE"] = os.path.join(home, "preprocess")
        config.add_cleanup(lambda: (os.environ.pop("TRD_CACHE", None), shutil.rmtree(home, ignore_errors=True)))


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MVTec 3D-AD-layout root with one synthetic category ``puck``, 64x64; treat it as read-only.

    Holds train/good 4, validation/good 2, test/good 2 and 2 each of test/{color,dent,crack}.
    """
    root = tmp_path_factory.mktemp("synth")
    generate(root, ["puck"], size=64, n_train=4, n_validation=2, n_test_good=2, n_test_per_defect=2, seed=0)
    return root


@pytest.fixture(scope="session")
def exported(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model.pt, its ONNX export) of a tiny model (resnet18 teachers, 64 px, 1 epoch) of ``puck``;
    treat both as read-only. Needs the training install (torch, onnx). Both validation samples give
    the normalisation statistics and the thresholds (``score.stats_share=1``: approximate thresholds,
    but two validation scores to explore)."""
    import warnings

    pytest.importorskip("onnx")
    from trd import api
    from trd.config import load_config

    run = tmp_path_factory.mktemp("tiny-export")
    cfg = load_config(None, ["model.backbone=resnet18", "model.weights=none", "model.decoder_blocks=1,1,1",
                             "model.bottleneck_blocks=1", "data.image_size=64", "train.epochs=1", "train.batch_size=2",
                             "data.cache_dir=none", f"data.root={synth_root}", "data.category=puck",
                             "score.stats_share=1"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = api.fit(cfg, run / "run", progress=False, log=lambda _: None)
    return model, api.export(model, run / "model.onnx")


#: Python source that makes ``import torch`` (and torchvision) fail from then on, as with the runtime
#: install alone: an import hook, so torch is absent from sys.modules as it is there (a None entry in
#: sys.modules would break libraries that look torch up there, e.g. scipy.stats).
BLOCK_TORCH = ("import importlib.abc, sys\n"
               "class NoTorch(importlib.abc.MetaPathFinder):\n"
               "    def find_spec(self, name, path, target=None):\n"
               "        if name.split('.')[0] in ('torch', 'torchvision'):\n"
               "            raise ImportError(f'No module named {name!r}')\n"
               "sys.meta_path.insert(0, NoTorch())\n")
#: Runs the CLI with torch blocked; prints ``TORCH_MODULES [...]`` (what of them got imported) and
#: ``SQLALCHEMY_LOADED True|False`` on one line of stderr at the end.
WITHOUT_TORCH = (BLOCK_TORCH + "sys.argv = ['trd', *sys.argv[1:]]\n"
                 "from trd.cli import main\n"
                 "try:\n"
                 "    main()\n"
                 "finally:\n"
                 "    loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision'))\n"
                 "    print('TORCH_MODULES', loaded, 'SQLALCHEMY_LOADED', 'sqlalchemy' in sys.modules, file=sys.stderr)\n")


@pytest.fixture(scope="session")
def block_torch() -> str:
    """`BLOCK_TORCH`: a prelude that makes importing torch fail (for `trd serve` launches)."""
    return BLOCK_TORCH


@pytest.fixture(scope="session")
def trd_without_torch() -> Callable[..., subprocess.CompletedProcess]:
    """``trd_without_torch(*args)``: the ``trd`` command in an interpreter that cannot import torch."""
    return lambda *args: subprocess.run([sys.executable, "-c", WITHOUT_TORCH, *args], capture_output=True, text=True,
                                        timeout=300)


@pytest.fixture
def data_error() -> Callable[..., AbstractContextManager[Any]]:
    """``data_error(path, *words)``: expect a DataError naming ``path.name`` and every word (regex)."""

    def expect(path: Path, *words: str) -> AbstractContextManager[Any]:
        return pytest.raises(DataError, match="(?s)" + "".join(f"(?=.*{w})" for w in (path.name, *words)))

    return expect


# --- docs/ERRORS.md, written from what the tests actually saw -----------------------------------

#: Sections of docs/ERRORS.md: key -> (title, text before the table).
ERROR_SECTIONS = {
    "input": ("Bad input (exit code 2)", "A file that cannot be read as what it claims to be stops the command. "
              "The same errors come from the Python API as `trd.errors.DataError` / `CheckpointError` (with "
              "`.path`)."),
    "setting": ("Bad settings (exit code 2)", "Every setting is checked before anything is read or written "
                "(`trd.config.validate_config`); the message names the setting and what it accepts, never a "
                "data file. From the Python API: `trd.errors.ConfigError`."),
    "install": ("The install (exit code 2)", "A command needs a package this install does not have, or the "
                "install holds two ONNX Runtime builds at once (`onnxruntime`, `onnxruntime-gpu`, "
                "`onnxruntime-openvino` share one import name; the extras `[cpu]`, `[gpu]` and `[openvino]` each "
                "install exactly one)."),
    "output": ("Output folders and the machine (exit code 3)", "A folder that another trd process is writing, "
               "a read-only or full disk, or a folder without write permission. Nothing half-written is left "
               "behind: files are written atomically and `predictions.jsonl` only ever holds whole lines. From "
               "the Python API: `trd.errors.OutputError`."),
    "serve": ("`trd serve`: requests it refuses", "The service answers JSON `{\"error\": \"<one line>\", \"status\": N}` "
              "(docs/SERVE.md); shown here as `N: <error>`. A bad file gets the CLI's message above with 422."),
    "warning": ("Warnings (the run goes on)", "Inputs that are read, but probably not as their author meant. "
                "Each kind is printed once, when it first appears, as `warning: ...` on stderr; when the same kind "
                "comes again (for other files: a kind is the warning without its file and numbers), it is "
                "counted, and at the end of the run one line gives the count and the first files."),
}


class MessageLog:
    """Messages the robustness tests saw, by section, for docs/ERRORS.md (TRD_ERRORS_DOC=FILE)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, str]] = {key: {} for key in ERROR_SECTIONS}

    def record(self, section: str, case: str, line: str) -> None:
        self.rows[section][case] = line

    def render(self) -> str:
        import re

        def short(text: str) -> str:
            return re.sub(r"/tmp/pytest-of-[^/]+/pytest-\d+/[^/\s]+/", "…/", text)

        out = ["# Errors and warnings you may see, and what they mean", "",
               "Every problem stops `trd fit` / `trd test` / `trd predict` with **one line on stderr** that names the",
               "file or setting and says what is wrong, never a traceback. Exit codes: **2** bad input or settings,",
               "**3** an output cannot be written, **1** (`trd predict` only) some samples could not be scored while",
               "the others were. Images that are not 8-bit RGB are converted, not refused: greyscale, RGBA (alpha",
               "dropped) and 16-bit PNGs (scaled to 8 bits) are read as RGB.", "",
               "This page is written by the test suite from the messages it saw "
               "(`TRD_ERRORS_DOC=docs/ERRORS.md pytest tests/robustness tests/pipeline tests/serve/test_admission.py`; "
               "temporary folders shortened to `…/`).", ""]
        for key, (title, text) in ERROR_SECTIONS.items():
            rows = self.rows[key]
            out += [f"## {title}", "", text, "", "| case | message |", "|---|---|"]
            out += [f"| {case} | `{short(line)}` |" for case, line in rows.items()]
            out.append("")
        out += ["## Batch `predict`: reported and skipped (exit code 1)", "",
                "`trd predict --input DIR` scores every pair it can and lists the others in the JSON summary it",
                "prints (`\"failed\": [{\"file\": ..., \"error\": ...}]`) with the messages above; the exit code is 1",
                "when any failed. Running it again on the same `--out` retries them and skips what is done.", ""]
        return "\n".join(out)


@pytest.fixture(scope="session")
def messages(request: pytest.FixtureRequest) -> MessageLog:
    log = MessageLog()
    target = __import__("os").environ.get("TRD_ERRORS_DOC")
    if target:
        request.addfinalizer(lambda: Path(target).write_text(log.render()))
    return log


# --- a real PostgreSQL server for the result store's tests (tests/pgserver.py) -------------------

@pytest.fixture(scope="session")
def pg_server():  # noqa: ANN201 - tests/pgserver.PgServer
    """One throwaway PostgreSQL server for the session. Skipped where Debian's postgresql package is
    not installed (`.ci/run` installs it; with CI set a missing server fails the run instead)."""
    import os

    from . import pgserver

    if pgserver.bindir() is None:
        reason = "no PostgreSQL server binaries: apt-get install postgresql (.ci/run installs it), or set TRD_PG_BINDIR"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    server = pgserver.start()
    yield server
    pgserver.stop(server)


@pytest.fixture
def pg_url(pg_server) -> str:  # noqa: ANN001
    """The URL of a new, empty database on the session's PostgreSQL server."""
    from . import pgserver

    return pgserver.create_database(pg_server)
