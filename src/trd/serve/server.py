"""Running the service: checks, the model, the listening socket, uvicorn, and a clean SIGTERM.

Loopback only by default; any other address needs a token (a service on a network without one
would score, and show the recent results of, anyone), and only Host headers that name the service
are answered (`trd.serve.admission`). On SIGTERM (or Ctrl+C) the service stops accepting
connections, answers 503 to new requests on open connections, scores what is in flight at once (no
more waiting for batches to fill), answers every such request, and exits 0. Uploads still coming
in get until the grace time (``grace_s`` after the signal) to finish, then 503; whatever is still
unanswered `BACKSTOP_S` later is dropped and the process exits. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import uvicorn

from ..errors import ConfigError
from ..runtime.monitor import MonitorSettings
from ..store import DEFAULT_RETENTION, parse_retention
from ..workflows.engine import OrtChoice, load_model
from ..workflows.stored import open_model_store
from .admission import allowed_names
from .app import Service, create_app

Log = Callable[[str], None]
TOKEN_ENV = "TRD_TOKEN"
#: Seconds after the grace time at which requests still unanswered are dropped and the process exits.
BACKSTOP_S = 10.0


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, token: str | None) -> str | None:
    """The token to require (``token``, else ``$TRD_TOKEN``); ConfigError when a non-loopback
    ``host`` has none."""
    token = token or os.environ.get(TOKEN_ENV) or None
    if token is None and not is_loopback(host):
        raise ConfigError(f"--host {host} is reachable from other machines: give a token (--token or the "
                          f"{TOKEN_ENV} environment variable), or keep the default --host 127.0.0.1")
    return token


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: a free one); ConfigError when it cannot be."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, printing the URL once it listens and draining on SIGTERM without re-raising it."""

    def __init__(self, config: uvicorn.Config, service: Service, ready: str, grace_s: float, log: Log) -> None:
        super().__init__(config)
        self.service, self.ready, self.grace_s, self.log = service, ready, grace_s, log
        self.loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.loop = asyncio.get_running_loop()
        if self.started:
            print(self.ready, flush=True)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            self.force_exit = True  # a second signal: stop now
            return
        self.should_exit = True
        self.service.draining = True
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._drain, signal.Signals(sig).name)

    def _drain(self, name: str) -> None:
        self.log(f"trd serve: {name} received; answering the {self.service.in_flight} request(s) in flight, "
                 f"then exiting (uploads still coming in get {self.grace_s:g} s, --grace-s)")
        self.service.batcher.flush()
        asyncio.get_running_loop().call_later(self.grace_s, self.service.stop_uploads.set)


def check_store(store: str | None) -> None:
    """ConfigError for ``--store none``: the service always keeps its results."""
    if store is not None and store.lower() == "none":
        raise ConfigError("--store none: trd serve keeps every result in a store (the page's list and labels come "
                          "from it); give a file or a URL, or leave the default")


def serve(model: Path, *, host: str = "127.0.0.1", port: int = 8000, token: str | None = None, max_batch: int = 8,
          max_wait_ms: float = 5.0, queue: int = 32, max_upload_mb: float = 64.0, max_pixels: int | None = None,
          pixel_budget: int = 32_000_000, upload_timeout_s: float = 60.0, grace_s: float = 20.0,
          allowed_hosts: tuple[str, ...] = (), recent: int = 20, models_dir: Path | None = None,
          threads: int | None = None, engine: str = "auto", ep: str = "auto", precision: str = "fp32",
          store: str | None = None, store_files: str | None = None,
          retain: str = DEFAULT_RETENTION, monitor: MonitorSettings | None = None,
          log: Log = print) -> None:
    """Serve ``model`` (an ONNX export, or a model.pt where torch is installed) until SIGTERM.

    Prints ``trd serve: http://HOST:PORT/ ...`` on stdout once it accepts requests. ``max_pixels``
    caps the pixels of an uploaded image or cloud (default: the model's ``data.max_image_pixels``);
    ``pixel_budget`` the pixels of the pairs decoded at once; ``upload_timeout_s`` the time an
    upload may take; ``grace_s`` the time uploads in flight get after SIGTERM; ``allowed_hosts`` the
    names besides localhost and IP literals that Host headers may give (`trd.serve.admission`);
    ``models_dir``: where ``POST /v1/threshold`` writes new model files (default: beside ``model``).
    Every result goes into the result store ``store`` (a SQLite file or a database URL; default
    ``results.db`` beside the model, or under the user data folder where the model's folder cannot
    be written; `trd.store`) before it is answered; ``retain`` bounds it. ``monitor``: the drift
    monitor's window and false-alarm level (`trd.runtime.monitor`). ``ep``/``precision``:
    onnxruntime's execution provider and precision (`trd.runtime.providers`).
    """
    token = resolve_token(host, token)
    retention = parse_retention(retain)
    check_store(store)
    if models_dir is not None and not Path(models_dir).is_dir():
        raise ConfigError(f"--models-dir {models_dir}: no such folder")
    model = Path(model)
    results = open_model_store(model, store, store_files, retention, log)
    sock = _listen(host, port)  # before the (slow) model load: a busy port is reported at once
    onnx = model.suffix.lower() == ".onnx"
    loaded = load_model(None if onnx else model, model if onnx else None, engine=engine, threads=threads,
                        choice=OrtChoice(ep, precision, max_batch), log=log)
    if max_pixels is not None:
        loaded.config.data.max_image_pixels = max_pixels
    service = Service(loaded, results, max_batch=max_batch, max_wait_s=max_wait_ms / 1e3, queue=queue,
                      max_upload_bytes=int(max_upload_mb * 2**20), token=token, recent=recent,
                      pixel_budget=pixel_budget, upload_timeout_s=upload_timeout_s,
                      hosts=allowed_names(host, allowed_hosts, token),
                      models_dir=None if models_dir is None else Path(models_dir), monitor=monitor)
    if service.uploads.removed:
        log(f"trd serve: removed {service.uploads.removed} upload folder(s) that killed servers left in "
            f"{service.uploads.path.parent}")
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    ready = (f"trd serve: http://{shown}:{bound}/ (model {model.name}, engine {loaded.name} on {loaded.provider}, "
             f"{loaded.precision}, max batch {max_batch}, queue {queue}, store {results.where}{', token required' if token else ''})")
    _log_to_stderr()
    config = uvicorn.Config(create_app(service), log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=grace_s + BACKSTOP_S, server_header=False)
    _Server(config, service, ready, grace_s, log).run(sockets=[sock])
    log("trd serve: stopped")


def _log_to_stderr() -> None:
    """Tracebacks of internal errors (and warnings) of the service, on stderr."""
    logger = logging.getLogger("trd.serve")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("trd serve: %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
