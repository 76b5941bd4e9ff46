"""Connection budgets of a real `edgerun serve` process on 127.0.0.1: silent connections, oversized and
slow headers, the connection cap; repeated warnings logged once with a count; graceful stop timing."""

from __future__ import annotations

import logging
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgerun.serving import create_app
from edgerun.serving.config import LimitsConfig, ServeConfig, ServerConfig
from edgerun.serving.logfilter import RepeatFilter
from edgerun.serving.runner import uvicorn_config

from .test_serving_ops import ServeProcess

LIMITS = {"max_connections": 16, "header_timeout_s": 2.0, "keep_alive_timeout_s": 1.0,
          "max_header_bytes": 4096}
CONFIG = f"""
server:
  graceful_timeout_s: 5
limits: {LIMITS}
models:
  - name: blazeface
    backend: onnxruntime
    threads: 1
"""


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServeProcess, int]]:
    """`edgerun serve` with small connection budgets; yields the process and its port."""
    config = tmp_path_factory.mktemp("limits") / "config.yaml"
    config.write_text(CONFIG)
    server = ServeProcess("--config", str(config))
    try:
        port = server.port()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            deadline = time.monotonic() + 60
            while http.get("/v2/health/ready").status_code != 200:
                assert time.monotonic() < deadline and server.process.poll() is None, "".join(server.log)
                time.sleep(0.05)
        yield server, port
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0, "".join(server.log[-20:])
    finally:
        server.stop()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.settimeout(10)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes (the socket's timeout bounds the wait)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _live(port: int, timeout: float = 10.0) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=timeout)


def test_silent_connections_cannot_lock_out_a_real_request(limited: tuple[ServeProcess, int]) -> None:
    server, port = limited
    log_lines_before = len(server.log)
    silent = [_connect(port) for _ in range(200)]  # 12x the cap; none sends a byte
    try:
        time.sleep(0.2)
        # At the cap, each new connection closes the oldest silent one: a talking client gets in at once.
        assert _live(port, timeout=5).json() == {"live": True}
        # Every silent one is closed without a response: evicted, or at the header deadline.
        assert all(_read_all(s) == b"" for s in silent)
    finally:
        for sock in silent:
            sock.close()
    assert len(server.log) - log_lines_before <= 3, server.log[log_lines_before:]  # access log lines only


def test_when_every_connection_talks_a_new_one_gets_503_with_retry_after(
        limited: tuple[ServeProcess, int]) -> None:
    server, port = limited
    log_lines_before = len(server.log)
    talkers = []
    try:
        for _ in range(LIMITS["max_connections"]):
            talkers.append(_connect(port))
            talkers[-1].sendall(b"GET /v2/health/live HTTP/1.1\r\n")  # and the rest never comes
        time.sleep(0.2)
        refused = [_live(port, timeout=5) for _ in range(10)]  # well within the 2 s header deadline
        assert all(r.status_code == 503 and r.headers["retry-after"] == "1" for r in refused)
        assert "too many connections" in refused[0].json()["error"]
        # the header deadline ends the talkers (408; one whose first bytes were late may have made
        # room for a newer connection), and the service answers again
        answers = [_read_all(s) for s in talkers]
        assert all(a.startswith(b"HTTP/1.1 408 ") or a == b"" for a in answers)
        assert sum(a.startswith(b"HTTP/1.1 408 ") for a in answers) >= LIMITS["max_connections"] - 2
    finally:
        for sock in talkers:
            sock.close()
    assert _live(port).status_code == 200
    # 10 refusals: one warning line, not one per connection (the rest are counted in the next one)
    refusals = [line for line in server.log[log_lines_before:] if "connection refused" in line]
    assert len(refusals) == 1, refusals


def test_a_thousand_silent_connections_leave_a_1024_descriptor_server_answering(tmp_path: Path) -> None:
    """The issue's case with the default limits: before, the descriptors ran out and real requests
    timed out while the log grew by megabytes."""
    config = tmp_path / "config.yaml"
    config.write_text("models: []\n")
    server = ServeProcess("--config", str(config), nofile=1024)
    silent: list[socket.socket] = []
    try:
        port = server.port()
        silent = [_connect(port) for _ in range(1100)]
        assert _live(port, timeout=5).json() == {"live": True}
        assert all(_read_all(s) == b"" for s in silent[:-100])  # made room, oldest first
    finally:
        for sock in silent:
            sock.close()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
        server.stop()
    assert not [line for line in server.log if "Too many open files" in line or "ERROR" in line], \
        server.log[-10:]
    assert len(server.log) < 30, len(server.log)


def test_oversized_headers_get_431_before_they_are_read_whole(limited: tuple[ServeProcess, int]) -> None:
    _, port = limited
    with _connect(port) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(2000):  # up to 128 MB, but the server closes after its 4 KiB budget
                sock.sendall(b"a" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 ") and b"max_header_bytes" in answer, answer[:200]
    assert _live(port).status_code == 200


def test_slow_headers_get_408(limited: tuple[ServeProcess, int]) -> None:
    _, port = limited
    with _connect(port) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"header_timeout_s" in answer, answer[:200]


def test_a_body_that_goes_silent_on_an_asgi_route_gets_408(limited: tuple[ServeProcess, int]) -> None:
    _, port = limited
    with _connect(port) as sock:  # a JSON body (the ASGI route, not the fast lane): 10 of 1000 bytes
        sock.sendall(b"POST /v2/models/blazeface/infer HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"inputs\":")
        started = time.monotonic()
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"request body stopped arriving" in answer, answer[:200]
    assert LIMITS["header_timeout_s"] <= time.monotonic() - started < 3 * LIMITS["header_timeout_s"]
    assert _live(port).status_code == 200


def test_a_slow_but_steady_body_is_not_cut_off(limited: tuple[ServeProcess, int]) -> None:
    _, port = limited
    body = b'{"inputs": [], "padding": "' + b"x" * 100 + b'"}'
    pieces = [body[i:i + 30] for i in range(0, len(body), 30)]  # one piece a second: 5 s in all
    with _connect(port) as sock:
        sock.sendall(b"POST /v2/models/blazeface/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        for piece in pieces:
            time.sleep(LIMITS["header_timeout_s"] / 2)
            sock.sendall(piece)
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]  # judged on its content, not timed out


def test_keep_alive_connections_are_closed_when_idle(limited: tuple[ServeProcess, int]) -> None:
    _, port = limited
    with _connect(port) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = _read_all(sock)  # the response, then the close after keep_alive_timeout_s
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'{"live":true}')


def test_uvicorn_runs_with_the_configured_budgets_and_a_fractional_graceful_timeout() -> None:
    config = ServeConfig(server=ServerConfig(graceful_timeout_s=0.9),
                         limits=LimitsConfig(keep_alive_timeout_s=2.5, max_connections=7))
    built = uvicorn_config(create_app(config), config)
    assert built.timeout_graceful_shutdown == 0.9   # was int(0.9) == 0: no grace at all
    assert built.timeout_keep_alive == 2.5
    assert [c.__name__ for c in built.http.__mro__[:2]] == ["LaneProtocol", "BudgetedProtocol"]
    off = ServeConfig(server=ServerConfig(infer_fast_lane=False))
    assert uvicorn_config(create_app(off), off).http.__name__ == "BudgetedProtocol"


def test_a_repeated_warning_is_logged_once_per_window_with_a_count() -> None:
    now = [0.0]
    repeat = RepeatFilter(window_s=10.0, clock=lambda: now[0])

    def record(message: str, level: int = logging.WARNING) -> logging.LogRecord:
        return logging.LogRecord("edgerun.x", level, __file__, 1, message, ("a",), None)

    assert repeat.filter(record("refused %s"))
    assert not any(repeat.filter(record("refused %s")) for _ in range(999))
    assert repeat.filter(record("another %s"))        # a different message passes
    assert repeat.filter(record("info %s", logging.INFO)) and repeat.filter(record("info %s", logging.INFO))
    now[0] = 10.5
    after = record("refused %s")
    assert repeat.filter(after) and after.getMessage() == "refused a (999 more like this in the last 10 s)"
    assert not repeat.filter(record("refused %s"))


def test_systemd_unit_and_compose_files_raise_the_descriptor_limit() -> None:
    root = Path(__file__).parents[1]
    assert "LimitNOFILE=65536" in (root / "systemd/edgerun.service").read_text()
    import yaml

    for compose in ("cpu", "jetson", "rpi", "coral-usb", "coral-pcie"):
        service = yaml.safe_load((root / f"docker/compose/{compose}.yaml").read_text())["services"]["edgerun"]
        assert service["ulimits"]["nofile"] == {"soft": 65536, "hard": 65536}, compose
