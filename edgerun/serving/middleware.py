"""ASGI middleware: API key check, body size limit, in-flight gauge, request metrics, JSON access log."""

from __future__ import annotations

import hmac
import json
import logging
import time
from datetime import datetime, timezone
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import PayloadTooLargeError, error_response
from .service import Service

access_log = logging.getLogger("edgerun.serving.access")

OPEN_PATHS = frozenset({"/v2/health/live", "/"})  # liveness and the web page (it asks for the key)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


class ServiceMiddleware:
    """Wraps every HTTP request: rejects early (401, 413), counts, times and logs it."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service
        key = service.config.api_key
        self._key = key.encode() if key else None
        self._limit = service.config.max_body_bytes

    def _authorized(self, scope: Scope) -> bool:
        if self._key is None or scope["path"] in OPEN_PATHS:
            return True
        bearer = _header(scope, b"authorization") or ""
        scheme, _, token = bearer.partition(" ")
        offered = token.strip() if scheme.lower() == "bearer" else (_header(scope, b"x-api-key") or "")
        return hmac.compare_digest(offered.encode(), self._key)

    def _rejection(self, scope: Scope) -> Any:
        if not self._authorized(scope):
            return error_response(401, "missing or wrong API key: send 'Authorization: Bearer <key>' "
                                       "or 'X-API-Key: <key>'", {"WWW-Authenticate": "Bearer"})
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self._limit:
            return error_response(413, f"request body of {length} bytes exceeds the {self._limit}-byte limit")
        return None

    def _limited(self, receive: Receive) -> Receive:
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self._limit:
                raise PayloadTooLargeError(f"request body exceeds the {self._limit}-byte limit")
            return message

        return limited_receive

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        sent = {"status": 500, "bytes": 0}

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
            elif message["type"] == "http.response.body":
                sent["bytes"] += len(message.get("body", b""))
            await send(message)

        rejection = self._rejection(scope)
        self.service.metrics.inflight.inc()
        try:
            if rejection is not None:
                await rejection(scope, receive, recording_send)
            else:
                await self.app(scope, self._limited(receive), recording_send)
        finally:
            self.service.metrics.inflight.dec()
            self._record(scope, sent["status"], sent["bytes"], time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, bytes_out: int, seconds: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", "unmatched")
        model = self.service.metrics_label(str(scope.get("path_params", {}).get("model_name", "")))
        metrics = self.service.metrics
        metrics.requests.labels(template, model, str(status)).inc()
        metrics.request_seconds.labels(template, model).observe(seconds)
        if self.service.config.access_log and access_log.isEnabledFor(logging.INFO):
            access_log.info(json.dumps(self._access_record(scope, status, bytes_out, seconds, model)))

    @staticmethod
    def _access_record(scope: Scope, status: int, bytes_out: int, seconds: float,
                       model: str) -> dict[str, Any]:
        client = scope.get("client") or ("", 0)
        length = _header(scope, b"content-length") or ""
        return {
            "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "client": f"{client[0]}:{client[1]}", "method": scope["method"], "path": scope["path"],
            "status": status, "ms": round(seconds * 1000, 3), "model": model or None,
            "bytes_in": int(length) if length.isdigit() else None,
            "bytes_out": bytes_out,
            "request_id": _header(scope, b"x-request-id"), "agent": _header(scope, b"user-agent"),
        }
