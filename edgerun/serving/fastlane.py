"""The infer fast lane: V2 binary-tensor infer requests served by the HTTP protocol itself, without ASGI.

perf_analyzer, tritonclient and every camera client post the same request over and over: a short
JSON header, then raw tensor bytes. For that request (and only that one) the HTTP protocol asks
:meth:`InferLane.admit` once its headers are parsed. An admitted request's body is received by
the kernel straight into an aligned buffer the tensors are views of (``recv_into``, woken once the
whole body is there: SO_RCVLOWAT), and :meth:`InferLane.answer` runs the same decode, data plane
and encode as the ASGI route, with the same key/origin/size checks, metrics, statistics, access
log and error bodies (ServiceMiddleware's own methods). Anything else, and any request the checks
would refuse, goes the ASGI way, which then gives the refusal its usual answer. Measured in
docs/benchmarks.md; ``server.infer_fast_lane: false`` turns it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import httptools
from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..errors import EdgerunError
from . import dataplane
from .body import aligned_buffer, binary_lengths
from .codec import decode_request
from .errors import edgerun_error_answer, error_response, unexpected_answer
from .execution import ModelRunner
from .middleware import ServiceMiddleware
from .service import Service
from .v2 import encode_http, infer_target

INFER_ROUTE = "/v2/models/{model_name}/infer"
INFER_VERSION_ROUTE = "/v2/models/{model_name}/versions/{model_version}/infer"
# Headers whose meaning the ASGI stack implements (proxies, encodings, 100-continue, upgrades):
# a request carrying one goes that way.
ASGI_ONLY = frozenset({b"transfer-encoding", b"content-encoding", b"expect", b"upgrade",
                       b"x-forwarded-for", b"x-forwarded-proto", b"forwarded"})
LENGTH_HEADERS = frozenset({b"content-length", b"inference-header-content-length"})
STATUS_LINES = {status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode()
                for status in http.HTTPStatus}
SCRATCH_BYTES = 64 * 1024     # what one read takes outside a lane body (request lines, headers, ASGI bodies)
LOWAT_CAP = 1024 * 1024       # the most bytes a lane body read waits for before waking the loop


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
    response_started: bool = False  # read by the body deadline: a lane answer starts complete
    response_complete: bool = False
    disconnected: bool = False
    message_event: _NoEvent = field(default_factory=_NoEvent)

    def take(self, chunk: bytes) -> None:
        """Copy a chunk of the body in (the HTTP parser never passes more than Content-Length)."""
        end = self.received + len(chunk)
        self.body[self.received:end] = chunk
        self.received = end


def _lengths(headers: list[tuple[bytes, bytes]], limit: int) -> tuple[int, int] | None:
    """:func:`binary_lengths` of Content-Length and Inference-Header-Content-Length, each given
    once, when no header the lane leaves to ASGI is there; else None."""
    found: dict[bytes, bytes] = {}
    for name, value in headers:
        if name in ASGI_ONLY or (name in LENGTH_HEADERS and name in found):
            return None
        found[name] = value
    return binary_lengths(found.get(b"content-length"), found.get(b"inference-header-content-length"), limit)


class InferLane:
    """Admits and answers V2 binary infer requests for one service (see the module docstring)."""

    def __init__(self, service: Service) -> None:
        self.service = service
        # ServiceMiddleware's checks and records, without an app to wrap: the lane's requests get
        # exactly the refusals, metrics and access log lines of the ASGI path.
        self._guard = ServiceMiddleware(None, service)  # type: ignore[arg-type]
        self._limit = service.config.max_body_bytes

    def admit(self, method: bytes, url: bytes, headers: list[tuple[bytes, bytes]],
              client: tuple[str, int] | None, keep_alive: bool) -> LaneRequest | None:
        """A LaneRequest when this request is a V2 binary infer request the ASGI checks would let
        through to a ready model; None sends it the ASGI way."""
        raw_path = url.partition(b"?")[0]
        if method != b"POST" or b"%" in raw_path or not raw_path.isascii():
            return None  # percent-escapes: ASGI decodes them
        path = raw_path.decode("ascii")
        target = infer_target(path)
        lengths = _lengths(headers, self._limit) if target is not None else None
        if target is None or lengths is None:
            return None
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

    async def answer(self, request: LaneRequest) -> Response:
        """The response, as the ASGI route builds it; never raises. The protocol sends it with the
        status line, its default headers and the connection header, then calls :meth:`record`
        (as ServiceMiddleware records once the response is sent)."""
        metrics = self.service.metrics
        metrics.inflight.inc()
        try:
            return await self._respond(request)
        finally:
            metrics.inflight.dec()

    def record(self, request: LaneRequest, status: int, bytes_out: int) -> None:
        """Metrics and the access log line of an answered request."""
        seconds = (time.perf_counter_ns() - request.started_ns) / 1e9
        self._guard.record(request.scope, request.route, request.runner.name, status, bytes_out, seconds)

    async def _respond(self, request: LaneRequest) -> Response:
        runner = request.runner
        try:
            try:
                decoded = decode_request(request.body, str(request.header_length), runner.session.input_specs)
            except Exception:
                dataplane.request_failed(runner, request.started_ns)
                raise
            return await dataplane.infer(runner, decoded, self.service.config.request_timeout_s,
                                         request.started_ns, encode_http)
        except EdgerunError as exc:
            return error_response(*edgerun_error_answer(exc, "POST", request.scope["path"]))
        except Exception as exc:
            return error_response(*unexpected_answer(exc, "POST", request.scope["path"]))


def lane_protocol(base: type[HttpToolsProtocol], lane: InferLane) -> type[HttpToolsProtocol]:
    """``base`` (uvicorn's httptools protocol with the connection budgets: its body deadline
    answers 408 to a body that goes silent, lane bodies included) taking V2 binary infer requests
    into ``lane`` (one class per server).

    It is a BufferedProtocol: each read lands in a buffer it hands out. Between lane bodies that is
    one scratch buffer (every read is parsed before the next one starts, and the parser copies what
    it keeps); while a lane body arrives it is the body buffer itself, so the tensor bytes are
    copied once, by the kernel, and the socket wakes the loop only when the body is complete
    (SO_RCVLOWAT, up to LOWAT_CAP). The parser, which never saw those bytes, is then replaced."""
    scratch = memoryview(bytearray(SCRATCH_BYTES))

    class LaneProtocol(base, asyncio.BufferedProtocol):  # type: ignore[valid-type, misc]
        _filling: LaneRequest | None = None  # the lane request whose body the socket reads into
        _socket: Any = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._socket = transport.get_extra_info("socket")

        # -- reading ------------------------------------------------------------------------
        def get_buffer(self, sizehint: int) -> memoryview:
            filling = self._filling
            return scratch if filling is None else filling.body[filling.received:]

        def buffer_updated(self, nbytes: int) -> None:
            filling = self._filling
            if filling is None:
                self.data_received(scratch[:nbytes])  # type: ignore[arg-type]  # parsed, not kept
                self._start_filling()
                return
            filling.received += nbytes
            self._body_read = self.loop.time()  # the body deadline's progress
            remaining = len(filling.body) - filling.received
            self._set_lowat(remaining or 1)
            if not remaining:
                self._filling = None
                self.parser = httptools.HttpRequestParser(self)
                with contextlib.suppress(AttributeError):  # httptools < 0.6.3
                    self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
                self._start_answer(filling)

        def _start_filling(self) -> None:
            """After a parsed read: read the rest of an admitted body straight into its buffer."""
            cycle = self.cycle
            if type(cycle) is LaneRequest and cycle.received < len(cycle.body) \
                    and not self.transport.is_closing():
                self._filling = cycle
                self._set_lowat(len(cycle.body) - cycle.received)

        def connection_lost(self, exc: Exception | None) -> None:
            self._filling = None
            super().connection_lost(exc)

        def _set_lowat(self, size: int) -> None:
            if self._socket is not None:
                with contextlib.suppress(OSError, AttributeError):  # a loop's socket without it: no hint
                    self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, min(size, LOWAT_CAP))

        # -- parser callbacks -----------------------------------------------------------------
        def on_headers_complete(self) -> None:
            request = self._admitted()
            if request is None:
                super().on_headers_complete()
                return
            self._headers_done()
            self.cycle = request
            self._watch_body()

        def on_body(self, body: bytes) -> None:
            cycle = self.cycle
            if type(cycle) is LaneRequest:
                cycle.take(body)
            else:
                super().on_body(body)

        def on_message_complete(self) -> None:
            cycle = self.cycle
            if type(cycle) is LaneRequest:
                self._start_answer(cycle)
            else:
                super().on_message_complete()

        def _admitted(self) -> LaneRequest | None:
            """The lane's request for the headers just parsed; None when it goes the ASGI way, or
            when an earlier request on this connection is still answering (uvicorn then queues
            it, pipelined, and starts it after that one)."""
            if (self.cycle is not None and not self.cycle.response_complete) or self.parser.should_upgrade():
                return None
            keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
            return lane.admit(self.parser.get_method(), self.url, self.headers, self.client, keep_alive)

        # -- answering ------------------------------------------------------------------------
        def _start_answer(self, request: LaneRequest) -> None:
            self._message_done()
            task = self.loop.create_task(self._answer(request))
            task.add_done_callback(self.tasks.discard)  # a graceful stop waits for it, as for ASGI's
            self.tasks.add(task)

        async def _answer(self, request: LaneRequest) -> None:
            try:
                response = await lane.answer(request)
            except BaseException:  # lane.answer answers every error itself: this is a bug, or a stop
                request.response_complete = True
                self.transport.close()
                raise
            request.response_complete = True
            if not self.transport.is_closing():  # else the client left
                self.transport.write(self._framed(response, request.keep_alive))
                if not request.keep_alive:
                    self.transport.close()
                self.on_response_complete()  # keep-alive timer, or the next pipelined request
            lane.record(request, response.status_code, len(response.body))  # after the answer is sent

        def _framed(self, response: Response, keep_alive: bool) -> bytes:
            """``response`` as HTTP/1.1 bytes, after the server's default headers (date)."""
            headers = (*self.server_state.default_headers, *response.raw_headers)
            head = b"".join(b"%s: %s\r\n" % pair for pair in headers)
            closing = b"" if keep_alive else b"connection: close\r\n"
            status = STATUS_LINES[response.status_code]
            return b"".join((status, head, closing, b"\r\n", bytes(response.body)))

    return LaneProtocol
