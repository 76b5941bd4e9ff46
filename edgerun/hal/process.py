"""This process's own memory figures from /proc/self/status, read through the live HostFS (the
profiler measures itself, whatever board tree --root points at)."""

from __future__ import annotations

from .hostfs import HostFS

SELF_STATUS = "/proc/self/status"
_LIVE = HostFS("/")


def self_status_kib(field: str) -> int | None:
    """A kB field of /proc/self/status (VmRSS, VmHWM, ...), or None where /proc is unavailable."""
    text = _LIVE.read_text(SELF_STATUS) or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == field and value.split():
            return int(value.split()[0])
    return None
