"""Real `trd serve` processes on 127.0.0.1 for the service's tests (and the review page's).

``served`` (session): one server of a tiny exported model, with a 1 MiB upload limit, started once.
``exported`` (tests/conftest.py): that model (model.pt and its .onnx export). ``start_server``: more servers with other
options (a tiny queue, a token, a slow batch), each stopped with SIGTERM at the end of its test.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from trd.data.samples import list_samples

pytest.importorskip("onnx")
pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

#: How a server is started: the trd CLI in a fresh interpreter, ``prelude`` run first.
LAUNCH = ("import sys\n{prelude}\nsys.argv = ['trd', *sys.argv[1:]]\nfrom trd.cli import main\ntry:\n    main()\n"
          "finally:\n    print('TORCH_MODULES', sorted(m for m in sys.modules if m.split('.')[0] in ('torch', "
          "'torchvision') and sys.modules[m]), file=sys.stderr)\n")


@dataclass
class Server:
    """A running `trd serve` process: ``url`` (no trailing slash), ``token``, test pairs, the model."""

    process: subprocess.Popen
    url: str
    onnx: Path
    pairs: list[tuple[Path, Path]]
    token: str | None = None
    models_dir: Path | None = None  # where POST /v1/threshold writes (--models-dir)
    stderr: str = field(default="", init=False)

    def pair(self, i: int) -> tuple[Path, Path]:
        """(RGB path, XYZ path) of synthetic test pair ``i`` (0..7: good, color, crack, dent; 2 each)."""
        return self.pairs[i]

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def score(self, i: int, heatmaps: bool = False, **kwargs) -> httpx.Response:
        """POST /v1/score with pair ``i``."""
        rgb, xyz = self.pair(i)
        files = {"rgb": (rgb.name, rgb.read_bytes(), "image/png"), "xyz": (xyz.name, xyz.read_bytes(), "image/tiff")}
        return httpx.post(f"{self.url}/v1/score", params={"heatmaps": "true"} if heatmaps else None, files=files,
                          headers=self.headers(), timeout=60, **kwargs)

    def metric(self, name: str) -> float:
        """The value of Prometheus gauge or counter ``name`` on /metrics (0 where it is not listed)."""
        text = httpx.get(f"{self.url}/metrics", headers=self.headers()).text
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    def wait_for(self, name: str, value: float, timeout: float = 20) -> None:
        """Poll /metrics until ``name`` equals ``value`` (fails after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while self.metric(name) != value:
            assert time.monotonic() < deadline, f"{name} never reached {value}"
            time.sleep(0.02)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, wait for the exit; the exit code (``stderr`` holds what it printed)."""
        if self.process.stdout.closed:  # stopped before
            return self.process.returncode
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            _, self.stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, self.stderr = self.process.communicate()
            raise
        return self.process.returncode


def launch(onnx: Path, *args: str, prelude: str = "", env: dict[str, str] | None = None,
           model: Path | None = None, timeout: float = 60) -> subprocess.Popen:
    """Start ``trd serve --model MODEL ARGS`` (default: the ONNX file); the process, still starting."""
    command = [sys.executable, "-c", LAUNCH.format(prelude=prelude), "serve", "--model", str(model or onnx), *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def wait_ready(process: subprocess.Popen, timeout: float = 60) -> str:
    """The URL the server prints once it listens (no trailing slash); fails with its stderr if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            line = process.stdout.readline()
            if line.startswith("trd serve: http://"):
                return line.split()[2].rstrip("/")
        if process.poll() is not None:
            raise AssertionError(f"trd serve exited with {process.returncode}: {process.stderr.read()}")
    process.kill()
    raise AssertionError(f"trd serve did not print its URL within {timeout} s")



@pytest.fixture(scope="session")
def test_pairs(synth_root: Path) -> list[tuple[Path, Path]]:
    return [(s.rgb, s.xyz) for s in list_samples("mvtec3d", synth_root, "puck", "test")]


@pytest.fixture(scope="session")
def start_server(exported: tuple[Path, Path], test_pairs: list[tuple[Path, Path]],
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Server]]:
    """``start_server(*args, token=None, prelude="", env=None, model=None)``: a ready server, stopped at the
    end; each with a new result store of its own unless ``args`` name one (``--store``)."""
    started: list[Server] = []

    def start(*args: str, token: str | None = None, prelude: str = "", env: dict[str, str] | None = None,
              model: Path | None = None) -> Server:
        if "--store" not in args:
            args = (*args, "--store", str(tmp_path_factory.mktemp("store") / "results.db"))
        process = launch(exported[1], "--port", "0", *args, prelude=prelude, env=env, model=model)
        server = Server(process, wait_ready(process), exported[1], test_pairs, token)
        started.append(server)
        return server

    yield start
    for server in started:  # all at once, then wait for each
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def trd_serve(exported: tuple[Path, Path]) -> Callable[..., subprocess.Popen]:
    """`launch` for the tiny model: ``trd_serve(*args, prelude=, env=, model=)`` (not waited for)."""
    return lambda *args, **kwargs: launch(exported[1], *args, **kwargs)


@pytest.fixture(scope="session")
def served(start_server: Callable[..., Server], tmp_path_factory: pytest.TempPathFactory) -> Server:
    """The shared server: the tiny ONNX model, no token, a 1 MiB upload limit, new model files
    (POST /v1/threshold) written to a folder of its own (``models_dir``)."""
    folder = tmp_path_factory.mktemp("served-models")
    server = start_server("--max-upload-mb", "1", "--models-dir", str(folder))
    server.models_dir = folder
    return server
