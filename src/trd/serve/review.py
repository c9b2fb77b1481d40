"""Stored results over HTTP: the recent list, queries, one result with its images, and review labels.

Every result ``POST /v1/score`` answered is in the result store (`trd.store`), so these endpoints
answer from it, across restarts and for every replica writing the same store. Labels are the
operator's review: ``good`` (a false alarm, when the result was flagged) or ``defect`` with a defect
type, with the name of who labels; each change and each undo is kept with who and when.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..errors import ConfigError, OutputError
from ..store import NoSuchRecord, NothingToUndo, review, set_label, undo_label
from ..workflows.stored import stored_images
from .results import with_images

if TYPE_CHECKING:
    from .app import Service

MAX_LIST = 1000


def _when(value: str | None, name: str) -> dt.datetime | None:
    """An ISO 8601 time of a query (UTC where it names no zone)."""
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r}: expected an ISO 8601 time, e.g. 2026-12-01T08:00:00Z") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ConfigError('expected a JSON object, e.g. {"label": "good", "by": "ann"}')
    return body


def add_review_routes(app: FastAPI, service: Service, api_error: type[Exception]) -> None:
    """The store's endpoints on ``app``; store errors become ``api_error(status, message)``."""
    store = service.store

    async def call(function: Any, *args: Any) -> Any:
        try:
            return await run_in_threadpool(function, *args)
        except NoSuchRecord as exc:
            raise api_error(404, str(exc)) from None
        except NothingToUndo as exc:
            raise api_error(409, str(exc)) from None
        except ConfigError as exc:
            raise api_error(422, str(exc)) from None
        except OutputError:
            raise api_error(503, "the result store cannot be used now (logged on the server)",
                            {"Retry-After": "5"}) from None

    def one(result_id: int) -> dict[str, Any]:
        stored = store.get(result_id)
        if stored is None:
            raise NoSuchRecord(f"no result {result_id} in the store")
        pixel = (stored.record.get("threshold") or {}).get("pixel", service.model.thresholds.pixel)
        answer = with_images(stored.answer(), stored_images(store, stored), pixel, service.model.branches)
        return answer | {"review": review(store, result_id).to_dict()}

    @app.get("/v1/recent")
    async def recent() -> dict[str, Any]:
        found = await call(lambda: store.query(limit=service.recent))
        return {"results": [s.summary() for s in found]}

    @app.get("/v1/results")
    async def results(since: str | None = None, until: str | None = None, decision: str | None = None,
                      label: str | None = None, model: str | None = None, limit: int = 100,
                      before: int | None = None) -> dict[str, Any]:
        if not 1 <= limit <= MAX_LIST:
            raise api_error(422, f"limit={limit}: expected 1 to {MAX_LIST}")
        try:
            window = _when(since, "since"), _when(until, "until")
        except ConfigError as exc:
            raise api_error(422, str(exc)) from None
        found = await call(lambda: store.query(since=window[0], until=window[1], decision=decision, label=label,
                                               model=model, limit=limit, before=before))
        return {"results": [s.summary() | {"model": s.model_sha256} for s in found]}

    @app.get("/v1/recent/{result_id}")
    @app.get("/v1/results/{result_id}")
    async def result(result_id: int) -> JSONResponse:
        return JSONResponse(await call(one, result_id))

    @app.get("/v1/results/{result_id}/labels")
    async def labels(result_id: int) -> dict[str, Any]:
        return (await call(review, store, result_id)).to_dict()

    @app.post("/v1/results/{result_id}/labels")
    async def label(result_id: int, request: Request) -> dict[str, Any]:
        try:
            body = await _body(request)
        except ConfigError as exc:
            raise api_error(422, str(exc)) from None
        kind = body.get("defect_type")
        given = (str(body.get("label", "")), None if kind is None else str(kind), str(body.get("by", "")))
        return (await call(lambda: set_label(store, result_id, given[0], given[2], given[1]))).to_dict()

    @app.post("/v1/results/{result_id}/labels/undo")
    async def undo(result_id: int, request: Request) -> dict[str, Any]:
        try:
            body = await _body(request)
        except ConfigError as exc:
            raise api_error(422, str(exc)) from None
        return (await call(undo_label, store, result_id, str(body.get("by", "")))).to_dict()
