"""edgerun's HTTP/2 transport for gRPC (grpc_h2.py) against a second HTTP/2 implementation (the h2
package) and hand-made hostile frames: flow control both ways, the budgets, and that a hostile
connection costs only itself."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings
import numpy as np
import pytest
import tritonclient.grpc as tritonclient_grpc
from tritonclient.grpc import service_pb2

from edgerun.config import Settings
from edgerun.serving import ModelConfig, ServeConfig, create_app, grpc_h2
from edgerun.serving.config import LimitsConfig, ServerConfig

from .serving_helpers import ServerThread

BODY_LIMIT = 1024 * 1024
STALL_S = 0.5
MAX_CONNECTIONS = 6
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GOAWAY, RST_STREAM = 7, 3


def write_echo_uint8(path: Path) -> Path:
    """An ONNX Identity: in_UINT8 [batch, n] -> out_UINT8."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["in_UINT8"], ["out_UINT8"])], "echo",
                              [helper.make_tensor_value_info("in_UINT8", TensorProto.UINT8, ["batch", "n"])],
                              [helper.make_tensor_value_info("out_UINT8", TensorProto.UINT8, ["batch", "n"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture(scope="module")
def grpc_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with a one-input echo model, a 1 MiB body limit, a 0.5 s stall deadline and 6 connections."""
    model = write_echo_uint8(tmp_path_factory.mktemp("echo_uint8") / "echo.onnx")
    config = ServeConfig(settings=Settings(), server=ServerConfig(grpc_port=0),
                         limits=LimitsConfig(max_body_bytes=BODY_LIMIT, header_timeout_s=STALL_S,
                                             max_connections=MAX_CONNECTIONS),
                         models=(ModelConfig("echo", path=str(model), backend="onnxruntime", threads=1),))
    app = create_app(config)
    with ServerThread(app) as server:
        server.wait_ready()
        yield f"127.0.0.1:{app.state.grpc_port}"


@dataclass
class Reply:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    trailers: dict[bytes, bytes] = field(default_factory=dict)
    reset: int | None = None

    @property
    def status(self) -> int:
        fields = self.trailers or self.headers  # Trailers-Only answers carry grpc-status in the headers
        return int(fields[b"grpc-status"])

    def message(self) -> bytes:
        compressed, size = struct.unpack(">BI", self.data[:5])
        assert compressed == 0 and len(self.data) == 5 + size
        return bytes(self.data[5:])


class Client:
    """A gRPC client made of the h2 package: it speaks HTTP/2 correctly, with the window it is given."""

    def __init__(self, address: str, window: int = 65_535, receive_buffer: int | None = None) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.socket()
        if receive_buffer:  # set before connecting: it bounds the TCP window the kernel offers
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(10)
        self.sock.connect((host, int(port)))
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config)
        self.h2.initiate_connection()
        self.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        if window > 65_535:  # the connection's window too
            self.h2.increment_flow_control_window(window - 65_535)
        self.read_size = 1 << 20
        self.replies: dict[int, Reply] = {}
        self.ended: set[int] = set()
        self.settled = False
        self._send()
        while not self.settled:  # the server's SETTINGS and connection window
            self._read()

    def _send(self) -> None:
        self.sock.sendall(self.h2.data_to_send())

    def _read(self) -> None:
        data = self.sock.recv(self.read_size)
        assert data, "the server closed the connection"
        for event in self.h2.receive_data(data):
            reply = self.replies.get(getattr(event, "stream_id", 0) or 0)
            if isinstance(event, h2.events.RemoteSettingsChanged):
                self.settled = True
            elif isinstance(event, h2.events.ResponseReceived) and reply is not None:
                reply.headers = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived) and reply is not None:
                reply.data += event.data
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.TrailersReceived) and reply is not None:
                reply.trailers = dict(event.headers)
            elif isinstance(event, h2.events.StreamReset) and reply is not None:
                reply.reset = event.error_code
                self.ended.add(event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.ended.add(event.stream_id)
        self._send()

    def start(self, method: str, body: bytes, headers: tuple[tuple[bytes, bytes], ...] = (),
              end: bool = True) -> int:
        stream = self.h2.get_next_available_stream_id()
        self.replies[stream] = Reply()
        self.h2.send_headers(stream, [
            (b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"edgerun"),
            (b":path", f"/inference.GRPCInferenceService/{method}".encode()),
            (b"content-type", b"application/grpc"), (b"te", b"trailers"), *headers])
        self.send(stream, body, end)
        return stream

    def send(self, stream: int, body: bytes, end: bool = True) -> None:
        """``body`` on ``stream`` as its window allows (waiting for more), then END_STREAM."""
        while body and stream not in self.ended:
            size = min(len(body), self.h2.local_flow_control_window(stream), self.h2.max_outbound_frame_size)
            if not size:
                self._read()  # wait for window
                continue
            self.h2.send_data(stream, body[:size])
            body = body[size:]
            self._send()
        if end and stream not in self.ended:
            self.h2.end_stream(stream)
        self._send()

    def wait(self, stream: int) -> Reply:
        deadline = time.monotonic() + 10
        while stream not in self.ended:
            assert time.monotonic() < deadline
            self._read()
        return self.replies[stream]

    def call(self, method: str, message: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Reply:
        return self.wait(self.start(method, grpc_message(message), headers))

    def close(self) -> None:
        self.sock.close()


def grpc_message(message: bytes, compressed: int = 0, size: int | None = None) -> bytes:
    return struct.pack(">BI", compressed, len(message) if size is None else size) + message


def echo_request(size: int) -> tuple[bytes, np.ndarray]:
    """A ModelInfer request for the echo model with ``size`` bytes of input, and that input."""
    array = (np.arange(size) % 251).astype(np.uint8).reshape(1, size)
    request = service_pb2.ModelInferRequest(model_name="echo")
    request.inputs.add(name="in_UINT8", datatype="UINT8", shape=[1, size])
    request.raw_input_contents.append(array.tobytes())
    request.outputs.add(name="out_UINT8")
    return request.SerializeToString(), array


def served_echo(address: str) -> None:
    """A normal call on a new connection succeeds (the server is up and answering)."""
    client = Client(address)
    try:
        message, array = echo_request(3)
        reply = client.call("ModelInfer", message)
        assert reply.status == 0
        response = service_pb2.ModelInferResponse.FromString(reply.message())
        assert response.raw_output_contents[0] == array.tobytes()
    finally:
        client.close()


def closed_with(sock: socket.socket, code: int | None) -> bool:
    """Read until the server closes; whether it sent GOAWAY with ``code`` first (None: any or none)."""
    sock.settimeout(5)
    received = bytearray()
    while data := sock.recv(65536):
        received += data
    if code is None:
        return True
    offset = 0
    while offset + 9 <= len(received):
        length = int.from_bytes(received[offset:offset + 3], "big")
        kind = received[offset + 3]
        if kind == GOAWAY:
            return bool(struct.unpack(">I", received[offset + 13:offset + 17])[0] == code)
        offset += 9 + length
    return False


def raw_connection(address: str, frames: bytes = b"", preface: bytes = PREFACE) -> socket.socket:
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(preface + frames)
    return sock


def frame(kind: int, flags: int, stream: int, payload: bytes = b"", length: int | None = None) -> bytes:
    size = len(payload) if length is None else length
    return size.to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


SETTINGS = frame(4, 0, 0)


def test_a_large_answer_waits_for_a_small_client_window(grpc_address: str) -> None:
    client = Client(grpc_address, window=16_384)
    try:
        message, array = echo_request(300_000)  # 300 KB in, 300 KB out: 19 windows' worth
        reply = client.call("ModelInfer", message)
        assert reply.status == 0
        response = service_pb2.ModelInferResponse.FromString(reply.message())
        assert response.raw_output_contents[0] == array.tobytes()
        assert list(response.outputs[0].shape) == [1, 300_000]
    finally:
        client.close()


def test_calls_in_flight_on_one_connection_each_get_their_own_answer(grpc_address: str) -> None:
    client = Client(grpc_address)
    try:
        requests = {client.start("ModelInfer", grpc_message(echo_request(rows)[0])): rows
                    for rows in (1, 10_000, 7, 120_000, 2)}
        for stream, rows in requests.items():
            response = service_pb2.ModelInferResponse.FromString(client.wait(stream).message())
            assert response.raw_output_contents[0] == echo_request(rows)[1].tobytes()
    finally:
        client.close()


def test_refusals_are_grpc_statuses_and_the_connection_lives_on(grpc_address: str) -> None:
    client = Client(grpc_address)
    message = echo_request(2)[0]
    try:
        too_big = client.wait(client.start("ModelInfer", grpc_message(b"", size=BODY_LIMIT + 1)))
        assert too_big.status == 8 and b"limits.max_body_bytes" in too_big.headers[b"grpc-message"]
        compressed = client.wait(client.start("ModelInfer", grpc_message(message, compressed=1)))
        assert compressed.status == 12
        two = client.wait(client.start("ModelInfer", grpc_message(message) + grpc_message(message)))
        assert two.status == 12
        assert client.wait(client.start("ModelInfer", b"")).status == 13  # no message at all
        assert client.wait(client.start("ModelInfer", grpc_message(message)[:-1])).status == 13
        assert client.call("NoSuchMethod", b"").status == 12
        assert client.call("ModelInfer", b"\xff" * 12).status == 3
        unknown = service_pb2.ModelInferRequest(model_name="nope").SerializeToString()
        missing = client.call("ModelInfer", unknown)
        assert missing.status == 5 and b"nope" in missing.headers[b"grpc-message"]
        late = client.call("ModelInfer", message, headers=((b"grpc-timeout", b"1n"),))
        assert late.status == 4
        not_grpc = client.wait(client.start("ModelInfer", grpc_message(message),
                                            headers=((b"content-type", b"application/json"),)))
        assert not_grpc.headers[b":status"] == b"415"
        ok = client.call("ModelInfer", message)  # the same connection still answers
        assert ok.status == 0
    finally:
        client.close()


@pytest.mark.parametrize(("frames", "preface", "code"), [
    pytest.param(b"GET / HTTP/1.1\r\n\r\n", b"", 0x1, id="HTTP/1.1 instead of the preface"),
    pytest.param(frame(1, 4, 1, b"\x82"), PREFACE, 0x1, id="HEADERS before SETTINGS"),
    pytest.param(SETTINGS + frame(0, 0, 1, length=2**24 - 1), PREFACE, 0x6, id="a 16 MiB frame"),
    pytest.param(SETTINGS + frame(1, 0, 1, b"\x82") + frame(9, 0, 1, b"\x00" * 10_000) * 2, PREFACE, 0x1,
                 id="a header block past max_header_bytes"),
    pytest.param(SETTINGS + frame(1, 0, 1, length=60_000), PREFACE, 0x1, id="a 60 KB HEADERS frame"),
    pytest.param(SETTINGS + frame(0x20, 0, 0, length=2**21), PREFACE, 0x6, id="a 2 MiB frame of a new type"),
    pytest.param(SETTINGS + frame(0, 0, 0, b"") * 1001, PREFACE, 0x1, id="DATA on stream 0"),
    pytest.param(SETTINGS + frame(1, 4, 1, b"\xff\xff\xff\xff"), PREFACE, 0x9, id="undecodable HPACK"),
    pytest.param(SETTINGS + frame(1, 4, 2, b"\x82"), PREFACE, 0x1, id="an even stream id"),
    pytest.param(SETTINGS + frame(0, 0, 5, b"xx"), PREFACE, 0x1, id="DATA on an idle stream"),
    pytest.param(SETTINGS + frame(5, 4, 1, b"\x00" * 4), PREFACE, 0x1, id="PUSH_PROMISE from a client"),
    pytest.param(SETTINGS + frame(6, 0, 0, b"\x00" * 7), PREFACE, 0x6, id="a 7-byte PING"),
    pytest.param(SETTINGS + frame(8, 0, 0, b"\x00" * 4), PREFACE, 0x3, id="a zero window update"),
    pytest.param(SETTINGS + frame(8, 0, 0, b"\x7f\xff\xff\xff"), PREFACE, 0x3, id="a window past 2^31-1"),
    pytest.param(SETTINGS + frame(4, 0, 0, struct.pack(">HI", 5, 100)), PREFACE, 0x1,
                 id="max frame size 100"),
    pytest.param(SETTINGS + frame(3, 0, 9, b"\x00" * 4), PREFACE, 0x1, id="RST_STREAM of an idle stream"),
    pytest.param(SETTINGS + frame(1, 4, 0, b"\x82"), PREFACE, 0x1, id="HEADERS on stream 0"),
    pytest.param(SETTINGS + frame(1, 5, 1, b"\x00\x01x\x01y" * 200), PREFACE, 0xB,
                 id="200 headers in a block"),
    pytest.param(SETTINGS + frame(4, 0, 0, struct.pack(">HI", 4, 1) * 200), PREFACE, 0xB,
                 id="1,200 bytes of SETTINGS"),
])
def test_a_hostile_connection_gets_goaway_and_costs_only_itself(grpc_address: str, frames: bytes,
                                                                preface: bytes, code: int) -> None:
    with raw_connection(grpc_address, frames, preface) as sock:
        assert closed_with(sock, code)
    served_echo(grpc_address)


def test_a_stalled_request_is_closed_and_an_idle_connection_is_not(grpc_address: str) -> None:
    idle = Client(grpc_address)
    stalled = Client(grpc_address)
    try:
        message = grpc_message(echo_request(1000)[0])
        stalled.start("ModelInfer", message[:100], end=False)  # the rest never comes
        time.sleep(STALL_S * 3)
        assert closed_with(stalled.sock, 0x1)
        assert idle.call("ModelInfer", echo_request(1)[0]).status == 0
    finally:
        idle.close()
        stalled.close()


def test_rapid_resets_buy_no_unbounded_work(grpc_address: str) -> None:
    client = Client(grpc_address)
    try:
        message = grpc_message(echo_request(20_000)[0])
        for _ in range(500):  # each call is sent whole and cancelled at once
            stream = client.start("ModelInfer", message)
            client.h2.reset_stream(stream)
            client._send()
        start = time.monotonic()
        assert client.call("ModelInfer", echo_request(1)[0]).status == 0
        assert time.monotonic() - start < 10
    finally:
        client.close()
    served_echo(grpc_address)


def test_the_connection_cap_evicts_idle_connections_and_refuses_busy_ones(grpc_address: str) -> None:
    clients = [Client(grpc_address) for _ in range(MAX_CONNECTIONS)]
    try:
        newest = Client(grpc_address)  # one more: the oldest idle one makes room
        clients.append(newest)
        assert closed_with(clients[0].sock, None)
        assert newest.call("ModelInfer", echo_request(1)[0]).status == 0
        for client in clients[1:]:  # every connection has a request half sent
            client.start("ModelInfer", grpc_message(echo_request(1000)[0])[:50], end=False)
        time.sleep(0.2)  # the server has read them
        with raw_connection(grpc_address, SETTINGS) as refused:  # closed before a byte is answered
            refused.settimeout(5)
            with contextlib.suppress(ConnectionResetError):  # closed with our SETTINGS unread
                assert refused.recv(65536) == b""
    finally:
        for client in clients:
            client.close()
    time.sleep(STALL_S * 3)  # the stalled ones are closed by then; there is room again
    served_echo(grpc_address)


def test_a_client_that_gives_no_window_for_its_answer_is_closed(grpc_address: str) -> None:
    client = Client(grpc_address, window=0)
    try:
        client.start("ModelInfer", grpc_message(echo_request(1000)[0]))
        time.sleep(STALL_S * 3)
        assert closed_with(client.sock, 0x1)
    finally:
        client.close()
    served_echo(grpc_address)


def test_a_client_that_does_not_read_its_answers_is_closed(grpc_address: str) -> None:
    client = Client(grpc_address)
    calls, size = 24, 900_000
    try:
        for _ in range(calls):  # 21 MB of answers it never reads
            client.start("ModelInfer", grpc_message(echo_request(size)[0]))
        time.sleep(STALL_S * 6)
        client.sock.settimeout(5)
        received = 0
        with contextlib.suppress(ConnectionResetError):
            while data := client.sock.recv(1 << 20):
                received += len(data)
        assert received < calls * size  # cut off, not served to the end
    finally:
        client.close()
    served_echo(grpc_address)


def test_concurrent_calls_larger_than_the_budget_together_all_finish(grpc_address: str) -> None:
    # four 600 KB calls against a 1 MiB budget, from tritonclient (grpcio's client interleaves them)
    client = tritonclient_grpc.InferenceServerClient(grpc_address)

    def one(seed: int) -> bool:
        array = np.full((1, 600_000), seed, dtype=np.uint8)
        tensor = tritonclient_grpc.InferInput("in_UINT8", [1, 600_000], "UINT8")
        tensor.set_data_from_numpy(array)
        result = client.infer("echo", [tensor], client_timeout=20)
        return bool(np.array_equal(result.as_numpy("out_UINT8"), array))

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(one, range(4))) == [True] * 4


def test_interleaved_uploads_are_admitted_in_turn(grpc_address: str) -> None:
    client = Client(grpc_address)
    try:
        message = grpc_message(echo_request(600_000)[0])
        bodies = {client.start("ModelInfer", b"", end=False): bytearray(message) for _ in range(3)}
        streams = list(bodies)
        while any(bodies.values()):  # 16 KiB of each in turn, as gRPC's own clients send
            sent = False
            for stream, body in bodies.items():
                size = min(len(body), 16_384, client.h2.local_flow_control_window(stream))
                if size:
                    client.h2.send_data(stream, bytes(body[:size]), end_stream=size == len(body))
                    del body[:size]
                    sent = True
            client._send()
            if not sent:
                client._read()  # window comes as earlier calls finish
        for stream in streams:
            assert client.wait(stream).status == 0
    finally:
        client.close()


def test_declared_sizes_reserve_no_more_than_one_budget(grpc_address: str) -> None:
    client = Client(grpc_address)
    try:
        for _ in range(50):  # prefixes declaring 1 MiB each, and one byte of each message
            client.start("ModelInfer", grpc_message(b"x", size=BODY_LIMIT), end=False)
        time.sleep(0.2)
        connections = [c for c in gc.get_objects()
                       if isinstance(c, grpc_h2.H2Connection) and len(c.streams) == 50]
        assert len(connections) == 1
        allocated = sum(len(s.body) for s in connections[0].streams.values() if s.body is not None)
        assert allocated <= BODY_LIMIT + 5
    finally:
        client.close()


def test_pings_do_not_keep_a_stalled_call_open(grpc_address: str) -> None:
    client = Client(grpc_address)
    try:
        client.start("ModelInfer", grpc_message(echo_request(1000)[0])[:50], end=False)
        with pytest.raises((AssertionError, OSError)):  # closed under the PINGs
            for _ in range(int(STALL_S * 6 / 0.1)):
                client.h2.ping(b"12345678")
                client._send()
                client._read()
                time.sleep(0.1)
    finally:
        client.close()


def test_frames_on_a_stream_the_server_reset_are_ignored(grpc_address: str) -> None:
    client = Client(grpc_address)
    try:
        refused = client.start("ModelInfer", grpc_message(b"", size=BODY_LIMIT + 1), end=False)
        client.h2.send_headers(refused, [(b"x-trailer", b"1")], end_stream=True)  # before it saw the reset
        client._send()
        assert client.wait(refused).status == 8
        assert client.call("ModelInfer", echo_request(10)[0]).status == 0  # the connection lives
    finally:
        client.close()


def test_long_error_details_are_cut_to_fit_one_frame(grpc_address: str) -> None:
    client = Client(grpc_address)
    try:
        stream = client.h2.get_next_available_stream_id()
        client.replies[stream] = Reply()
        client.h2.send_headers(stream, [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"e"),
                                        (b":path", b"/" + "é%".encode() * 2000),
                                        (b"content-type", b"application/grpc")])
        client.h2.send_data(stream, grpc_message(b""), end_stream=True)
        client._send()
        reply = client.wait(stream)
        assert reply.status == 12 and len(reply.headers[b"grpc-message"]) < 8192
    finally:
        client.close()


def test_the_smallest_body_limit_still_serves(tmp_path: Path) -> None:
    model = write_echo_uint8(tmp_path / "echo.onnx")
    config = ServeConfig(settings=Settings(), server=ServerConfig(grpc_port=0),
                         limits=LimitsConfig(max_body_bytes=1024),
                         models=(ModelConfig("echo", path=str(model), backend="onnxruntime", threads=1),))
    app = create_app(config)
    with ServerThread(app) as server:
        server.wait_ready()
        client = Client(f"127.0.0.1:{app.state.grpc_port}")
        try:
            assert client.call("ModelInfer", echo_request(100)[0]).status == 0
            assert client.call("ModelInfer", echo_request(5000)[0]).status == 8
        finally:
            client.close()


# ---- the transport alone, under a dispatch function that echoes (slowly when asked) -----------

@pytest.fixture
def echo_transport() -> Iterator[tuple[str, grpc_h2.Registry, asyncio.AbstractEventLoop]]:
    """grpc_h2 on its own loop thread; its calls answer their message (`x-repeat` times, after
    `x-sleep` seconds)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def echo(call: grpc_h2.GrpcCall) -> grpc_h2.GrpcReply:
        asked = dict(call.metadata)
        await asyncio.sleep(float(asked.get("x-sleep", "0")))
        return grpc_h2.GrpcReply(message=bytes(call.message) * int(asked.get("x-repeat", "1")))

    limits = grpc_h2.H2Limits(max_message_bytes=BODY_LIMIT, stall_timeout_s=STALL_S)
    started = asyncio.run_coroutine_threadsafe(grpc_h2.serve("127.0.0.1", 0, limits, echo), loop)
    server, registry = started.result(10)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}", registry, loop
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.fixture
def echo_client(echo_transport: tuple[str, grpc_h2.Registry, asyncio.AbstractEventLoop]) -> Iterator[Client]:
    client = Client(echo_transport[0])
    try:
        yield client
    finally:
        client.close()


SLOW = ((b"x-sleep", str(STALL_S * 3).encode()),)


def test_calls_waiting_for_budget_behind_slow_ones_are_not_a_client_stall(echo_client: Client) -> None:
    messages = [bytes([n]) * 600_000 for n in (1, 2, 3)]  # 1.8 MB against a 1 MiB budget
    streams = [echo_client.start("ModelInfer", grpc_message(m), SLOW) for m in messages]
    assert [echo_client.wait(s).message() for s in streams] == messages


def test_padding_before_admission_is_given_back(echo_client: Client) -> None:
    message = bytes(range(256)) * 800  # 200 KB: more than the 64 KiB a stream starts with
    body = grpc_message(message)
    stream = echo_client.start("ModelInfer", b"", end=False)
    echo_client.h2.send_data(stream, body[:10_000], pad_length=100)
    echo_client.send(stream, body[10_000:])
    assert echo_client.wait(stream).message() == message


def test_calls_that_end_while_waiting_are_answered_in_turn(echo_client: Client) -> None:
    big = echo_client.start("ModelInfer", grpc_message(b"a" * 1_000_000), ((b"x-sleep", b"0.3"),))
    not_grpc = echo_client.start("ModelInfer", grpc_message(b"b" * 50_000),
                                 ((b"content-type", b"application/json"),))
    small = echo_client.start("ModelInfer", grpc_message(b"c" * 50_000))
    assert echo_client.wait(big).message() == b"a" * 1_000_000
    assert echo_client.wait(not_grpc).headers[b":status"] == b"415"
    assert echo_client.wait(small).message() == b"c" * 50_000


def test_empty_frames_and_pings_do_not_keep_a_stalled_call_open(echo_client: Client) -> None:
    stream = echo_client.start("ModelInfer", grpc_message(b"x" * 1000)[:50], end=False)
    with pytest.raises((AssertionError, OSError)):  # closed under the keep-alive noise
        for _ in range(int(STALL_S * 6 / 0.1)):
            echo_client.h2.send_data(stream, b"")
            echo_client.h2.ping(b"12345678")
            echo_client._send()
            echo_client._read()
            time.sleep(0.1)


def test_a_graceful_stop_waits_for_a_call_still_arriving(
        echo_transport: tuple[str, grpc_h2.Registry, asyncio.AbstractEventLoop]) -> None:
    address, registry, loop = echo_transport
    client = Client(address)
    try:
        body = grpc_message(b"z" * 30_000)
        stream = client.start("ModelInfer", body[:1000], end=False)
        time.sleep(0.1)
        stopping = asyncio.run_coroutine_threadsafe(registry.drain(5.0), loop)
        time.sleep(0.2)
        assert not stopping.done()  # it waits for the call its GOAWAY named
        # (the h2 package stops reading at GOAWAY; gRPC's clients finish the calls it names)
        client.sock.sendall(frame(0, 1, stream, body[1000:]))
        answer = bytearray()
        while data := client.sock.recv(1 << 20):
            answer += data
        assert answer.count(b"z") == 30_000 and answer.endswith(b"grpc-status\x010")  # answered in full
        stopping.result(5)
    finally:
        client.close()


def test_a_timeout_in_other_digits_is_ignored(echo_client: Client) -> None:
    reply = echo_client.call("ModelInfer", b"abc", headers=((b"grpc-timeout", b"\xb2S"),))  # superscript 2
    assert reply.status == 0 and reply.message() == b"abc"


def test_a_client_reading_a_large_answer_slowly_is_not_a_stall(
        echo_transport: tuple[str, grpc_h2.Registry, asyncio.AbstractEventLoop]) -> None:
    client = Client(echo_transport[0], window=32 << 20, receive_buffer=64 * 1024)
    try:  # 8 MB of answer: more than the kernel holds, so the server's transport pauses writing
        stream = client.start("ModelInfer", grpc_message(b"q" * 500_000), ((b"x-repeat", b"16"),))
        client.read_size = 64 * 1024
        deadline = time.monotonic() + 30
        while stream not in client.ended:  # read at about 3 MB/s: several stall periods
            assert time.monotonic() < deadline
            client._read()
            time.sleep(0.02)
        assert client.replies[stream].message() == b"q" * 8_000_000
    finally:
        client.close()


def test_answers_a_client_gives_no_window_for_stop_further_admission(echo_client: Client) -> None:
    echo_client.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    for _ in range(20):  # 1.2 MB of calls against a 1 MiB budget, each within its first window
        echo_client.start("ModelInfer", grpc_message(b"w" * 60_000), ((b"x-sleep", b"0.1"),))
    time.sleep(STALL_S * 0.6)  # answered by now, none sent; not yet closed for the stall
    (connection,) = [c for c in gc.get_objects() if isinstance(c, grpc_h2.H2Connection) and c.streams]
    held = sum(len(s.pending) for s in connection.streams.values())
    assert held == 17 * 60_005  # the 17 calls the budget admitted, answered and unsent
    assert len(connection.waiting) == 3  # their answers hold the budget: the rest stay unread


def test_a_call_the_client_resets_is_cancelled(
        echo_transport: tuple[str, grpc_h2.Registry, asyncio.AbstractEventLoop], echo_client: Client) -> None:
    stream = echo_client.start("ModelInfer", grpc_message(b"r" * 1000), ((b"x-sleep", b"5"),))
    time.sleep(0.1)
    (connection,) = echo_transport[1].connections
    assert connection.streams  # the call is in its handler
    echo_client.h2.reset_stream(stream)
    echo_client._send()
    time.sleep(0.2)
    assert not connection.streams and not connection.reserved  # its handler is gone, not asleep
    assert echo_client.call("ModelInfer", b"next").message() == b"next"


def test_calls_reset_at_once_give_their_budget_back(
        echo_transport: tuple[str, grpc_h2.Registry, asyncio.AbstractEventLoop], echo_client: Client) -> None:
    message = grpc_message(b"k" * 100_000)  # 300 of them: 30 MB through a 1 MiB budget
    for _ in range(300):
        stream = echo_client.start("ModelInfer", message, ((b"x-sleep", b"5"),))
        echo_client.h2.reset_stream(stream)
        echo_client._send()
    assert echo_client.call("ModelInfer", b"after").message() == b"after"
    (connection,) = echo_transport[1].connections
    assert not connection.streams and not connection.reserved
