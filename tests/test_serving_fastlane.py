"""The infer fast lane: V2 binary infer requests answered by the HTTP protocol give the ASGI route's
answers byte for byte (statuses, bodies, headers, metrics), skip the ASGI app, and keep HTTP/1.1's
rules (pipelining, Connection: close, HTTP/1.0, disconnects, graceful stop)."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from edgerun.config import Settings
from edgerun.serving import ModelConfig, ServeConfig, create_app
from edgerun.serving.config import AuthConfig, LimitsConfig, ServerConfig

from .serving_helpers import V2_SAMPLES, ServerThread, binary_body

KEY = "fast-lane-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
BODY_LIMIT = 64 * 1024
SLOW_DELAY_US = 800_000  # the batcher holds a lone request this long: a request in flight to test with


class InferCounter:
    """Outermost ASGI middleware: counts the infer requests that reach the ASGI app."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.count = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/infer"):
            self.count += 1
        await self.app(scope, receive, send)


@dataclass
class Served:
    server: ServerThread
    counter: InferCounter


STALL_S = 1.0  # limits.header_timeout_s of these servers: also the longest silence inside a lane body


def _config(echo_model: Path, lane: bool) -> ServeConfig:
    return ServeConfig(settings=Settings(), server=ServerConfig(infer_fast_lane=lane),
                       auth=AuthConfig(api_key=KEY),
                       limits=LimitsConfig(max_body_bytes=BODY_LIMIT, header_timeout_s=STALL_S),
                       models=(ModelConfig("echo", path=str(echo_model), backend="onnxruntime", threads=1),
                               ModelConfig("slow", path=str(echo_model), backend="onnxruntime", threads=1,
                                           dynamic_batching=True, max_queue_delay_us=SLOW_DELAY_US)))


def _serve(echo_model: Path, lane: bool) -> Iterator[Served]:
    app = create_app(_config(echo_model, lane))
    counters: list[InferCounter] = []

    def counting(inner: Any) -> InferCounter:  # Starlette builds the middleware stack on first use
        counters.append(InferCounter(inner))
        return counters[-1]

    app.add_middleware(counting)
    with ServerThread(app, headers=AUTH) as server:
        server.wait_ready()
        yield Served(server, counters[0])


@pytest.fixture(scope="module")
def lane(echo_model: Path) -> Iterator[Served]:
    yield from _serve(echo_model, True)


@pytest.fixture(scope="module")
def asgi(echo_model: Path) -> Iterator[Served]:
    yield from _serve(echo_model, False)


def _echo(replace: dict[str, tuple[str, np.ndarray]] | None = None,
          **kwargs: Any) -> tuple[bytes, dict[str, str]]:
    """A binary request for the echo model: every input, ``replace`` swapping (datatype, array) of some."""
    chosen = {t: (t, a) for t, a in V2_SAMPLES.items()} | (replace or {})
    body, length = binary_body([(f"in_{t}", d, a) for t, (d, a) in chosen.items()], **kwargs)
    return body, {"Inference-Header-Content-Length": str(length), **AUTH}


def _with_length(headers: dict[str, str], header_length: int) -> dict[str, str]:
    return {**headers, "Inference-Header-Content-Length": str(header_length)}


def _corpus() -> list[tuple[str, str, bytes, dict[str, str], bool]]:
    """(case, path, body, headers, served by the lane)."""
    ok_body, ok_headers = _echo()
    length = int(ok_headers["Inference-Header-Content-Length"])
    header = json.loads(ok_body[:length])
    header["inputs"][10]["parameters"]["binary_data_size"] = 4  # in_FP32 claims 4 of its 8 bytes
    short = json.dumps(header).encode()
    one_body, one_length = binary_body([("in_FP32", "FP32", V2_SAMPLES["FP32"])])
    path = "/v2/models/echo/infer"
    return [
        ("binary, every datatype", path, ok_body, ok_headers, True),
        ("version 1", "/v2/models/echo/versions/1/infer", ok_body, ok_headers, True),
        ("query string", path + "?x=1", ok_body, ok_headers, True),
        ("JSON outputs", path, *_echo(outputs=[{"name": "out_FP32", "parameters": {"binary_data": False}},
                                               {"name": "out_BYTES", "parameters": {"binary_data": False}}]),
         True),
        ("classification", path, *_echo(outputs=[{"name": "out_FP32", "parameters": {"classification": 1}}]),
         True),
        ("unknown output", path, *_echo(outputs=[{"name": "nope"}]), True),
        ("wrong datatype", path, *_echo({"FP32": ("FP64", V2_SAMPLES["FP64"])}), True),
        ("wrong shape", path, *_echo({"FP32": ("FP32", np.zeros((1, 3), np.float32))}), True),
        ("missing input", path, one_body, _with_length(ok_headers, one_length), True),
        ("size mismatch", path, short + ok_body[length:], _with_length(ok_headers, len(short)), True),
        ("header not JSON", path, b"{nope" + ok_body[length:], _with_length(ok_headers, 5), True),
        ("sequence parameter", path, *_echo(parameters={"sequence_id": 3}), True),
        ("raw binary, several inputs", path, ok_body[length:], _with_length(ok_headers, 0), True),
        ("header longer than body", path, ok_body, _with_length(ok_headers, len(ok_body) + 1), False),
        ("unknown model", "/v2/models/nope/infer", ok_body, ok_headers, False),
        ("unknown version", "/v2/models/echo/versions/7/infer", ok_body, ok_headers, False),
        ("percent-encoded name", "/v2/models/ech%6F/infer", ok_body, ok_headers, False),
        ("no key", path, ok_body, {"Inference-Header-Content-Length": str(length)}, False),
        ("wrong key", path, ok_body, {**ok_headers, "Authorization": "Bearer wrong-key-123"}, False),
        ("foreign origin", path, ok_body, {**ok_headers, "Origin": "http://evil.example"}, False),
        ("gzip body", path, gzip.compress(ok_body), {**ok_headers, "Content-Encoding": "gzip"}, False),
        ("over the body limit", path, ok_body + b"\0" * BODY_LIMIT, ok_headers, False),
        ("proxied", path, ok_body, {**ok_headers, "X-Forwarded-For": "10.0.0.7"}, False),
    ]


Answer = tuple[int, dict[str, str], bytes]  # status, headers, body


def _answer(served: Served, path: str, body: bytes, headers: dict[str, str]) -> Answer:
    with httpx.Client(base_url=served.server.url, timeout=30) as http:
        response = http.post(path, content=body, headers=headers)
    kept = {k: v for k, v in response.headers.items() if k not in ("date",)}
    return response.status_code, kept, response.content


OK_CASES = {"binary, every datatype", "version 1", "query string", "JSON outputs", "classification",
            "percent-encoded name", "proxied", "gzip body"}


@pytest.mark.parametrize("case", [c[0] for c in _corpus()])
def test_the_lane_answers_as_the_asgi_route_does_and_skips_the_app(lane: Served, asgi: Served,
                                                                   case: str) -> None:
    _, path, body, headers, in_lane = next(c for c in _corpus() if c[0] == case)
    before = lane.counter.count
    expected = _answer(asgi, path, body, headers)
    got = _answer(lane, path, body, headers)
    assert got == expected
    assert (got[0] == 200) == (case in OK_CASES), got
    assert lane.counter.count - before == (0 if in_lane else 1), "served by the lane" if in_lane else "ASGI"


def _infer_metrics(served: Served) -> list[str]:
    text = served.server.client().get("/metrics").text
    return sorted(line for line in text.splitlines()
                  if line.startswith(("edgerun_requests_total", "edgerun_request_seconds_count"))
                  and "/infer" in line)


def test_the_lane_counts_requests_under_the_same_routes_and_models(echo_model: Path) -> None:
    seen = []
    for on in (True, False):
        generator = _serve(echo_model, on)
        served = next(generator)
        for _, path, body, headers, _ in _corpus():
            _answer(served, path, body, headers)
        stats = served.server.client().get("/v2/models/echo/stats").json()["model_stats"][0]
        failed = stats["inference_stats"]["fail"]["count"]
        seen.append((_infer_metrics(served), stats["inference_count"], failed))
        generator.close()
    assert seen[0] == seen[1]
    assert any('status="200"' in line for line in seen[0][0]) and seen[0][1] > 0 and seen[0][2] > 0


# ---- HTTP/1.1 on a raw socket ------------------------------------------------------------------

def _request(path: str, body: bytes, headers: dict[str, str], version: str = "1.1") -> bytes:
    lines = [f"POST {path} HTTP/{version}", "Host: test", f"Content-Length: {len(body)}",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _read_responses(sock: socket.socket, count: int) -> list[Answer]:
    """``count`` complete responses from ``sock`` (Content-Length framed), in arrival order."""
    data, answers = b"", []
    while len(answers) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end].decode("latin-1").split("\r\n")
            headers = dict(line.lower().split(": ", 1) for line in head[1:])
            end = head_end + 4 + int(headers["content-length"])
            if len(data) >= end:
                answers.append((int(head[0].split()[1]), headers, data[head_end + 4:end]))
                data = data[end:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(answers)} of {count} responses"
        data += chunk
    return answers


def _connect(served: Served) -> socket.socket:
    return socket.create_connection(("127.0.0.1", served.server.port), timeout=30)


def test_pipelined_requests_are_answered_in_order(lane: Served) -> None:
    body, headers = _echo()
    health = b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\n\r\n"
    slow = _request("/v2/models/slow/infer", body, headers)
    fast = _request("/v2/models/echo/infer", body, headers)
    with _connect(lane) as sock:
        sock.sendall(slow + health + fast + fast)
        answers = _read_responses(sock, 4)
    assert [status for status, _, _ in answers] == [200, 200, 200, 200], answers
    assert answers[1][2] == b'{"live":true}'
    models = [json.loads(answers[i][2]) for i in (0, 2, 3)]
    assert [m["model_name"] for m in models] == ["slow", "echo", "echo"]
    assert models[0]["outputs"] == models[1]["outputs"] == models[2]["outputs"]


@pytest.mark.parametrize(("version", "extra"), [("1.1", {"Connection": "close"}), ("1.0", {})])
def test_a_request_that_asks_for_close_is_answered_then_closed(lane: Served, version: str,
                                                              extra: dict[str, str]) -> None:
    body, headers = _echo()
    with _connect(lane) as sock:
        sock.sendall(_request("/v2/models/echo/infer", body, {**headers, **extra}, version))
        [(status, answer_headers, _)] = _read_responses(sock, 1)
        assert status == 200 and answer_headers.get("connection") == "close"
        assert sock.recv(1) == b"", "the server closes the connection after the answer"


def _inflight(served: Served) -> float:
    text = served.server.client().get("/metrics").text
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith("edgerun_inflight")))


def test_clients_that_leave_mid_body_or_mid_inference_cost_nothing_lasting(lane: Served) -> None:
    body, headers = _echo()
    stats = "/v2/models/slow/stats"
    done_before = lane.server.client().get(stats).json()["model_stats"][0]["inference_count"]
    with _connect(lane) as sock:  # leaves with half a body sent
        request = _request("/v2/models/echo/infer", body, headers)
        sock.sendall(request[:-len(body) // 2])
    with _connect(lane) as sock:  # leaves while its request waits in the batcher
        sock.sendall(_request("/v2/models/slow/infer", body, headers))
    deadline = time.monotonic() + 10
    while lane.server.client().get(stats).json()["model_stats"][0]["inference_count"] == done_before:
        assert time.monotonic() < deadline, "the abandoned request still ran to its end"
        time.sleep(0.05)
    # nothing is left in flight but the metrics request that reads the gauge
    assert _inflight(lane) == 1.0
    assert _answer(lane, "/v2/models/echo/infer", body, headers)[0] == 200


def test_a_graceful_stop_waits_for_a_lane_request_in_flight(echo_model: Path) -> None:
    generator = _serve(echo_model, True)
    served = next(generator)
    body, headers = _echo()
    answers: list[Answer] = []
    with _connect(served) as sock:
        sock.sendall(_request("/v2/models/slow/infer", body, headers))
        reader = threading.Thread(target=lambda: answers.extend(_read_responses(sock, 1)))
        reader.start()
        deadline = time.monotonic() + 10
        while _inflight(served) < 2:  # the slow request and this metrics request
            assert time.monotonic() < deadline
            time.sleep(0.01)
        started = time.monotonic()
        generator.close()  # uvicorn's graceful stop
        reader.join(timeout=30)
    assert answers and answers[0][0] == 200 and answers[0][1].get("connection") == "close"
    assert time.monotonic() - started < SLOW_DELAY_US / 1e6 + 10


# ---- bodies larger than one read: received straight into the tensor buffer -----------------------

def _mobilenet_request(seed: int) -> tuple[bytes, np.ndarray]:
    image = np.random.default_rng(seed).standard_normal((1, 3, 224, 224)).astype(np.float32)
    body, length = binary_body([("input", "FP32", image)], parameters={"binary_data_output": True})
    headers = {"Inference-Header-Content-Length": str(length)}
    return _request("/v2/models/mobilenet_v2/infer", body, headers), image


def _logits(answer: Answer) -> np.ndarray:
    status, headers, body = answer
    assert status == 200, body[:300]
    length = int(headers["inference-header-content-length"])
    return np.frombuffer(body[length:], dtype=np.float32).reshape(1, 1000)


def test_a_body_sent_in_slow_pieces_is_the_tensor_the_model_sees(served: ServerThread,
                                                                  references: dict[str, Any]) -> None:
    request, image = _mobilenet_request(1)
    expected = references["mobilenet_v2"].infer({"input": image})["logits"]
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        cuts = [0, 300, 70_000, 70_001, 400_000, len(request)]  # headers split, then the body in pieces
        for start, end in zip(cuts, cuts[1:], strict=False):
            sock.sendall(request[start:end])
            time.sleep(0.05)
        np.testing.assert_allclose(_logits(_read_responses(sock, 1)[0]), expected, rtol=1e-4, atol=1e-4)


def test_pipelined_large_bodies_each_get_their_own_answer(served: ServerThread,
                                                          references: dict[str, Any]) -> None:
    requests = [_mobilenet_request(seed) for seed in (2, 3, 4)]
    health = b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\n\r\n"
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(requests[0][0] + requests[1][0] + health + requests[2][0])
        answers = _read_responses(sock, 4)
    assert answers[2][2] == b'{"live":true}'
    for answer, (_, image) in zip([answers[0], answers[1], answers[3]], requests, strict=True):
        expected = references["mobilenet_v2"].infer({"input": image})["logits"]
        np.testing.assert_allclose(_logits(answer), expected, rtol=1e-4, atol=1e-4)


def test_a_client_that_leaves_mid_body_leaves_the_server_answering(served: ServerThread,
                                                                   references: dict[str, Any]) -> None:
    request, _ = _mobilenet_request(5)
    for sent in (200_000, len(request) - 1):
        with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
            sock.sendall(request[:sent])
    request, image = _mobilenet_request(6)
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(request)
        got = _logits(_read_responses(sock, 1)[0])
    np.testing.assert_allclose(got, references["mobilenet_v2"].infer({"input": image})["logits"],
                               rtol=1e-4, atol=1e-4)


def test_a_body_that_goes_silent_is_answered_408_and_frees_its_connection(lane: Served) -> None:
    body, headers = _echo()
    request = _request("/v2/models/echo/infer", body + b"\0" * 40_000, headers)  # declared longer than sent
    started = time.monotonic()
    with _connect(lane) as sock:
        sock.sendall(request[:-20_000])
        [(status, _, answer)] = _read_responses(sock, 1)
        assert sock.recv(1) == b"", "the connection is closed after the 408"
    waited = time.monotonic() - started
    assert status == 408 and b"request body stopped arriving" in answer
    assert STALL_S <= waited < STALL_S + 5
    assert _inflight(lane) == 1.0  # the metrics request reading the gauge
    assert _answer(lane, "/v2/models/echo/infer", body, headers)[0] == 200
