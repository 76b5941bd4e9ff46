"""gRPC's HTTP/2 transport for unary calls on asyncio: frames, HPACK (the ``hpack`` package), flow
control and the connection budgets, handing each complete call to one async dispatch function.

Why not grpcio's server: its per-call machinery (Cython call objects, event-engine threads handing
each completion to the event loop) cost 0.6-0.7 ms of CPU per ModelInfer more than the HTTP fast
lane, which was the whole gap to Triton's C++ front end (docs/benchmarks.md). This speaks only what
a unary gRPC server needs of RFC 9113: no server push, no priorities, one message each way.

Budgets: at most ``max_connections`` connections (the oldest idle one makes room, else a new one is
closed at once); ``max_streams`` calls in flight per connection (a stream the client resets stays
counted until its handler returns, so resetting streams cannot buy unbounded work); one message of
at most ``max_message_bytes`` per call; a header block of at most ``max_header_bytes``.

Memory: a call's message buffer is allocated when the call is admitted, and admitted calls of one
connection hold at most ``max_message_bytes`` + 5 between them (released once the call's answer
is sent). Each stream may send 64 KiB before it is admitted (HTTP/2's initial stream window);
admission, in arrival order, opens the stream's window to its whole message, so an admitted call
can always finish and the connection can never deadlock on interleaved large calls. The
connection's own window is given back as bytes are taken in.

A connection is closed when it makes no progress (request bytes, or window for an answer that
waits) for ``stall_timeout_s`` while something of the client's is incomplete or waiting on it.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from .body import aligned_buffer
from .logfilter import RepeatFilter

log = logging.getLogger(__name__)
log.addFilter(RepeatFilter())

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, COMPRESSION_ERROR = 0x5, 0x6, 0x7, 0x9
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6
MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65_535
MIN_FRAME, MAX_FRAME = 16_384, 2**24 - 1
OUR_MAX_FRAME = 1 << 20  # frames we accept; a 600 KB tensor then arrives in one DATA frame
HEADER_TABLE_SIZE = 4096
FRAME_HEADER = struct.Struct(">IBI")  # (24-bit length << 8 | type, flags, stream id)

ENHANCE_YOUR_CALM = 0xB
CONNECTION_WINDOW = 16 << 20  # granted at once and given back as bytes arrive: not a memory bound
MAX_EMPTY_FRAMES = 1000  # empty DATA / CONTINUATION frames in a row before the connection is closed
MAX_DETAILS = 512  # characters of grpc-message (it is percent-encoded into one header block)
MAX_SETTINGS_BYTES = 1024  # 170 settings; HTTP/2 defines 6
MAX_HEADERS = 100  # fields in one header block; a gRPC call sends about ten
GRPC_OK, GRPC_INVALID_ARGUMENT, GRPC_DEADLINE_EXCEEDED = 0, 3, 4  # gRPC status codes
GRPC_RESOURCE_EXHAUSTED, GRPC_UNIMPLEMENTED, GRPC_INTERNAL = 8, 12, 13
NOT_GRPC = -1  # a GrpcReply status: answer HTTP 415, the request was not gRPC
TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


class StreamError(Exception):
    """A call refused while its message arrives: answered with gRPC status ``code``, then its
    stream is reset; the connection lives."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class ConnectionError_(Exception):  # noqa: N801 (not the builtin)
    """A connection-level protocol error: GOAWAY with ``code``, then the connection closes."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class H2Limits:
    max_connections: int = 100
    max_streams: int = 100
    max_message_bytes: int = 32 * 1024 * 1024
    max_header_bytes: int = 16 * 1024
    stall_timeout_s: float = 10.0


@dataclass
class GrpcCall:
    """One unary call as the dispatch function sees it."""

    method: str  # the :path, e.g. "/inference.GRPCInferenceService/ModelInfer"
    metadata: list[tuple[str, str]]  # the client's other headers, lower-case names
    message: memoryview  # the request message, its 5-byte gRPC prefix removed
    deadline_s: float | None  # from grpc-timeout: seconds left when the call arrived


@dataclass
class GrpcReply:
    status: int = GRPC_OK
    message: bytes = b""  # the serialized response (sent only when status is OK)
    details: str = ""


Dispatch = Callable[[GrpcCall], Awaitable[GrpcReply]]


def parse_timeout(value: str) -> float | None:
    """grpc-timeout ("100m", "5S", ...) in seconds; None when malformed (the call then has none)."""
    digits, unit = value[:-1], value[-1:]
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 8 or unit not in TIMEOUT_UNITS:
        return None
    return int(digits) * TIMEOUT_UNITS[unit]


def _literal(name: bytes, value: bytes) -> bytes:
    """One header as an HPACK literal without indexing, new name: nothing enters the client's
    dynamic table, so this encoder keeps no state (RFC 7541 6.2.2)."""
    return b"\x00" + _hpack_int(len(name), 7) + name + _hpack_int(len(value), 7) + value


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# ":status: 200" is static entry 8; content-type is static name 31 (literal without indexing)
RESPONSE_HEADERS = b"\x88" + _hpack_int(31, 4) + _hpack_int(16, 7) + b"application/grpc"
UNSUPPORTED_MEDIA = b"\x00" + _hpack_int(7, 7) + b":status" + _hpack_int(3, 7) + b"415"


def trailers(status: int, details: str) -> bytes:
    block = _literal(b"grpc-status", str(status).encode())
    if details:
        text = details if len(details) <= MAX_DETAILS else details[:MAX_DETAILS - 3] + "..."
        block += _literal(b"grpc-message", quote(text, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode())
    return block


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    header = (len(payload) << 8 | kind).to_bytes(4, "big") + bytes([flags]) + stream_id.to_bytes(4, "big")
    return header + payload


@dataclass
class Stream:
    id: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    prefix: bytearray = field(default_factory=bytearray)  # the gRPC message prefix while it arrives
    size: int = -1  # the message's length, once the prefix is in
    early: bytearray = field(default_factory=bytearray)  # message bytes that came before admission
    body: memoryview | None = None  # the message buffer, allocated on admission
    filled: int = 0
    reserved: int = 0  # bytes of the connection's budget this call holds
    granted: int = DEFAULT_WINDOW  # flow-controlled bytes it may send, and has sent
    received: int = 0
    padding: int = 0  # of the received bytes, DATA padding
    ended: bool = False  # the client's half is closed
    reset: bool = False  # dropped (by either side): its frames are ignored, its answer not sent
    task: asyncio.Task[None] | None = None
    send_window: int = DEFAULT_WINDOW
    pending: bytearray = field(default_factory=bytearray)  # answer DATA waiting for window
    pending_trailers: bytes | None = None


class Registry:
    """The open connections of one server, oldest first, for the cap and for a graceful stop."""

    def __init__(self, limits: H2Limits, dispatch: Dispatch) -> None:
        self.limits = limits
        self.dispatch = dispatch
        self.connections: dict[H2Connection, None] = {}

    def admit(self, connection: H2Connection) -> bool:
        if len(self.connections) >= self.limits.max_connections:
            idle = next((c for c in self.connections if not c.streams), None)
            if idle is None:
                return False
            del self.connections[idle]  # gone now, not when its close completes
            idle.go_away(NO_ERROR, "making room for a new connection")
        self.connections[connection] = None
        return True

    async def drain(self, grace_s: float) -> None:
        """GOAWAY to every connection, wait up to ``grace_s`` for the calls it names (still
        arriving or running) to be answered, close."""
        for connection in list(self.connections):
            connection.go_away(NO_ERROR, "server stopping", close_when_idle=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while any(c.streams for c in self.connections) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.close()


class H2Connection(asyncio.Protocol):
    """One client connection."""

    def __init__(self, registry: Registry) -> None:
        from hpack import Decoder

        self.registry = registry
        self.limits = registry.limits
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()  # an incomplete frame (never a DATA payload: that is streamed)
        self.need = len(PREFACE)  # bytes the buffer must hold before it is parsed again
        self.preface_seen = False
        self.settings_seen = False
        self.streams: dict[int, Stream] = {}
        self.waiting: dict[int, Stream] = {}  # streams whose message waits for budget, in order
        self.last_stream = 0
        self.header_block: tuple[int, int, bytearray] | None = None  # (stream, flags, fragments)
        self.data_left = 0  # bytes of the DATA payload being streamed into a message
        self.data_stream: Stream | None = None
        self.data_flags = 0
        self.budget = self.limits.max_message_bytes + 5
        self.reserved = 0
        self.recv_window = CONNECTION_WINDOW  # what the client may still send
        self.unacked = 0  # bytes taken in, their window not yet given back (see _push)
        self.send_window = DEFAULT_WINDOW
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_frame = MIN_FRAME
        self.decoder = Decoder(max_header_list_size=self.limits.max_header_bytes)
        self.decoder.max_allowed_table_size = HEADER_TABLE_SIZE
        self.empty_frames = 0
        self.admitting = False
        self.blocked: dict[int, Stream] = {}  # streams whose answer waits for window
        self.going_away = False
        self.close_when_idle = False
        self.paused = False
        self.last_progress = time.monotonic()
        self.stall_timer: asyncio.TimerHandle | None = None
        self.write_buffered = 0  # the transport's write buffer at the last stall check
        self.outgoing: list[bytes] = []

    # ---- connection life ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.registry.admit(self):
            log.warning("gRPC connection refused: %d connections open (limits.max_connections)",
                        len(self.registry.connections))
            transport.abort()
            return
        settings = b"".join(struct.pack(">HI", key, value) for key, value in (
            (SETTINGS_MAX_CONCURRENT_STREAMS, self.limits.max_streams),
            (SETTINGS_MAX_FRAME_SIZE, OUR_MAX_FRAME),
            (SETTINGS_MAX_HEADER_LIST_SIZE, self.limits.max_header_bytes)))
        grant = struct.pack(">I", CONNECTION_WINDOW - DEFAULT_WINDOW)
        transport.write(frame(SETTINGS, 0, 0, settings) + frame(WINDOW_UPDATE, 0, 0, grant))
        self._arm_stall_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.registry.connections.pop(self, None)
        if self.stall_timer is not None:
            self.stall_timer.cancel()
        for stream in self.streams.values():
            stream.reset = True
            if stream.task is not None:
                stream.task.cancel()
        self.transport = None

    def pause_writing(self) -> None:  # the client does not read: stop reading its requests
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        self._progress()
        if self.transport is not None:
            self.transport.resume_reading()

    def close(self) -> None:
        """Close once what is queued is sent; abort if that takes longer than the stall deadline
        (a client that does not read would otherwise keep the socket)."""
        self._push()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
            asyncio.get_running_loop().call_later(self.limits.stall_timeout_s, self.transport.abort)

    def go_away(self, code: int, reason: str, close_when_idle: bool = False) -> None:
        """GOAWAY naming the last stream this connection will serve; closes unless calls run."""
        if self.transport is None:
            return
        if not self.going_away:
            self.going_away = True
            payload = struct.pack(">II", self.last_stream, code) + reason.encode()[:256]
            self._write(frame(GOAWAY, 0, 0, payload))
        self.close_when_idle = self.close_when_idle or close_when_idle or code != NO_ERROR
        if code != NO_ERROR or not self.streams:
            self.close()
        self._push()

    def _write(self, data: bytes) -> None:
        """Queue ``data``; _push sends the queue in one write (once per event the loop handles)."""
        self.outgoing.append(data)

    def _push(self) -> None:
        if self.unacked:  # the connection window for what was taken in, in one update
            self.outgoing.insert(0, frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.unacked)))
            self.recv_window += self.unacked
            self.unacked = 0
        if self.outgoing and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.outgoing))
        self.outgoing.clear()

    # ---- stalls -------------------------------------------------------------------------

    def _progress(self) -> None:
        self.last_progress = time.monotonic()

    def _arm_stall_timer(self) -> None:
        loop = asyncio.get_running_loop()
        self.stall_timer = loop.call_later(self.limits.stall_timeout_s, self._check_stall)

    def _waiting_for_client(self) -> bool:
        """Whether the connection waits for the client: the rest of a preface, frame, header block
        or message, window for an answer, or the client reading its answers (paused writing)."""
        return (not self.settings_seen or bool(self.buffer) or self.data_left > 0 or self.paused
                or self.header_block is not None or bool(self.blocked)
                or any(not s.ended and (s.id not in self.waiting or s.received < s.granted)
                       for s in self.streams.values()))

    def _check_stall(self) -> None:
        if self.transport is not None:  # a client reading its answers, however slowly, progresses
            buffered = self.transport.get_write_buffer_size()
            if buffered < self.write_buffered:
                self._progress()
            self.write_buffered = buffered
        idle_for = time.monotonic() - self.last_progress
        if self._waiting_for_client() and idle_for >= self.limits.stall_timeout_s:
            log.warning("gRPC connection closed: the client stalled for %.0f s mid-call "
                        "(limits.header_timeout_s)", idle_for)
            self.go_away(PROTOCOL_ERROR, "call stalled")
            if self.transport is not None and self.transport.get_write_buffer_size():
                self.transport.abort()  # answers the client does not read would never drain
            return
        if self.transport is not None:
            self._arm_stall_timer()

    # ---- reading frames -----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        try:
            self._receive(data)
        except ConnectionError_ as exc:
            log.warning("gRPC connection closed: %s", exc)
            self.go_away(exc.code, str(exc))
        self._push()

    def _receive(self, data: bytes) -> None:
        """Parse ``data`` after what was left over; keep the unparsed end (a partial frame)."""
        chunk: bytes | bytearray = data
        if self.buffer:
            self.buffer += data
            if len(self.buffer) < self.need:  # the frame is still incomplete: parse nothing yet
                return
            chunk, self.buffer = self.buffer, bytearray()
        with memoryview(chunk) as view:
            parsed = self._parse(view)
            self.buffer += view[parsed:]

    def _parse(self, view: memoryview) -> int:
        """Handle the complete frames in ``view``; returns how far it got (and sets self.need)."""
        offset = 0
        if not self.preface_seen:
            if len(view) < len(PREFACE):
                if not PREFACE.startswith(view):
                    raise ConnectionError_(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                return 0
            if view[:len(PREFACE)] != PREFACE:
                raise ConnectionError_(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            self.preface_seen = True
            offset = len(PREFACE)
        while self.transport is not None:
            if self.data_left:  # inside a DATA payload: straight into its message
                offset = self._stream_data(view, offset)
                if self.data_left:
                    return offset
            self.need = 9
            if len(view) - offset < 9:
                return offset
            word, flags, stream_id = FRAME_HEADER.unpack_from(view, offset)
            length, kind, stream_id = word >> 8, word & 0xFF, stream_id & MAX_WINDOW
            self._check_frame(kind, length, flags, stream_id)
            if kind == DATA and not flags & PADDED:
                offset += 9
                self._start_data(stream_id, flags, length)
                continue
            self.need = 9 + length
            if len(view) - offset < self.need:
                return offset
            payload = bytes(view[offset + 9:offset + 9 + length])
            offset += 9 + length
            self._frame(kind, flags, stream_id, payload)
        return len(view)

    def _check_frame(self, kind: int, length: int, flags: int, stream_id: int) -> None:
        if length > OUR_MAX_FRAME:
            raise ConnectionError_(FRAME_SIZE_ERROR, f"a frame of {length} bytes (limit {OUR_MAX_FRAME})")
        if kind in (HEADERS, CONTINUATION) and length > self.limits.max_header_bytes:
            raise ConnectionError_(PROTOCOL_ERROR, f"a header block over {self.limits.max_header_bytes} "
                                   "bytes (max_header_bytes)")
        if not self.settings_seen and kind != SETTINGS:
            raise ConnectionError_(PROTOCOL_ERROR, "the first frame must be SETTINGS")
        if self.header_block is not None and (kind != CONTINUATION or stream_id != self.header_block[0]):
            raise ConnectionError_(PROTOCOL_ERROR, "a header block was interrupted")
        empty = not length and ((kind == DATA and not flags & END_STREAM)
                                or (kind == CONTINUATION and not flags & END_HEADERS))
        self.empty_frames = self.empty_frames + 1 if empty else 0
        if self.empty_frames > MAX_EMPTY_FRAMES:
            raise ConnectionError_(ENHANCE_YOUR_CALM, f"more than {MAX_EMPTY_FRAMES} empty frames in a row")

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if kind == DATA:  # padded
            pad = payload[0] if payload else 256
            if pad >= len(payload):
                raise ConnectionError_(PROTOCOL_ERROR, "DATA padding longer than the frame")
            self._start_data(stream_id, flags, len(payload), padded=payload[1:len(payload) - pad])
        elif kind == HEADERS:
            self._headers(stream_id, flags, payload)
        elif kind == CONTINUATION:
            if self.header_block is None:
                raise ConnectionError_(PROTOCOL_ERROR, "CONTINUATION without HEADERS")
            self._add_fragment(flags, payload)
        elif kind == SETTINGS:
            self._settings(stream_id, flags, payload)
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == PING:
            self._ping(stream_id, flags, payload)
        elif kind == RST_STREAM:
            self._rst_stream(stream_id, payload)
        elif kind == GOAWAY:
            if len(payload) < 8 or stream_id:
                raise ConnectionError_(FRAME_SIZE_ERROR, "malformed GOAWAY")
            self.go_away(NO_ERROR, "client going away", close_when_idle=True)
        elif kind == PUSH_PROMISE:
            raise ConnectionError_(PROTOCOL_ERROR, "a client cannot push")
        elif kind == PRIORITY and (len(payload) != 5 or not stream_id):
            raise ConnectionError_(PROTOCOL_ERROR, "malformed PRIORITY")
        # unknown frame types are ignored (RFC 9113 4.1)

    def _ping(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id:
            raise ConnectionError_(PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise ConnectionError_(FRAME_SIZE_ERROR, "a PING is 8 bytes")
        if not flags & ACK:
            self._write(frame(PING, ACK, 0, payload))

    def _settings(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id or (flags & ACK and payload) or len(payload) % 6:
            raise ConnectionError_(FRAME_SIZE_ERROR, "malformed SETTINGS")
        if flags & ACK:
            return
        if len(payload) > MAX_SETTINGS_BYTES:
            raise ConnectionError_(ENHANCE_YOUR_CALM, f"a SETTINGS frame of {len(payload)} bytes")
        self.settings_seen = True
        for key, value in dict(struct.iter_unpack(">HI", payload)).items():  # the last of each key
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW or any(s.send_window + value - self.peer_initial_window > MAX_WINDOW
                                             for s in self.streams.values()):
                    raise ConnectionError_(FLOW_CONTROL_ERROR, "a stream window above 2^31-1")
                for stream in self.streams.values():
                    stream.send_window += value - self.peer_initial_window
                self.peer_initial_window = value
            elif key == SETTINGS_MAX_FRAME_SIZE:
                if not MIN_FRAME <= value <= MAX_FRAME:
                    raise ConnectionError_(PROTOCOL_ERROR, "max frame size out of range")
                self.peer_max_frame = value
        self._write(frame(SETTINGS, ACK, 0))
        self._flush_all()

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(FRAME_SIZE_ERROR, "a WINDOW_UPDATE is 4 bytes")
        increment = struct.unpack(">I", payload)[0] & MAX_WINDOW
        if stream_id == 0:
            if not increment or self.send_window + increment > MAX_WINDOW:
                raise ConnectionError_(FLOW_CONTROL_ERROR, "bad connection window update")
            self.send_window += increment
            self._flush_all()
            return
        if stream_id > self.last_stream:
            raise ConnectionError_(PROTOCOL_ERROR, "WINDOW_UPDATE of an idle stream")
        stream = self.streams.get(stream_id)
        if stream is None or stream.reset:
            return  # a closed stream's update
        if not increment or stream.send_window + increment > MAX_WINDOW:
            self._reset(stream, FLOW_CONTROL_ERROR if increment else PROTOCOL_ERROR)
            return
        stream.send_window += increment
        self._flush(stream)

    def _rst_stream(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4 or not stream_id:
            raise ConnectionError_(FRAME_SIZE_ERROR, "malformed RST_STREAM")
        if stream_id > self.last_stream:
            raise ConnectionError_(PROTOCOL_ERROR, "RST_STREAM of an idle stream")
        stream = self.streams.get(stream_id)
        if stream is not None:  # stays counted until its handler returns (rapid-reset attacks)
            self._drop(stream)

    # ---- headers -------------------------------------------------------------------------

    def _headers(self, stream_id: int, flags: int, payload: bytes) -> None:
        if flags & PADDED:
            pad = payload[0] if payload else 256
            if pad >= len(payload):
                raise ConnectionError_(PROTOCOL_ERROR, "HEADERS padding longer than the frame")
            payload = payload[1:len(payload) - pad]
        if flags & PRIORITY_FLAG:
            if len(payload) < 5:
                raise ConnectionError_(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            payload = payload[5:]
        if not stream_id:
            raise ConnectionError_(PROTOCOL_ERROR, "HEADERS on stream 0")
        self.header_block = (stream_id, flags, bytearray())
        self._add_fragment(flags, payload)

    def _add_fragment(self, flags: int, fragment: bytes) -> None:
        assert self.header_block is not None
        stream_id, first_flags, block = self.header_block
        block += fragment
        if len(block) > self.limits.max_header_bytes:
            limit = self.limits.max_header_bytes
            raise ConnectionError_(PROTOCOL_ERROR, f"a header block over {limit} bytes (max_header_bytes)")
        if not flags & END_HEADERS:
            return
        self.header_block = None
        try:  # decoded even for a stream that is gone: the table it shares must stay in step
            headers = [(name.decode("latin-1"), value.decode("latin-1"))
                       for name, value in self.decoder.decode(bytes(block), raw=True)]
        except Exception as exc:  # hpack's errors: the shared table state is lost
            raise ConnectionError_(COMPRESSION_ERROR, f"undecodable header block: {exc}") from None
        if len(headers) > MAX_HEADERS:  # cheap to send as table references, dear to decode
            raise ConnectionError_(ENHANCE_YOUR_CALM, f"{len(headers)} headers in one block")
        self._header_block_done(stream_id, first_flags, headers)

    def _header_block_done(self, stream_id: int, flags: int, headers: list[tuple[str, str]]) -> None:
        if stream_id <= self.last_stream:
            stream = self.streams.get(stream_id)
            if stream is None or stream.reset:
                return  # a stream that is closed or reset: ignored (RFC 9113 5.1)
            if stream.ended or not flags & END_STREAM:  # trailers end the request, or are an error
                raise ConnectionError_(PROTOCOL_ERROR, "HEADERS on a stream already sending")
            self._progress()
            self._end_of_request(stream)
            return
        if stream_id % 2 == 0:
            raise ConnectionError_(PROTOCOL_ERROR, f"stream {stream_id} cannot be opened by a client")
        self.last_stream = stream_id
        if self.going_away or len(self.streams) >= self.limits.max_streams:
            self._write(frame(RST_STREAM, 0, stream_id, struct.pack(">I", REFUSED_STREAM)))
            return
        stream = Stream(stream_id, headers, send_window=self.peer_initial_window)
        self.streams[stream_id] = stream
        self._progress()
        if flags & END_STREAM:
            self._end_of_request(stream)

    # ---- request bodies -------------------------------------------------------------------

    def _start_data(self, stream_id: int, flags: int, length: int, padded: bytes | None = None) -> None:
        """A DATA frame of ``length`` flow-controlled bytes; ``padded`` is its data when it was
        padded (and so read whole), else the payload follows and _stream_data streams it."""
        if not stream_id or stream_id > self.last_stream:
            raise ConnectionError_(PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
        if length > self.recv_window:
            raise ConnectionError_(FLOW_CONTROL_ERROR, "the client sent past the connection window")
        self.recv_window -= length
        self.unacked += length  # taken in (or dropped) at once: memory is bounded by admission
        stream = self.streams.get(stream_id)
        if stream is not None and stream.ended and not stream.reset:
            raise ConnectionError_(STREAM_CLOSED, f"DATA after the end of stream {stream_id}")
        if stream is not None and not stream.reset:
            stream.received += length
            if stream.received > stream.granted:
                raise ConnectionError_(FLOW_CONTROL_ERROR, f"stream {stream_id} sent past its window")
        else:
            stream = None  # closed or reset: its data is dropped
        if padded is not None:
            if stream is not None:
                if padded:
                    self._progress()
                stream.padding += length - len(padded)  # does not count against the message
                self._grant(stream, length - len(padded))
                self._append(stream, memoryview(padded))
            self._data_frame_done(stream, flags)
            return
        self.data_left, self.data_stream, self.data_flags = length, stream, flags
        if not length:
            self._data_frame_done(stream, flags)

    def _stream_data(self, data: memoryview, offset: int) -> int:
        """Copy what ``data`` holds of the current DATA payload into its stream; the offset after it."""
        take = min(self.data_left, len(data) - offset)
        stream = self.data_stream
        if stream is not None and take:
            self._progress()
            self._append(stream, data[offset:offset + take])
        self.data_left -= take
        if not self.data_left:
            self.data_stream = None
            self._data_frame_done(stream, self.data_flags)
        return offset + take

    def _append(self, stream: Stream, data: memoryview) -> None:
        if stream.reset:
            return
        try:
            if stream.size < 0:
                need = 5 - len(stream.prefix)
                stream.prefix += data[:need]
                data = data[need:]
                if len(stream.prefix) < 5:
                    return
                self._message_size(stream)
            if stream.body is None:  # waiting for admission: hold what came (within 64 KiB)
                stream.early += data
                if len(stream.early) > stream.size:
                    raise StreamError(GRPC_UNIMPLEMENTED, "more than one request message on a unary call")
                return
            end = stream.filled + len(data)
            if end > len(stream.body):
                raise StreamError(GRPC_UNIMPLEMENTED, "more than one request message on a unary call")
            stream.body[stream.filled:end] = data
            stream.filled = end
        except StreamError as exc:
            self._answer_now(stream, GrpcReply(exc.code, b"", str(exc)))

    def _message_size(self, stream: Stream) -> None:
        """The prefix is in: check the message's size, then admit the stream or queue it."""
        compressed, size = struct.unpack(">BI", stream.prefix)
        if compressed:
            raise StreamError(GRPC_UNIMPLEMENTED, "compressed messages are not supported: "
                              "send them uncompressed (grpc-encoding identity)")
        if size > self.limits.max_message_bytes:
            raise StreamError(GRPC_RESOURCE_EXHAUSTED, f"a message of {size} bytes "
                              f"(limit {self.limits.max_message_bytes}, limits.max_body_bytes)")
        stream.size = size
        self.waiting[stream.id] = stream
        self._admit_waiting()

    def _admit_waiting(self) -> None:
        """Give budget to waiting streams in arrival order while it lasts: allocate each one's
        message buffer and open its window to the whole message. Not re-entrant: what admission
        sets going (a call whose message is all in, a refusal) runs after the loop."""
        if self.admitting:
            return
        self.admitting = True
        complete: list[Stream] = []
        refused: list[Stream] = []
        try:
            while self.waiting:
                stream = next(iter(self.waiting.values()))
                if self.reserved + stream.size > self.budget:
                    break
                del self.waiting[stream.id]
                try:
                    stream.body = aligned_buffer(stream.size, stream.size)  # the last tensor ends it
                except MemoryError:
                    refused.append(stream)
                    continue
                stream.reserved = stream.size
                self.reserved += stream.size
                early, stream.early = stream.early, bytearray()
                stream.body[:len(early)] = early
                stream.filled = len(early)
                self._grant(stream, 5 + stream.size + stream.padding - stream.granted)
                if stream.ended:  # everything came before admission
                    complete.append(stream)
        finally:
            self.admitting = False
        for stream in refused:
            self._answer_now(stream, GrpcReply(GRPC_RESOURCE_EXHAUSTED, b"", "out of memory"))
        for stream in complete:
            self._end_of_request(stream)

    def _grant(self, stream: Stream, increment: int) -> None:
        if increment > 0 and not stream.ended:
            stream.granted += increment
            self._write(frame(WINDOW_UPDATE, 0, stream.id, struct.pack(">I", increment)))

    def _data_frame_done(self, stream: Stream | None, flags: int) -> None:
        if stream is not None and flags & END_STREAM and not stream.ended:
            self._end_of_request(stream)

    def _end_of_request(self, stream: Stream) -> None:
        stream.ended = True
        if stream.reset or stream.task is not None or stream.id in self.waiting:
            return  # dropped, already answered, or its message waits for admission
        if stream.body is None or stream.filled != len(stream.body):
            cut = stream.size >= 0 or stream.prefix
            missing = "a cut-off message" if cut else "no request message"
            self._answer_now(stream, GrpcReply(GRPC_INTERNAL, b"", f"{missing} on a unary call"))
            return
        call = self._call(stream)
        if isinstance(call, GrpcReply):
            self._answer_now(stream, call)
            return
        stream.task = asyncio.get_running_loop().create_task(self._serve(stream, call))
        stream.task.add_done_callback(lambda _: self._handler_gone(stream))

    def _call(self, stream: Stream) -> GrpcCall | GrpcReply:
        pseudo = {name: value for name, value in stream.headers if name.startswith(":")}
        if pseudo.get(":method") != "POST" or not pseudo.get(":path"):
            return GrpcReply(GRPC_UNIMPLEMENTED, b"", "gRPC calls are POST with a :path")
        metadata = [(name, value) for name, value in stream.headers if not name.startswith(":")]
        fields = dict(metadata)
        content_type = fields.get("content-type", "")
        if content_type != "application/grpc" and not content_type.startswith("application/grpc+"):
            return GrpcReply(NOT_GRPC, b"", "content-type must be application/grpc")
        timeout = parse_timeout(fields["grpc-timeout"]) if "grpc-timeout" in fields else None
        assert stream.body is not None
        return GrpcCall(pseudo[":path"], metadata, stream.body, timeout)

    # ---- answering -------------------------------------------------------------------------

    async def _serve(self, stream: Stream, call: GrpcCall) -> None:
        try:
            reply = await self.registry.dispatch(call)
        except Exception:  # a bug in a handler must not take the connection down
            log.exception("gRPC %s failed", call.method)
            reply = GrpcReply(GRPC_INTERNAL, b"", "internal error")
        finally:
            stream.body = None
            del call
        stream.task = None
        if stream.reset:
            self._forget(stream)
        else:
            self._send_reply(stream, reply)
        self._push()

    def _handler_gone(self, stream: Stream) -> None:
        """A handler task ended without finishing _serve: cancelled (the client reset the call or
        the connection is gone), even before it started."""
        if stream.task is not None:
            stream.task = None
            self._forget(stream)
            self._push()

    def _answer_now(self, stream: Stream, reply: GrpcReply) -> None:
        """Answer without a handler (a refused call); the rest of its body is dropped."""
        ended = stream.ended
        self._send_reply(stream, reply)
        if not ended:
            self._write(frame(RST_STREAM, 0, stream.id, struct.pack(">I", NO_ERROR)))
            self._drop(stream)

    def _send_reply(self, stream: Stream, reply: GrpcReply) -> None:
        try:
            if reply.status == NOT_GRPC:
                self._write(frame(HEADERS, END_HEADERS | END_STREAM, stream.id, UNSUPPORTED_MEDIA))
            elif reply.status != GRPC_OK:  # Trailers-Only
                block = RESPONSE_HEADERS + trailers(reply.status, reply.details)
                self._write(frame(HEADERS, END_HEADERS | END_STREAM, stream.id, block))
            else:
                self._write(frame(HEADERS, END_HEADERS, stream.id, RESPONSE_HEADERS))
                stream.pending += struct.pack(">BI", 0, len(reply.message))
                stream.pending += reply.message
                stream.reserved += len(reply.message)  # held, like the request, until it is sent
                self.reserved += len(reply.message)
                stream.pending_trailers = trailers(GRPC_OK, "")
                self._flush(stream)
                return
        except Exception:  # an answer that cannot be framed (a bug): the stream still ends
            log.exception("gRPC answer on stream %d could not be sent", stream.id)
            self._write(frame(RST_STREAM, 0, stream.id, struct.pack(">I", INTERNAL_ERROR)))
        self._forget(stream)

    def _flush(self, stream: Stream) -> None:
        """Send what window allows of ``stream``'s answer, its trailers once all DATA is out."""
        while stream.pending:
            size = min(len(stream.pending), stream.send_window, self.send_window, self.peer_max_frame)
            if size <= 0:
                self.blocked[stream.id] = stream
                return
            self._write(frame(DATA, 0, stream.id, bytes(stream.pending[:size])))
            del stream.pending[:size]
            stream.send_window -= size
            self.send_window -= size
            self._progress()
        self.blocked.pop(stream.id, None)
        if stream.pending_trailers is not None:
            self._write(frame(HEADERS, END_HEADERS | END_STREAM, stream.id, stream.pending_trailers))
            stream.pending_trailers = None
            self._forget(stream)

    def _flush_all(self) -> None:
        for stream in list(self.blocked.values()):
            self._flush(stream)

    def _reset(self, stream: Stream, code: int) -> None:
        self._write(frame(RST_STREAM, 0, stream.id, struct.pack(">I", code)))
        self._drop(stream)

    def _drop(self, stream: Stream) -> None:
        """Nothing more is read or sent on ``stream``; its handler is cancelled (queued inference
        is skipped) and the stream forgotten once the handler has returned."""
        stream.reset = True
        stream.pending.clear()
        stream.pending_trailers = None
        self.waiting.pop(stream.id, None)
        self.blocked.pop(stream.id, None)
        if stream.task is None:
            self._forget(stream)
        else:
            stream.task.cancel()

    def _forget(self, stream: Stream) -> None:
        """The stream is done: its budget goes to the streams waiting for one."""
        self.streams.pop(stream.id, None)
        self.waiting.pop(stream.id, None)
        self.blocked.pop(stream.id, None)
        stream.body = None
        if stream.reserved:
            self.reserved -= stream.reserved
            stream.reserved = 0
            if self.transport is not None:
                self._admit_waiting()
        if self.close_when_idle and not self.streams:
            self.close()


async def serve(host: str, port: int, limits: H2Limits, dispatch: Dispatch,
                backlog: int = 128) -> tuple[Any, Registry]:
    """(the listening asyncio server, its connection registry)."""
    registry = Registry(limits, dispatch)
    server = await asyncio.get_running_loop().create_server(
        lambda: H2Connection(registry), host, port, backlog=backlog)
    return server, registry
