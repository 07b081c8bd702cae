"""Map every error to the contract's JSON shape with a stable code; never a traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from taskcast.realtime.errors import TaskcastError

logger = logging.getLogger("taskcast.api")


def error_body(code: str, message: str, **extra: object) -> dict[str, object]:
    return {"error": {"code": code, "message": message, **extra}}


def _field(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


async def _taskcast(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TaskcastError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
    return JSONResponse(error_body(exc.code, exc.message), exc.http_status, headers=headers)


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [(_field(tuple(e["loc"])), str(e["msg"])) for e in exc.errors()]
    message = "; ".join(f"{field}: {msg}" for field, msg in problems[:10])
    fields = sorted({field for field, _ in problems})
    return JSONResponse(error_body("bad_request", message, fields=fields), 422)


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:  # a body FastAPI could not parse at all (e.g. nested too deep)
        return JSONResponse(
            error_body("bad_request", "body: could not be parsed", fields=["body"]), 422
        )
    code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
        exc.status_code, "http_error"
    )
    return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
    return JSONResponse(error_body("internal", "internal error"), 500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(TaskcastError, _taskcast)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
