"""Service errors and the handlers that turn every failure into {"error": "..."} with the right status."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from ..errors import EdgerunError, InvalidInputError

log = logging.getLogger(__name__)


class PayloadTooLargeError(InvalidInputError):
    """A request body over the configured limit."""

    http_status = 413


class UnauthorizedError(EdgerunError):
    """A missing or wrong API key."""

    http_status = 401


class ModelNotReadyError(EdgerunError):
    """The model is known but still loading, or being unloaded."""

    http_status = 503


class RequestTimeoutError(EdgerunError):
    """Queueing plus inference took longer than the per-request timeout."""

    http_status = 504


HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg")))
    return "invalid request: " + "; ".join(parts)


def edgerun_error_answer(exc: EdgerunError, method: str, path: str) -> tuple[int, str, dict[str, str] | None]:
    """(status, message, headers) of an edgerun error's answer; a 5xx is logged with its traceback."""
    status = exc.http_status
    if status >= 500:
        log.error("%s %s failed: %s", method, path, exc, exc_info=exc)
    return status, str(exc), {"WWW-Authenticate": "Bearer"} if status == 401 else None


def unexpected_answer(exc: BaseException, method: str, path: str) -> tuple[int, str]:
    """(500, message) for a fault no handler expects; logged with its traceback."""
    log.error("%s %s: unexpected %s", method, path, type(exc).__name__, exc_info=exc)
    return 500, f"internal server error ({type(exc).__name__}); see the server log"


async def _edgerun_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EdgerunError)
    return error_response(*edgerun_error_answer(exc, request.method, request.url.path))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(400, _validation_message(exc))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    headers: Any = getattr(exc, "headers", None)
    if exc.status_code == 405:  # Starlette names only the first matching route's methods
        allowed = ", ".join(allowed_methods(request))
        return error_response(405, f"method {request.method} not allowed here; allowed: {allowed}",
                              {**(headers or {}), "Allow": allowed})
    return error_response(exc.status_code, str(exc.detail), headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app accepts at the request's path."""
    routes = request.app.router.routes
    found = [method for method in HTTP_METHODS
             if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)]
    return found or ["GET", "HEAD"]  # no route: a mounted static folder's 405


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    return error_response(*unexpected_answer(exc, request.method, request.url.path))


async def handled_error(request: Request, exc: Exception) -> JSONResponse | None:
    """The response the installed handlers give ``exc`` when it is an expected error (an edgerun
    error or an HTTP exception), else None (it should propagate to the server-error handler)."""
    if isinstance(exc, EdgerunError):
        return await _edgerun_error(request, exc)
    if isinstance(exc, HTTPException):
        return await _http_error(request, exc)
    return None


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as {"error": message}; only real server faults are 5xx."""
    app.add_exception_handler(EdgerunError, _edgerun_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
