"""Connection budgets for uvicorn's httptools protocol: a cap on open connections (the oldest silent one
makes room, else 503 + Retry-After), a deadline for each request's line and headers (408), a cap on
their size (431), and a limit on silence inside a request body (408)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .config import LimitsConfig
from .fastlane import InferLane, lane_protocol
from .logfilter import RepeatFilter

log = logging.getLogger(__name__)
log.addFilter(RepeatFilter())  # a flood of refused connections logs a line per window, with a count

REJECT_LINGER_S = 1.0  # a refused connection is read and discarded this long, so the client sees the 503
RETRY_AFTER_S = 1

REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}


def status_response(status: int, message: str, headers: dict[str, str] | None = None) -> bytes:
    """A complete HTTP/1.1 response with a JSON error body that closes the connection."""
    body = json.dumps({"error": message}).encode()
    lines = [f"HTTP/1.1 {status} {REASONS[status]}", "content-type: application/json",
             f"content-length: {len(body)}", "connection: close",
             *(f"{name}: {value}" for name, value in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def budgeted_protocol(limits: LimitsConfig) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol class with ``limits``' connection budgets (one class per server)."""
    silent: dict[HttpToolsProtocol, None] = {}  # connections that have not sent a byte, oldest first

    class BudgetedProtocol(HttpToolsProtocol):
        """One connection. Until a request's headers are complete, its bytes are counted and a
        deadline runs. At the cap, a new connection closes the oldest one that has not sent a byte
        (a client that only holds sockets cannot lock out one that talks); when every connection
        is talking, the new one is answered 503 before anything is parsed."""

        _header_timer: asyncio.TimerHandle | None = None
        _header_bytes = 0
        _awaiting_headers = True
        _refused = False
        _body_timer: asyncio.TimerHandle | None = None  # runs while a request's body is awaited
        _body_read = 0.0  # loop time of that body's last bytes

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= limits.max_connections and not self._evict_silent():
                self._refuse(transport)
                return
            super().connection_made(transport)
            silent[self] = None
            self._start_header_timer()

        @staticmethod
        def _evict_silent() -> bool:
            for oldest in silent:
                del silent[oldest]
                oldest.connections.discard(oldest)
                oldest.transport.close()
                return True
            return False

        def _refuse(self, transport: asyncio.Transport) -> None:
            self._refused = True
            self.transport = transport
            log.warning("connection refused: %d connections open (limits.max_connections)",
                        len(self.connections))
            transport.write(status_response(
                503, f"too many connections (limit {limits.max_connections}); retry later",
                {"retry-after": str(RETRY_AFTER_S)}))
            try:
                transport.write_eof()
            except OSError:  # the client is already gone
                transport.close()
                return
            self.loop.call_later(REJECT_LINGER_S, transport.close)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return  # discarded: the 503 is on its way
            silent.pop(self, None)
            if self._awaiting_headers:
                self._header_bytes += len(data)
                self._start_header_timer()
            elif self._body_timer is not None:
                self._body_read = self.loop.time()
            super().data_received(data)
            if self._awaiting_headers and self._header_bytes > limits.max_header_bytes \
                    and not self.transport.is_closing():
                self._fail(431, f"request line and headers exceed {limits.max_header_bytes} bytes "
                                "(limits.max_header_bytes)")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._awaiting_headers = True

        def on_headers_complete(self) -> None:
            self._headers_done()
            super().on_headers_complete()
            self._watch_body()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._message_done()

        def _watch_body(self) -> None:
            """Until the request's message is complete, its body may not go silent for long."""
            self._body_read = self.loop.time()
            self._body_timer = self.loop.call_later(limits.header_timeout_s, self._check_body)

        def _stop_body_timer(self) -> None:
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None

        def _check_body(self) -> None:
            """408 (or a close, once an answer has begun) for a body with no new bytes for
            header_timeout_s while the server was reading; else look again when it could be."""
            self._body_timer = None
            if self.transport.is_closing() or self.transport.get_protocol() is not self:
                return  # closing, or handed on (a WebSocket upgrade)
            if self.flow.read_paused:  # the app has not taken what came: not the client's silence
                self._body_read = self.loop.time()
            idle = self.loop.time() - self._body_read
            if idle < limits.header_timeout_s:
                self._body_timer = self.loop.call_later(limits.header_timeout_s - idle, self._check_body)
                return
            cycle = self.cycle
            started = cycle is not None and cycle.response_started
            if cycle is not None:  # the app's receive() returns http.disconnect, its answer is dropped
                cycle.disconnected = True
                cycle.message_event.set()
            message = (f"request body stopped arriving: none for {limits.header_timeout_s:g} s "
                       "(limits.header_timeout_s)")
            if started:
                log.warning("connection closed: %s", message)
                self.transport.close()
            else:
                self._fail(408, message)

        def _headers_done(self) -> None:
            """A request's line and headers are in: its header budget is spent, its deadline off."""
            self._awaiting_headers = False
            self._header_bytes = 0
            self._cancel_header_timer()

        def _message_done(self) -> None:
            self._stop_body_timer()
            self._awaiting_headers = True  # what comes next is the next request's line and headers

        def connection_lost(self, exc: Exception | None) -> None:
            silent.pop(self, None)
            self._cancel_header_timer()
            self._stop_body_timer()
            if not self._refused:
                super().connection_lost(exc)

        def _start_header_timer(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(limits.header_timeout_s, self._header_timeout)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timeout(self) -> None:
            self._header_timer = None
            if not self._awaiting_headers or self.transport.is_closing():
                return
            if self._header_bytes == 0:
                self.transport.close()  # a silent connection: closed without a word (and no log line)
                return
            self._fail(408, f"request line and headers did not arrive within {limits.header_timeout_s:g} s "
                            "(limits.header_timeout_s)")

        def _fail(self, status: int, message: str) -> None:
            log.warning("%s: %s", REASONS[status], message)
            self.transport.write(status_response(status, message))
            self.transport.close()

    return BudgetedProtocol


def uvicorn_budgets(limits: LimitsConfig, lane: InferLane | None = None) -> dict[str, Any]:
    """uvicorn.Config keyword arguments for ``limits`` (and the infer fast lane, given one)."""
    # asyncio accepts up to `backlog` connections in one go before the closes it scheduled run: a
    # backlog near the cap keeps a burst of connections within the process's descriptors.
    backlog = min(2048, max(128, limits.max_connections))
    protocol = budgeted_protocol(limits)
    return {"http": protocol if lane is None else lane_protocol(protocol, lane),
            "timeout_keep_alive": limits.keep_alive_timeout_s, "backlog": backlog}
