"""sd_notify against a real unix datagram socket: messages, order, abstract sockets, watchdog gating."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgerun import sdnotify

WATCHDOG_USEC = 100_000  # 0.1 s period -> a ping every 0.05 s
RECV_TIMEOUT_S = 2.0


class Listener:
    """A bound AF_UNIX datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str) -> None:
        self.env_value = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind_to = "\0" + address[1:] if address.startswith("@") else address
        self.sock.bind(bind_to)

    def receive(self, timeout: float = RECV_TIMEOUT_S) -> str | None:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode()
        except TimeoutError:
            return None

    def drain(self) -> list[str]:
        messages = []
        while (message := self.receive(timeout=0.01)) is not None:
            messages.append(message)
        return messages

    def env(self, **extra: str) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.env_value, **extra}


@pytest.fixture
def listener() -> Iterator[Listener]:
    folder = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")   # short path: AF_UNIX limit is 108 bytes
    sock_path = os.path.join(folder, "notify")
    bound = Listener(sock_path)
    yield bound
    bound.sock.close()
    os.unlink(sock_path)
    os.rmdir(folder)


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    bound = Listener(f"@edgerun-test-{uuid.uuid4().hex}")
    yield bound
    bound.sock.close()


def _watchdog_env(listener: Listener) -> dict[str, str]:
    return listener.env(WATCHDOG_USEC=str(WATCHDOG_USEC), WATCHDOG_PID=str(os.getpid()))


def test_nothing_is_sent_without_notify_socket(listener: Listener) -> None:
    assert sdnotify.notify("READY=1", environ={}) is False
    assert sdnotify.ready(environ={"OTHER": "1"}) is False
    watchdog = sdnotify.Watchdog(environ={"WATCHDOG_USEC": str(WATCHDOG_USEC)})
    assert not watchdog.enabled
    watchdog.start()
    watchdog.beat()
    watchdog.stop()
    assert listener.receive(timeout=0.3) is None


def test_ready_watchdog_stopping_arrive_in_order(listener: Listener) -> None:
    env = _watchdog_env(listener)
    watchdog = sdnotify.Watchdog(environ=env)
    assert watchdog.interval_s == pytest.approx(0.05)
    assert sdnotify.ready("serving mobilenet_v2", environ=env)
    watchdog.start()
    with watchdog.working():
        pass
    received = [listener.receive(), listener.receive()]
    assert sdnotify.stopping(environ=env)
    watchdog.stop()
    messages = [*received, *listener.drain()]
    assert messages[0] == "READY=1\nSTATUS=serving mobilenet_v2"
    assert messages[1] == "WATCHDOG=1"
    assert "STOPPING=1" in messages
    assert set(messages[1:]) == {"WATCHDOG=1", "STOPPING=1"}


def test_abstract_namespace_socket(abstract_listener: Listener) -> None:
    assert sdnotify.status("warming up", environ=abstract_listener.env())
    assert abstract_listener.receive() == "STATUS=warming up"
    assert sdnotify.extend_timeout(90, environ=abstract_listener.env())
    assert abstract_listener.receive() == "EXTEND_TIMEOUT_USEC=90000000"


def test_idle_service_keeps_being_pinged(listener: Listener) -> None:
    watchdog = sdnotify.Watchdog(environ=_watchdog_env(listener))
    watchdog.start()
    try:
        assert listener.receive() == "WATCHDOG=1"
        assert listener.receive() == "WATCHDOG=1"
    finally:
        watchdog.stop()


def test_stuck_inference_withholds_pings_until_it_finishes(listener: Listener) -> None:
    watchdog = sdnotify.Watchdog(environ=_watchdog_env(listener))
    entered, release = threading.Event(), threading.Event()

    def stuck_inference() -> None:
        with watchdog.working():
            entered.set()
            release.wait(timeout=10)

    worker = threading.Thread(target=stuck_inference)
    worker.start()
    try:
        assert entered.wait(timeout=5)
        watchdog.start()
        # Many ticks pass with work in flight and no progress: not a single ping.
        assert listener.receive(timeout=0.5) is None
        release.set()
        worker.join(timeout=5)
        assert listener.receive() == "WATCHDOG=1"
    finally:
        release.set()
        worker.join(timeout=5)
        watchdog.stop()


def test_beat_keeps_long_work_alive(listener: Listener) -> None:
    watchdog = sdnotify.Watchdog(environ=_watchdog_env(listener))
    stop_beating = threading.Event()

    def long_build() -> None:
        with watchdog.working():
            while not stop_beating.wait(0.01):
                watchdog.beat()

    worker = threading.Thread(target=long_build)
    worker.start()
    watchdog.start()
    try:
        assert listener.receive() == "WATCHDOG=1"
        assert listener.receive() == "WATCHDOG=1"
    finally:
        stop_beating.set()
        worker.join(timeout=5)
        watchdog.stop()


@pytest.mark.parametrize("extra", [
    {"WATCHDOG_USEC": "0"},
    {"WATCHDOG_USEC": "soon"},
    {"WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"},   # the watchdog belongs to another process
    {},
])
def test_watchdog_disabled_unless_asked_for_this_process(listener: Listener,
                                                         extra: dict[str, str]) -> None:
    watchdog = sdnotify.Watchdog(environ=listener.env(**extra))
    assert not watchdog.enabled
    watchdog.start()
    watchdog.stop()
    assert listener.receive(timeout=0.2) is None


@pytest.mark.parametrize("target", ["relative/path", "@", "vsock:2:1234"])
def test_unusable_socket_address_is_refused_quietly(target: str) -> None:
    assert sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": target}) is False


def test_missing_socket_returns_false(tmp_path: Path) -> None:
    assert sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False
