"""A logging filter that keeps a flood of one warning from filling the disk: a repeat is logged once per
window, with the count of the repeats it stood for."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

WINDOW_S = 10.0
MAX_KEYS = 256  # distinct messages remembered; the oldest are forgotten beyond this


class RepeatFilter(logging.Filter):
    """Passes the first WARNING-or-worse record of each message template per ``window_s``; the next
    one after the window carries "(N more like this in the last S s)". INFO and DEBUG pass untouched."""

    def __init__(self, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_s = window_s
        self._clock = clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}  # key -> (window start, suppressed)
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        with self._lock:
            started, suppressed = self._seen.get(key, (None, 0))
            if started is not None and now - started < self.window_s:
                self._seen[key] = (started, suppressed + 1)
                return False
            self._remember(key, now)
        if suppressed:
            record.msg = f"{record.msg} ({suppressed} more like this in the last {now - started:.0f} s)"
        return True

    def _remember(self, key: tuple[str, int, str], now: float) -> None:
        self._seen.pop(key, None)
        if len(self._seen) >= MAX_KEYS:
            del self._seen[next(iter(self._seen))]
        self._seen[key] = (now, 0)


def install_repeat_filter(logger: logging.Logger | None = None) -> RepeatFilter:
    """Add one RepeatFilter to every handler of ``logger`` (default: the root logger)."""
    repeat = RepeatFilter()
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(repeat)
    return repeat
