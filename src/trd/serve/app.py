"""The HTTP API of `trd serve` (FastAPI): score, model, recent results, monitor, health, metrics, the page.

Every error answers JSON ``{"error": "<one line>", "status": N}``: 401 without the token, 404, 408
an upload not in by its deadline, 413 over the upload limit or the pixel budget, 421 a Host header
the service does not answer to, 422 for a bad input (the CLI's message), 503 when the queue is full,
the pixels are spent or the service is draining (with Retry-After), 507 when a new model file cannot
be written, 500 only for a fault of the service itself (its traceback is logged, never sent). The
Host header is checked on every request (`trd.serve.admission`); the token (when set) on every
request but health checks and the page, which holds no data.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles

from .. import __version__
from ..config import without_machine_paths
from ..data.inputs import AspectOnce, camera_stored
from ..data.io import pixels
from ..data.readers import READERS
from ..data.samples import RGB_SUFFIXES, Sample
from ..errors import ConfigError, OutputError
from ..runtime.findings import find
from ..runtime.heatmap import result_images, sample_maps
from ..runtime.monitor import Monitor, MonitorSettings
from ..runtime.records import Baseline, build_record, model_record
from ..scoring.threshold import bound_90
from ..store import Store
from ..workflows.engine import LoadedModel
from ..workflows.stored import store_result
from ..workflows.threshold import write_threshold
from .admission import PixelBudget, host_allowed
from .batcher import Batcher
from .metrics import CONTENT_TYPE, Metrics
from .results import with_images
from .review import add_review_routes
from .uploads import Deadline, UploadError, UploadRoot, declared_pixels, pair, read_pair, receive

STATIC = Path(__file__).with_name("static")
#: Paths answered without the token: health checks and the page (no data in it).
OPEN_PATHS = ("/healthz", "/readyz", "/")
#: Endpoint labels of the metrics (anything else counts as "other", so labels stay few).
ENDPOINTS = ("/v1/score", "/v1/model", "/v1/threshold", "/v1/recent", "/v1/results", "/v1/monitor", "/healthz",
             "/readyz", "/metrics", "/")
#: How long a request whose pixels do not fit waits for the budget before it gets 503.
BUDGET_WAIT_S = 30.0
log = logging.getLogger("trd.serve")
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Service:
    """Everything the endpoints share: the model, the engine worker, the result store, limits, counters
    and the drift monitor (fed every scored record; touched by the event loop only, like ``in_flight``)."""

    def __init__(self, model: LoadedModel, store: Store, *, max_batch: int = 8, max_wait_s: float = 0.005,
                 queue: int = 32, max_upload_bytes: int = 64 << 20, token: str | None = None, recent: int = 20,
                 pixel_budget: int = 32_000_000, upload_timeout_s: float = 60.0,
                 hosts: frozenset[str] | None = None, models_dir: Path | None = None,
                 monitor: MonitorSettings | None = None) -> None:
        self.model, self.max_upload_bytes, self.token, self.hosts = model, max_upload_bytes, token, hosts
        self.upload_timeout_s = upload_timeout_s
        self.models_dir = models_dir  # where POST /v1/threshold writes (None: beside the model)
        self.draining = False
        self.stop_uploads = asyncio.Event()  # set when the grace time after a signal is over
        # Touched by the event loop only: score requests accepted and not yet answered; uploads coming in.
        self.in_flight = self.uploading = 0
        self.budget = PixelBudget(pixel_budget)
        self.baseline = Baseline.of(model.validation_scores, model.reference)
        self.monitor = Monitor(monitor)
        self.metrics = Metrics({
            "trd_queue_depth": ("Score requests admitted and waiting for the engine.", lambda: self.batcher.depth),
            "trd_requests_in_flight": ("Score requests accepted and not yet answered.", lambda: self.in_flight),
            "trd_uploads_in_progress": ("Score requests whose upload is coming in.", lambda: self.uploading),
            "trd_decode_pixels": ("Pixels of the pairs being decoded now (at most the budget).",
                                  lambda: self.budget.used),
            "trd_pixel_budget": ("Pixels the service decodes at once at most (--pixel-budget).",
                                 lambda: self.budget.total)}, self.monitor)
        self.batcher = Batcher(model.engine, max_batch, max_wait_s, queue, self.metrics.batch)
        self.store, self.recent = store, recent
        self.about = model_record(model.sha256, model.name, model.provider, model.precision)
        self.aspect = AspectOnce(model.reference)
        self.uploads = UploadRoot()  # last: nothing after it can fail and leave it behind

    def deadline(self) -> Deadline:
        """The read deadline of an upload that starts now."""
        return Deadline(asyncio.get_running_loop().time() + self.upload_timeout_s, self.upload_timeout_s,
                        self.stop_uploads)


class ApiError(Exception):
    """An answer other than 200: HTTP ``status``, a one-line message, optional headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def endpoint_label(path: str) -> str:
    if path.startswith("/v1/recent/"):
        return "/v1/recent/{id}"
    if path.startswith("/v1/results/"):
        return "/v1/results/{id}/labels" if "/labels" in path else "/v1/results/{id}"
    if path.startswith("/static/"):
        return "/static"
    return path if path in ENDPOINTS else "other"


class Gate:
    """ASGI middleware around the app: the Host and token checks and the request metrics."""

    def __init__(self, app: Any, service: Service) -> None:
        self.app, self.service = app, service

    def _refusal(self, scope: dict[str, Any]) -> JSONResponse | None:
        """The answer to a request that may not pass (None: it may)."""
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        if not host_allowed(host, self.service.hosts):
            return error_response(421, f"Host {host!r} is not a name this service answers to (a guard against DNS "
                                       "rebinding); if it names this service, start it with --allowed-host NAME")
        token = self.service.token
        if token is None or scope["path"] in OPEN_PATHS or scope["path"].startswith("/static/"):
            return None
        given = headers.get(b"authorization", b"")
        if given[:7].lower() == b"bearer " and hmac.compare_digest(given[7:].strip(), token.encode()):
            return None
        return error_response(401, "missing or wrong token: send the header 'Authorization: Bearer <token>'",
                              {"WWW-Authenticate": "Bearer"})

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]

        async def counted(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is None:
                await self.app(scope, receive, counted)
            else:
                await refusal(scope, receive, counted)
        finally:
            self.service.metrics.request(endpoint_label(scope["path"]), status[0], time.perf_counter() - start)


def create_app(service: Service) -> Gate:
    """The service's ASGI application."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.batcher.start()
        try:
            yield
        finally:
            await run_in_threadpool(service.batcher.close)
            service.store.close()
            service.uploads.close()

    app = FastAPI(title="trd serve", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, str(exc), exc.headers)

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail).lower(), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:])
        return error_response(422, f"{where or 'request'}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def _fault(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error answering %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal error of the service (logged on the server)")

    @app.post("/v1/score")
    async def score(request: Request, heatmaps: bool = False) -> JSONResponse:
        return JSONResponse(await _score(service, request, heatmaps))

    @app.get("/v1/model")
    async def model() -> dict[str, Any]:
        return without_machine_paths(model_info(service))

    @app.post("/v1/threshold")
    async def threshold(choice: ThresholdChoice) -> dict[str, Any]:
        try:
            path, thresholds = await run_in_threadpool(write_threshold, service.model, choice.image,
                                                       service.models_dir)
        except ConfigError as exc:
            raise ApiError(422, str(exc)) from None
        except OutputError as exc:
            raise ApiError(507, str(exc)) from None
        log.info("wrote %s (image threshold %s set on the page)", path, choice.image)
        return {"file": path.name, "folder": str(path.parent), "thresholds": without_machine_paths(thresholds.to_dict()),
                "served": service.model.files[0].name}

    @app.get("/v1/monitor")
    async def monitor() -> dict[str, Any]:
        return monitor_info(service.monitor)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if service.draining:
            return error_response(503, "draining: the service is shutting down", {"Retry-After": "1"})
        return JSONResponse({"status": "ready"})

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(service.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/")
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    add_review_routes(app, service, ApiError)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return Gate(app, service)


class ThresholdChoice(BaseModel):
    """``POST /v1/threshold``: the image threshold to write a new model file with."""

    image: float


def model_info(service: Service) -> dict[str, Any]:
    """``GET /v1/model``: what the loaded model is and promises; with the validation scores, the
    90 % bound of every rank k = 1..n (for the page's explorer: `trd.scoring.threshold.bound_90`)."""
    m = service.model
    data = m.config.data
    kinds = [r for r in READERS.values() if data.format in r.formats]
    # camera.json: "none" (no kind of 3D file this model reads needs one), "optional" (the model keeps
    # the camera it was trained with; a scan's own camera.json still wins), "required" (older models).
    camera = "none" if not any(r.camera for r in kinds) else "optional" if camera_stored(m.reference) else "required"
    scores = m.validation_scores
    n = len(scores or [])
    input_3d = {"modality": data.modality_3d, "format": data.format,
                "files": sorted({s for r in kinds for s in r.suffixes}),
                "kinds": [r.description for r in kinds], "camera": camera}
    return {"schema": "trd.model/1", "sha256": m.sha256, "engine": m.name, "provider": m.provider,
            "precision": m.precision, "branches": list(m.branches),
            "image_size": data.image_size, "input_rgb": {"files": list(RGB_SUFFIXES)}, "input_3d": input_3d,
            "trd_version": __version__, "thresholds": m.thresholds.to_dict(), "validation_scores": scores,
            "fpr_bound_90_by_rank": None if not scores else [float(b) for b in bound_90(np.arange(1, n + 1), n)]}


def monitor_info(monitor: Monitor) -> dict[str, Any]:
    """``GET /v1/monitor``: the drift and input-health checks on this replica's current window."""
    s = monitor.settings
    return {"schema": "trd.monitor/1", "window": s.window, "alpha": s.alpha, **monitor.status.to_dict(),
            "raised": dict(monitor.raised)}


async def _score(service: Service, request: Request, heatmaps: bool) -> dict[str, Any]:
    """Receive, charge the pixels, admit, read, queue for the engine, answer (``POST /v1/score``).

    While its upload comes in (bounded by its deadline) and while it waits for pixels, a request
    holds no queue place: slow clients and large pairs cannot lock small requests out. Its pixels
    are charged from its files' headers before anything is decoded and given back once it is read.
    """
    start = time.perf_counter()
    if service.draining:
        raise ApiError(503, "draining: the service is shutting down; send the request again (another replica)",
                       {"Retry-After": "1"})
    service.in_flight += 1
    admitted = submitted = False
    try:
        # The uploads stay until the result is stored: the store keeps a copy of the scan.
        with service.uploads.request_folder() as tmp:  # mode 0700: private to the service
            folder = Path(tmp)
            try:
                service.uploading += 1
                try:
                    files = await receive(request, folder, service.max_upload_bytes, service.deadline())
                finally:
                    service.uploading -= 1
                sample, cost = await _charge(service, files, folder)
                try:
                    if not service.batcher.admit():
                        raise ApiError(503, f"queue full ({service.batcher.capacity} requests waiting); send the "
                                            "request again later", {"Retry-After": "1"})
                    admitted = True
                    batch, key = await run_in_threadpool(read_pair, sample, folder, service.model.config.data,
                                                         service.model.reference, service.aspect)
                finally:
                    await service.budget.give(cost)
            except UploadError as exc:
                raise ApiError(exc.status, str(exc), exc.headers) from None
            future = service.batcher.submit(batch.rgb, batch.x3d)
            submitted = True
            scored = await asyncio.wrap_future(future)
            measured = time.perf_counter()
            model = service.model
            score = float(scored.outputs["score"][scored.row])
            found = await run_in_threadpool(find, scored.outputs["anomaly_map"][scored.row, 0], score,
                                            batch.images[0].shape[:2], batch.clouds[0], model.config, model.thresholds)
            timings = {"read": batch.read_ms[0], "queue": scored.queue_ms, "score": scored.score_ms,
                       "regions": (time.perf_counter() - measured) * 1e3, "total": (time.perf_counter() - start) * 1e3}
            record = build_record(scored.outputs, scored.row, name=files["rgb"].stem, key=key, rgb=files["rgb"].name,
                                  xyz=files["xyz"].name, thresholds=model.thresholds, findings=found,
                                  model=service.about, timings_ms=timings, baseline=service.baseline,
                                  health=batch.health[0])
            try:  # committed before the answer: an acknowledged record is in the store
                images = await run_in_threadpool(result_images, batch.display[0], batch.display_3d[0],
                                                 sample_maps(scored.outputs, scored.row), model.thresholds.pixel, score)
                stored, images = await run_in_threadpool(store_result, service.store, record, sample, images, "serve")
            except OutputError as exc:
                log.error("cannot store a result: %s", exc)
                raise ApiError(503, "the result store cannot be written (logged on the server): the result is not "
                                    "given; send the request again later", {"Retry-After": "5"}) from None
        answer = stored.answer()
        service.monitor.add(answer)
        if heatmaps:
            return with_images(answer, images, model.thresholds.pixel, model.branches)
        return answer
    finally:
        if admitted and not submitted:
            service.batcher.leave()
        service.in_flight -= 1


async def _charge(service: Service, files: dict[str, Path], folder: Path) -> tuple[Sample, int]:
    """The uploaded pair and the pixels its files declare, once those are reserved in the budget
    (waiting up to `BUDGET_WAIT_S` for them to fit); 413 for a pair larger than the whole budget."""
    cfg = service.model.config.data
    sample = await run_in_threadpool(pair, files, folder, cfg)
    cost = await run_in_threadpool(declared_pixels, sample, folder, cfg.max_image_pixels)
    if cost > service.budget.total:
        raise UploadError(413, f"{files['rgb'].name}: a pair of {pixels(cost)} is more than the service decodes at "
                               f"once ({pixels(service.budget.total)}, --pixel-budget); send smaller scans or raise "
                               "--pixel-budget")
    if not await service.budget.take(cost, BUDGET_WAIT_S):
        raise UploadError(503, f"busy decoding other pairs ({pixels(service.budget.used)} of the "
                               f"{pixels(service.budget.total)} pixel budget in use); send the request again later",
                          {"Retry-After": "5"})
    return sample, cost
