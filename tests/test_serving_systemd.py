"""`edgerun serve` speaks systemd's notify protocol: READY=1 once warm and bound, WATCHDOG=1 while inference
makes progress, STOPPING=1 on SIGTERM — received on a real unix datagram socket; the progress hook wraps
every model execution."""

from __future__ import annotations

import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from edgerun.config import Settings
from edgerun.serving import LifecycleHooks, ModelConfig, ServeConfig, create_app

from .helpers import MODELS, SAMPLES
from .serving_helpers import ServerThread, binary_body
from .test_serving_ops import ServeProcess

WATCHDOG_USEC = 200_000  # a ping every 0.1 s
WAIT_S = 60.0


class NotifySocket:
    """A bound AF_UNIX datagram socket in place of systemd's; collects every message it receives."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages: list[str] = []

    def wait_for(self, wanted: str, timeout: float = WAIT_S) -> int:
        """Receive until a message equal to (or starting with) ``wanted`` arrives; its index."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            self.messages.append(message)
            if message.startswith(wanted):
                return len(self.messages) - 1
        raise AssertionError(f"no {wanted!r} within {timeout} s; received {self.messages}")


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    folder = tempfile.mkdtemp(prefix="edgerun-sd-", dir="/tmp")  # AF_UNIX paths: at most 107 bytes
    listener = NotifySocket(os.path.join(folder, "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", listener.path)
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)  # the child is the watched process
    yield listener
    listener.sock.close()
    os.unlink(listener.path)
    os.rmdir(folder)


def test_ready_watchdog_then_stopping_from_a_real_serve_process(notify_socket: NotifySocket) -> None:
    server = ServeProcess("--model", "mobilenet_v2")
    try:
        url = f"http://127.0.0.1:{server.port()}"
        ready = notify_socket.wait_for("READY=1")
        assert notify_socket.messages[ready] == "READY=1\nSTATUS=serving mobilenet_v2"
        assert not any(m.startswith("WATCHDOG=1") for m in notify_socket.messages[:ready])
        with httpx.Client(base_url=url, timeout=30) as http:
            assert http.get("/v2/health/ready").status_code == 200  # READY came after warm-up and bind
            first_ping = notify_socket.wait_for("WATCHDOG=1", timeout=5)
            body, length = binary_body([("input", "FP32", np.zeros((1, 3, 224, 224), np.float32))])
            response = http.post("/v2/models/mobilenet_v2/infer", content=body,
                                 headers={"Inference-Header-Content-Length": str(length)})
            assert response.status_code == 200, response.text
        notify_socket.wait_for("WATCHDOG=1", timeout=5)  # still pinged after an inference finished
        server.process.send_signal(signal.SIGTERM)
        stopping = notify_socket.wait_for("STOPPING=1", timeout=30)
        assert server.process.wait(timeout=30) == 0
        assert ready < first_ping < stopping
        assert notify_socket.messages.count("READY=1\nSTATUS=serving mobilenet_v2") == 1
    finally:
        server.stop()


def test_a_failed_start_up_reports_its_reason_and_never_ready(notify_socket: NotifySocket,
                                                              tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    server = ServeProcess("--model", str(broken))
    try:
        status = notify_socket.wait_for("STATUS=start-up failed: broken")
        assert server.process.wait(timeout=30) == 1
        assert not any(m.startswith("READY=1") for m in notify_socket.messages)
        assert "could not load" in notify_socket.messages[status]
    finally:
        server.stop()


class Progress:
    """A ``working`` hook that records how many executions ran and how many are in flight."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = self.finished = self.in_flight_seen = 0
        self._in_flight = 0

    @contextmanager
    def working(self) -> Iterator[None]:
        with self.lock:
            self.started += 1
            self._in_flight += 1
            self.in_flight_seen = max(self.in_flight_seen, self._in_flight)
        try:
            yield
        finally:
            with self.lock:
                self._in_flight -= 1
                self.finished += 1


def test_every_model_execution_runs_inside_the_working_hook() -> None:
    progress = Progress()
    config = ServeConfig(settings=Settings(), models=(
        ModelConfig("mobilenet_v2", backend="onnxruntime", threads=1),
        ModelConfig("mobilenet_v2_batched", path=str(MODELS / "mobilenet_v2"),
                    backend="onnxruntime", threads=1, dynamic_batching=True, max_queue_delay_us=1000),
    ))
    with ServerThread(create_app(config, LifecycleHooks(working=progress.working))) as server:
        server.wait_ready()
        assert progress.started == 0  # warm-up runs before the hook's time: nothing to watch yet
        body, length = binary_body([("input", "FP32", np.zeros((1, 3, 224, 224), np.float32))])
        headers = {"Inference-Header-Content-Length": str(length)}
        with server.client() as http:
            for model in ("mobilenet_v2", "mobilenet_v2_batched"):  # worker path and batcher path
                for _ in range(3):
                    response = http.post(f"/v2/models/{model}/infer", content=body, headers=headers)
                    assert response.status_code == 200, response.text
            image = http.post("/v1/models/mobilenet_v2/predict",
                              content=(SAMPLES / "chelsea.png").read_bytes())
            assert image.status_code == 200, image.text
    assert progress.started == progress.finished == 7
    assert progress.in_flight_seen >= 1
