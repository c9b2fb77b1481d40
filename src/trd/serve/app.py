"""The HTTP API of `trd serve` (FastAPI): score, model, recent results, health, metrics, the page.

Every error answers JSON ``{"error": "<one line>", "status": N}``: 401 without the token, 404, 413
over the upload limit, 422 for a bad input (the CLI's message), 503 when the queue is full or the
service is draining (with Retry-After), 500 only for a fault of the service itself (its traceback is
logged, never sent). The token (when set) is checked on every request but health checks and the
page, which holds no data.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles

from .. import __version__
from ..data.inputs import AspectOnce
from ..data.readers import READERS
from ..data.samples import RGB_SUFFIXES
from ..runtime.records import build_record, model_record
from ..workflows.engine import LoadedModel
from .batcher import Batcher
from .metrics import CONTENT_TYPE, Metrics
from .results import Recent, Result, sample_maps, utc_now, with_images
from .uploads import UploadError, read_pair, receive

STATIC = Path(__file__).with_name("static")
#: Paths answered without the token: health checks and the page (no data in it).
OPEN_PATHS = ("/healthz", "/readyz", "/")
#: Endpoint labels of the metrics (anything else counts as "other", so labels stay few).
ENDPOINTS = ("/v1/score", "/v1/model", "/v1/recent", "/healthz", "/readyz", "/metrics", "/")
log = logging.getLogger("trd.serve")
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Service:
    """Everything the endpoints share: the model, the engine worker, limits and counters."""

    def __init__(self, model: LoadedModel, *, max_batch: int = 8, max_wait_s: float = 0.005, queue: int = 32,
                 max_upload_bytes: int = 64 << 20, token: str | None = None, recent: int = 20) -> None:
        self.model, self.max_upload_bytes, self.token = model, max_upload_bytes, token
        self.draining = False
        self.in_flight = 0  # score requests admitted and not yet answered (touched by the event loop only)
        self.metrics = Metrics(lambda: self.batcher.depth, lambda: self.in_flight)
        self.batcher = Batcher(model.engine, max_batch, max_wait_s, queue, self.metrics.batch)
        self.recent = Recent(recent)
        self.about = model_record(model.sha256, model.name, model.provider, model.precision)
        self.aspect = AspectOnce(model.reference)


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
    if path.startswith("/static/"):
        return "/static"
    return path if path in ENDPOINTS else "other"


class Gate:
    """ASGI middleware around the app: the token check and the request metrics."""

    def __init__(self, app: Any, service: Service) -> None:
        self.app, self.service = app, service

    def _allowed(self, scope: dict[str, Any]) -> bool:
        token = self.service.token
        if token is None or scope["path"] in OPEN_PATHS or scope["path"].startswith("/static/"):
            return True
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"")
        return given[:7].lower() == b"bearer " and hmac.compare_digest(given[7:].strip(), token.encode())

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
            if self._allowed(scope):
                await self.app(scope, receive, counted)
            else:
                answer = error_response(401, "missing or wrong token: send the header 'Authorization: Bearer <token>'",
                                        {"WWW-Authenticate": "Bearer"})
                await answer(scope, receive, counted)
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
        return model_info(service)

    @app.get("/v1/recent")
    async def recent() -> dict[str, Any]:
        return {"results": service.recent.summary()}

    @app.get("/v1/recent/{result_id}")
    async def recent_one(result_id: str) -> JSONResponse:
        result = service.recent.get(result_id)
        if result is None:
            raise ApiError(404, f"no recent result {result_id!r} (only the last {service.recent.capacity} are kept)")
        return JSONResponse(await run_in_threadpool(with_images, result, service.model.thresholds.pixel))

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

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return Gate(app, service)


def model_info(service: Service) -> dict[str, Any]:
    """``GET /v1/model``: what the loaded model is and promises."""
    m = service.model
    data = m.config.data
    kinds = [r for r in READERS.values() if data.format in r.formats]
    input_3d = {"modality": data.modality_3d, "format": data.format,
                "files": sorted({s for r in kinds for s in r.suffixes}),
                "kinds": [r.description for r in kinds], "camera": any(r.camera for r in kinds)}
    return {"schema": "trd.model/1", "sha256": m.sha256, "engine": m.name, "provider": m.provider,
            "precision": m.precision, "branches": list(m.branches),
            "image_size": data.image_size, "input_rgb": {"files": list(RGB_SUFFIXES)}, "input_3d": input_3d,
            "trd_version": __version__, "thresholds": m.thresholds.to_dict(), "validation_scores": m.validation_scores}


async def _score(service: Service, request: Request, heatmaps: bool) -> dict[str, Any]:
    """Admit, receive, read, queue for the engine, answer (the flow of ``POST /v1/score``)."""
    start = time.perf_counter()
    if service.draining:
        raise ApiError(503, "draining: the service is shutting down; send the request again (another replica)",
                       {"Retry-After": "1"})
    if not service.batcher.admit():
        raise ApiError(503, f"queue full ({service.batcher.capacity} requests waiting); send the request again later",
                       {"Retry-After": "1"})
    service.in_flight += 1
    submitted = False
    try:
        with tempfile.TemporaryDirectory(prefix="trd-serve-") as tmp:  # mode 0700: private to the service
            folder = Path(tmp)
            try:
                files = await receive(request, folder, service.max_upload_bytes)
                batch = await run_in_threadpool(read_pair, files, folder, service.model.config.data,
                                                service.model.reference, service.aspect)
            except UploadError as exc:
                raise ApiError(exc.status, str(exc)) from None
        future = service.batcher.submit(batch.rgb, batch.x3d)
        submitted = True
        scored = await asyncio.wrap_future(future)
        timings = {"read": batch.read_ms[0], "queue": scored.queue_ms, "score": scored.score_ms,
                   "total": (time.perf_counter() - start) * 1e3}
        record = build_record(scored.outputs, scored.row, name=files["rgb"].stem, rgb=files["rgb"].name,
                              xyz=files["xyz"].name, thresholds=service.model.thresholds, model=service.about,
                              timings_ms=timings)
        record["id"] = service.recent.new_id()
        result = Result(record, batch.display[0], batch.display_3d[0], sample_maps(scored.outputs, scored.row),
                        utc_now())
        service.recent.add(result)
        if heatmaps:
            return await run_in_threadpool(with_images, result, service.model.thresholds.pixel)
        return record
    finally:
        if not submitted:
            service.batcher.leave()
        service.in_flight -= 1
