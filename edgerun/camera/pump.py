"""Frame pump: a capture thread handing out the latest frame, with reconnect and exponential backoff."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from .capture import Capture

log = logging.getLogger(__name__)

T = TypeVar("T")

STARTING, RUNNING, RECONNECTING, ENDED, STOPPED = "starting", "running", "reconnecting", "ended", "stopped"


@dataclass(frozen=True)
class Frame:
    """One captured BGR frame with its sequence number and capture times."""

    image: np.ndarray
    seq: int              # 1, 2, ... per pump (gaps = frames dropped downstream)
    monotonic: float      # time.monotonic() when the read returned
    wall: float           # time.time() at the same moment
    read_ms: float        # how long the read blocked (decode, or waiting for the camera)


class Slot(Generic[T]):
    """The newest item between a producer and its consumer. ``lossless=False``: a put replaces an
    item not yet taken (counted in ``dropped``); ``lossless=True``: a put waits until it was taken."""

    def __init__(self, lossless: bool = False) -> None:
        self.lossless = lossless
        self.dropped = 0
        self._cond = threading.Condition()
        self._item: T | None = None
        self._seq = 0
        self._taken = True
        self._closed = False

    def put(self, item: T, timeout: float = 0.5) -> bool:
        """Publish ``item``; False if closed, or (lossless) if it was not taken within ``timeout``."""
        with self._cond:
            if self.lossless and not self._cond.wait_for(lambda: self._taken or self._closed, timeout):
                return False
            if self._closed:
                return False
            if not self._taken:
                self.dropped += 1
            self._item, self._taken = item, False
            self._seq += 1
            self._cond.notify_all()
            return True

    def take(self, timeout: float) -> T | None:
        """The newest item not taken yet, waiting up to ``timeout``; None on timeout or when closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: not self._taken or self._closed, timeout) or self._taken:
                return None
            self._taken = True
            self._cond.notify_all()
            return self._item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class RateMeter:
    """Events per second over the last ``window`` events (0 once none came for ``idle_s``)."""

    def __init__(self, window: int = 60, idle_s: float = 2.0) -> None:
        self._times: deque[float] = deque(maxlen=window)
        self._idle_s = idle_s
        self._lock = threading.Lock()

    def tick(self, now: float | None = None) -> None:
        with self._lock:
            self._times.append(time.monotonic() if now is None else now)

    def rate(self, now: float | None = None) -> float:
        with self._lock:
            times = list(self._times)
        now = time.monotonic() if now is None else now
        if len(times) < 2 or now - times[-1] > self._idle_s:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-9)


class Backoff:
    """Exponential backoff delays: initial, initial*factor, ... capped at ``maximum``; reset on success."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, factor: float = 2.0) -> None:
        self.initial, self.maximum, self.factor = initial, maximum, factor
        self.attempts = 0

    def next_delay(self) -> float:
        delay = min(self.maximum, self.initial * self.factor ** self.attempts)
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0


class FramePump:
    """Reads a source on its own thread. Live sources: the newest frame wins (drops, never lags).
    Finite sources: ``lossless`` hands over every frame; ``pace`` reads at the file's frame rate."""

    def __init__(self, opener: Callable[[], Capture], name: str, *, lossless: bool = False,
                 pace: bool = False, loop: bool = False, backoff: Backoff | None = None) -> None:
        self._opener = opener
        self.name = name
        self.slot: Slot[Frame] = Slot(lossless)
        self.pace, self.loop = pace, loop
        self.backoff = backoff or Backoff()
        self.state = STARTING
        self.error = ""
        self.frames = 0
        self.reconnects = 0
        self.rate = RateMeter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._capture: Capture | None = None

    def start(self, capture: Capture | None = None) -> None:
        """Start reading; ``capture`` is an already opened (validated) capture to begin with."""
        self._capture = capture
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-capture", daemon=True)
        self._thread.start()

    def next(self, timeout: float) -> Frame | None:
        """The newest frame not handed out yet (None after ``timeout`` or once the pump ended)."""
        return self.slot.take(timeout)

    @property
    def dropped(self) -> int:
        return self.slot.dropped

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop and release the capture (after the thread left its read). True if the thread ended."""
        self._stop.set()
        self.slot.close()
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.alive

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                capture = self._capture or self._connect()
                if capture is None:
                    break
                self._capture = capture
                if self._read_all(capture):
                    break
        except Exception:  # a bug must not leave a zombie stream: report it as the stream's state
            log.exception("%s: capture thread failed", self.name)
            self.error, self.state = "internal error in the capture thread (see the log)", ENDED
        finally:
            self._release()
            if self.state != ENDED:
                self.state = STOPPED
            self.slot.close()

    def _release(self) -> None:
        capture, self._capture = self._capture, None
        if capture is not None:
            capture.release()

    def _connect(self) -> Capture | None:
        """Open the source, retrying with backoff until it works or the pump is stopped."""
        while not self._stop.is_set():
            try:
                capture = self._opener()
            except Exception as exc:
                self.error = str(exc)
                delay = self.backoff.next_delay()
                log.warning("%s: reconnect failed (%s); next try in %.1f s", self.name, exc, delay)
                self._stop.wait(delay)
                continue
            if self.state == RECONNECTING:
                self.reconnects += 1
                log.info("%s: reconnected to %s", self.name, capture.description)
            self.backoff.reset()
            self.error = ""
            return capture
        return None

    def _read_all(self, capture: Capture) -> bool:
        """Read until the source fails or ends. True when the pump is done (ended or stopped)."""
        self.state = RUNNING
        started, count = time.monotonic(), 0
        while not self._stop.is_set():
            before = time.monotonic()
            image = capture.read()
            now = time.monotonic()
            if image is None:
                return self._source_stopped(capture)
            self.frames += 1
            self.rate.tick(now)
            frame = Frame(image, self.frames, now, time.time(), (now - before) * 1000)
            while not self.slot.put(frame) and not self.slot.closed:
                pass  # lossless: wait for the consumer (put times out to re-check the stop flag)
            count += 1
            if self.pace and capture.fps:
                self._stop.wait(max(0.0, started + count / capture.fps - time.monotonic()))
        return True

    def _source_stopped(self, capture: Capture) -> bool:
        self._release()
        if capture.finite and not self.loop:
            log.info("%s: end of %s after %d frames", self.name, capture.description, self.frames)
            self.state = ENDED
            return True
        if not capture.finite:
            self.state = RECONNECTING
            self.error = f"{capture.description}: read failed or timed out; reconnecting"
            log.warning("%s: %s", self.name, self.error)
            self._stop.wait(self.backoff.next_delay())
        return False
