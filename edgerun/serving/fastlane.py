"""The infer fast lane: V2 binary-tensor infer requests served by the HTTP protocol itself, without ASGI.

perf_analyzer, tritonclient and every camera client post the same request over and over: a short
JSON header, then raw tensor bytes. For that request (and only that one) the HTTP protocol
(connections.py) asks :meth:`InferLane.admit` once its headers are parsed; an admitted request's
body goes straight from the socket's chunks into an aligned buffer the tensors are views of, and
:meth:`InferLane.answer` runs the same decode, data plane and encode as the ASGI route, with the
same key/origin/size checks, metrics, statistics, access log and error bodies (ServiceMiddleware's
own methods). Anything else, and any request the checks would refuse, goes the ASGI way, which
then gives the refusal its usual answer. Measured in docs/benchmarks.md; ``server.infer_fast_lane:
false`` turns it off.
"""

from __future__ import annotations

import http
import json
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import EdgerunError
from . import dataplane
from .body import aligned_buffer
from .codec import decode_request, encode_response
from .dataplane import InferResult
from .errors import edgerun_error_answer, unexpected_answer
from .execution import ModelRunner
from .middleware import ServiceMiddleware
from .service import Service

INFER_ROUTE = "/v2/models/{model_name}/infer"
INFER_VERSION_ROUTE = "/v2/models/{model_name}/versions/{model_version}/infer"
# Headers whose meaning the ASGI stack implements (proxies, encodings, 100-continue, upgrades):
# a request carrying one goes that way.
ASGI_ONLY = frozenset({b"transfer-encoding", b"content-encoding", b"expect", b"upgrade",
                       b"x-forwarded-for", b"x-forwarded-proto", b"forwarded"})
STATUS_LINES = {status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode()
                for status in http.HTTPStatus}
JSON_TYPE = b"content-type: application/json\r\n"
BINARY_TYPE = b"content-type: application/octet-stream\r\n"


class _NoEvent:
    """uvicorn sets its cycle's message event when the connection drops; the lane waits on none."""

    def set(self) -> None:
        pass


@dataclass(eq=False)
class LaneRequest:
    """One admitted request. It stands where uvicorn keeps its request cycle, so uvicorn's own
    connection code (shutdown, connection loss, pipelining) reads the attributes it expects."""

    scope: dict[str, Any]          # what ServiceMiddleware's checks and access log read
    runner: ModelRunner
    route: str
    header_length: int
    body: memoryview
    keep_alive: bool
    started_ns: int = field(default_factory=time.perf_counter_ns)
    received: int = 0
    response_complete: bool = False
    disconnected: bool = False
    message_event: _NoEvent = field(default_factory=_NoEvent)

    def take(self, chunk: bytes) -> None:
        """Copy a chunk of the body in (the HTTP parser never passes more than Content-Length)."""
        end = self.received + len(chunk)
        self.body[self.received:end] = chunk
        self.received = end


def _target(path: bytes) -> tuple[str, str | None] | None:
    """(model, version) of /v2/models/{m}[/versions/{v}]/infer in plain ASCII, else None."""
    if b"%" in path or not path.isascii():
        return None
    parts = path.decode("ascii").split("/")
    if len(parts) not in (5, 7) or parts[:3] != ["", "v2", "models"] or parts[-1] != "infer" \
            or not all(parts[3:-1]):
        return None
    if len(parts) == 5:
        return parts[3], None
    return (parts[3], parts[5]) if parts[4] == "versions" else None


def _lengths(headers: list[tuple[bytes, bytes]]) -> tuple[int, int] | None:
    """(Content-Length, Inference-Header-Content-Length), each given once as digits, and no header
    the lane leaves to ASGI; else None."""
    body = header = None
    for name, value in headers:
        if name in ASGI_ONLY:
            return None
        if name == b"content-length":
            if body is not None or not value.isdigit():
                return None
            body = int(value)
        elif name == b"inference-header-content-length":
            if header is not None or not value.isdigit():
                return None
            header = int(value)
    if body is None or header is None or header > body:
        return None
    return body, header


class InferLane:
    """Admits and answers V2 binary infer requests for one service (see the module docstring)."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self._guard = ServiceMiddleware(None, service)  # type: ignore[arg-type]  # its checks and records only
        self._limit = service.config.max_body_bytes

    def admit(self, method: bytes, url: bytes, headers: list[tuple[bytes, bytes]],
              client: tuple[str, int] | None, keep_alive: bool) -> LaneRequest | None:
        """A LaneRequest when this request is a V2 binary infer request the ASGI checks would let
        through to a ready model; None sends it the ASGI way."""
        if method != b"POST":
            return None
        target = _target(url.partition(b"?")[0])
        lengths = _lengths(headers) if target is not None else None
        if target is None or lengths is None or lengths[0] > self._limit:
            return None
        path = url.partition(b"?")[0].decode("ascii")
        scope = {"type": "http", "method": "POST", "path": path, "headers": headers, "client": client}
        if self._guard.rejection(scope) is not None:
            return None
        name, version = target
        try:
            runner = self.service.runner(name, version)
        except EdgerunError:
            return None  # unknown, loading or unloading: the ASGI route answers 404/503
        return LaneRequest(scope, runner, INFER_ROUTE if version is None else INFER_VERSION_ROUTE,
                           lengths[1], aligned_buffer(lengths[0], lengths[1]), keep_alive)

    async def answer(self, request: LaneRequest) -> tuple[int, bytes, bytes]:
        """(status, header lines, body) of the response; never raises. The protocol adds the
        status line, its default headers and the connection header."""
        metrics = self.service.metrics
        metrics.inflight.inc()
        try:
            status, head, body = await self._respond(request)
        finally:
            metrics.inflight.dec()
        seconds = (time.perf_counter_ns() - request.started_ns) / 1e9
        self._guard.record(request.scope, request.route, request.runner.name, status, len(body), seconds)
        return status, head + b"content-length: %d\r\n" % len(body), body

    async def _respond(self, request: LaneRequest) -> tuple[int, bytes, bytes]:
        runner = request.runner
        try:
            try:
                decoded = decode_request(request.body, str(request.header_length), runner.session.input_specs)
            except Exception:
                dataplane.request_failed(runner, request.started_ns)
                raise
            body, header_length = await dataplane.infer(
                runner, decoded, self.service.config.request_timeout_s, request.started_ns, _encode)
        except EdgerunError as exc:
            status, message, extra = edgerun_error_answer(exc, "POST", request.scope["path"])
            return status, _error_head(extra), _error_body(message)
        except Exception as exc:
            status, message = unexpected_answer(exc, "POST", request.scope["path"])
            return status, JSON_TYPE, _error_body(message)
        if header_length is None:
            return 200, JSON_TYPE, body
        return 200, BINARY_TYPE + b"inference-header-content-length: %d\r\n" % header_length, body


def _encode(result: InferResult) -> tuple[bytes, int | None]:
    return encode_response(result.header(), result.outputs)


def _error_body(message: str) -> bytes:
    """The body JSONResponse renders for {"error": message}, byte for byte."""
    return json.dumps({"error": message}, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode("utf-8")


def _error_head(headers: dict[str, str] | None) -> bytes:
    extra = "".join(f"{name.lower()}: {value}\r\n" for name, value in (headers or {}).items())
    return JSON_TYPE + extra.encode("latin-1")
