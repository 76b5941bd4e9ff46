"""systemd notify protocol (stdlib only): READY/STOPPING/STATUS messages and a progress-gated watchdog.

Use from a ``Type=notify`` service; everything is a silent no-op when ``$NOTIFY_SOCKET`` is unset
(Docker, Kubernetes, a terminal), so callers never need to check where they run::

    watchdog = Watchdog()                  # reads WATCHDOG_USEC / WATCHDOG_PID; disabled if unset
    ...load and warm up models...
    ready("serving 2 models")              # READY=1 + STATUS=...
    watchdog.start()                       # pings WATCHDOG=1 every WATCHDOG_USEC / 2 ...
    with watchdog.working():               # ... but only while work that is in flight finishes:
        session.infer(inputs)              #     one `working()` block per inference
    stopping()                             # STOPPING=1, at the start of a graceful shutdown
    watchdog.stop()

The watchdog rule: at each tick a ping is sent when ``beat()`` was called since the previous tick
(``working()`` beats when its block ends), or when no ``working()`` block is in flight. An idle
service is healthy and keeps being pinged; a service with an inference stuck for a whole tick
stops pinging, and systemd kills and restarts it (``WatchdogSec=`` with ``Restart=on-failure``).
Call ``beat()`` inside long units of work (an engine build) to show they still advance.
The sender must be the unit's main process (``NotifyAccess=main``); any thread of it may send.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

logger = logging.getLogger(__name__)

_SEND_TIMEOUT_S = 1.0


def _address(notify_socket: str) -> str | bytes | None:
    """The AF_UNIX address for $NOTIFY_SOCKET: a path, or ``@name`` in the abstract namespace."""
    if notify_socket.startswith("/"):
        return notify_socket
    if notify_socket.startswith("@") and len(notify_socket) > 1:
        return b"\0" + notify_socket[1:].encode()
    return None


def notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send one notify datagram (e.g. ``"READY=1"``); True when it was sent.

    Returns False without sending anything when ``$NOTIFY_SOCKET`` is unset; logs and returns
    False (never raises) when the socket is unusable.
    """
    env = os.environ if environ is None else environ
    target = env.get("NOTIFY_SOCKET", "")
    if not target:
        return False
    address = _address(target)
    if address is None:
        logger.warning("NOTIFY_SOCKET=%r is not a unix socket address; not notifying", target)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(_SEND_TIMEOUT_S)
            sock.sendto(message.encode(), address)
    except OSError as exc:
        logger.warning("sd_notify %r to %s failed: %s", message, target, exc)
        return False
    return True


def ready(status: str | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """Tell systemd start-up is complete (after models are loaded and warmed up)."""
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""), environ)


def stopping(environ: Mapping[str, str] | None = None) -> bool:
    """Tell systemd a graceful shutdown has begun."""
    return notify("STOPPING=1", environ)


def status(text: str, environ: Mapping[str, str] | None = None) -> bool:
    """Set the one-line status shown by ``systemctl status``."""
    return notify(f"STATUS={text}", environ)


def extend_timeout(seconds: float, environ: Mapping[str, str] | None = None) -> bool:
    """Ask for ``seconds`` more before the start (or stop) timeout fires, e.g. during an engine build."""
    return notify(f"EXTEND_TIMEOUT_USEC={max(1, int(seconds * 1_000_000))}", environ)


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between pings (half of $WATCHDOG_USEC), or None when this process has no watchdog."""
    env = os.environ if environ is None else environ
    if not env.get("NOTIFY_SOCKET"):
        return None
    pid = env.get("WATCHDOG_PID", "").strip()
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        logger.warning("WATCHDOG_USEC=%r is not an integer; watchdog disabled", env["WATCHDOG_USEC"])
        return None
    return usec / 2_000_000 if usec > 0 else None


class Watchdog:
    """Sends WATCHDOG=1 every half watchdog period while the service shows progress (see module doc)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = dict(os.environ if environ is None else environ)
        self.interval_s = watchdog_interval(self._environ)
        self._lock = threading.Lock()
        self._beats = 0
        self._in_flight = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        """True when systemd asked this process for watchdog pings."""
        return self.interval_s is not None

    def beat(self) -> None:
        """Record progress: the next tick will ping."""
        with self._lock:
            self._beats += 1

    @contextmanager
    def working(self) -> Iterator[None]:
        """Mark one unit of work (an inference) as in flight; it beats when it ends."""
        with self._lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1
                self._beats += 1

    def start(self) -> None:
        """Start the ping thread; a no-op when disabled or already started."""
        if not self.enabled or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the ping thread and wait for it (bounded)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout=max(1.0, (self.interval_s or 0) * 2))

    def _healthy_since(self, seen_beats: int) -> tuple[bool, int]:
        with self._lock:
            return self._beats != seen_beats or self._in_flight == 0, self._beats

    def _run(self) -> None:
        seen_beats = self._beats
        interval = self.interval_s or 1.0
        while not self._stop.wait(interval):
            healthy, seen_beats = self._healthy_since(seen_beats)
            if healthy:
                notify("WATCHDOG=1", self._environ)
            else:
                logger.warning("no inference finished in %.1f s with work in flight; "
                               "withholding the watchdog ping", interval)
