"""ASGI middleware: API key check, browser-borne request refusal, body size limit, in-flight gauge,
request metrics, JSON access log."""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import PayloadTooLargeError, error_response
from .service import Service

access_log = logging.getLogger("edgerun.serving.access")

# Open with an API key set: health for orchestrators (as Triton's), the web page and the API docs (they
# ask for the key themselves). /metrics joins them unless auth.metrics_require_key.
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/", "/docs", "/docs/oauth2-redirect",
                        "/redoc", "/openapi.json"})
OPEN_PATTERN = re.compile(r"/v2/models/[^/]+(/versions/[^/]+)?/ready|/docs/static/[\w.-]+")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Routes that change what the service does (load, unload, start or stop a stream).
STATE_CHANGING = re.compile(r"/v2/repository/models/[^/]+/(load|unload)|/v1/streams(/[^/]+)?")
# Bodies an HTML form or a fetch without a CORS preflight can send; no API client needs them here.
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")


def _raw_header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def _header(scope: Scope, name: bytes) -> str | None:
    value = _raw_header(scope, name)
    return None if value is None else value.decode("latin-1")


def _offered_key(scope: Scope) -> bytes:
    """The key a request offers, as raw bytes (a UTF-8 key compares byte for byte)."""
    scheme, _, token = (_raw_header(scope, b"authorization") or b"").partition(b" ")
    if scheme.lower() == b"bearer":
        return token.strip()
    return _raw_header(scope, b"x-api-key") or b""


def document_refusals(schema: dict[str, Any]) -> None:
    """Add this middleware's own answers to an OpenAPI schema: 403 (foreign Origin) on every
    unsafe method, 415 (form content type) on the state-changing routes, 413 where a body is taken."""
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if method.upper() not in UNSAFE_METHODS:
                continue
            responses = operation.setdefault("responses", {})
            responses.setdefault("403", {**error, "description": "cross-origin request refused"})
            responses.setdefault("413", {**error, "description": "body over the limit"})
            if STATE_CHANGING.fullmatch(path.replace("{", "").replace("}", "")):
                responses.setdefault("415", {**error, "description": "form content type, without an API key"})


class ServiceMiddleware:
    """Wraps every HTTP request: rejects early (401, 413), counts, times and logs it."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service
        config = service.config
        self._key = config.auth.api_key.encode("utf-8") if config.auth.api_key else None
        self._open = OPEN_PATHS if config.auth.metrics_require_key else OPEN_PATHS | {"/metrics"}
        self._origins = frozenset(o.rstrip("/").lower() for o in config.auth.allowed_origins)
        self._limit = config.max_body_bytes

    def _authorized(self, scope: Scope) -> bool:
        path = scope["path"]
        if self._key is None or path in self._open or OPEN_PATTERN.fullmatch(path):
            return True
        offered = _offered_key(scope)
        # Browsers send only Latin-1 header values: the web page percent-encodes a key with other characters.
        decoded = unquote_to_bytes(offered) if b"%" in offered else offered
        return hmac.compare_digest(offered, self._key) or hmac.compare_digest(decoded, self._key)

    def _foreign_origin(self, scope: Scope) -> str | None:
        """The Origin of a state-changing request from another site's page, else None."""
        origin = _header(scope, b"origin")
        if origin is None or scope["method"] not in UNSAFE_METHODS:
            return None
        origin = origin.strip().rstrip("/").lower()
        own = (_header(scope, b"host") or "").strip().lower()
        if origin in self._origins or (own and origin.partition("://")[2] == own):
            return None
        return origin

    def _form_post(self, scope: Scope) -> str | None:
        """Without an API key: the content type of a state-changing request a cross-site form could send."""
        if self._key is not None or scope["method"] not in UNSAFE_METHODS \
                or not STATE_CHANGING.fullmatch(scope["path"]):
            return None
        content_type = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
        return content_type if content_type in FORM_TYPES else None

    def rejection(self, scope: Scope) -> Any:
        """The error response ``scope`` gets before its body is read (401, 403, 415, 413), else None."""
        if not self._authorized(scope):
            return error_response(401, "missing or wrong API key: send 'Authorization: Bearer <key>' "
                                       "or 'X-API-Key: <key>'", {"WWW-Authenticate": "Bearer"})
        origin = self._foreign_origin(scope)
        if origin is not None:
            return error_response(403, f"cross-origin request from {origin} refused; allow it with "
                                       "auth.allowed_origins")
        form = self._form_post(scope)
        if form is not None:
            return error_response(415, f"{form} is not accepted here: send application/json "
                                       "(or set an API key)")
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

        rejection = self.rejection(scope)
        self.service.metrics.inflight.inc()
        try:
            if rejection is not None:
                await rejection(scope, receive, recording_send)
            else:
                await self.app(scope, self._limited(receive), recording_send)
        finally:
            self.service.metrics.inflight.dec()
            route = getattr(scope.get("route"), "path", "unmatched")
            model = str(scope.get("path_params", {}).get("model_name", ""))
            self.record(scope, route, model, sent["status"], sent["bytes"], time.perf_counter() - started)

    def record(self, scope: Scope, template: str, model_name: str, status: int, bytes_out: int,
               seconds: float) -> None:
        """Count and time one answered request under its route ``template``; log it when asked."""
        model = self.service.metrics_label(model_name)
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
