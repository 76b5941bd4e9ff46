"""The profiling process's own memory and CPU use: /proc/self through the HAL, os.times."""

from __future__ import annotations

import os
import resource

from ..hal.process import self_status_kib as _status_kib


def rss_bytes() -> int | None:
    """Resident set size now (VmRSS), or None where /proc is unavailable."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def peak_rss_bytes() -> int:
    """Peak resident set size since the process started (VmHWM, else getrusage)."""
    kib = _status_kib("VmHWM")
    return (kib if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def cpu_seconds() -> float:
    """User plus system CPU time of this process, all threads."""
    times = os.times()
    return times.user + times.system


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
