"""Vendor shared libraries (delegates, runtimes) found on the host's library paths, through HostFS."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping

from .hostfs import HostFS

LIBRARY_DIRS = (
    "/usr/lib",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/arm-linux-gnueabihf",
    "/usr/local/lib",
    "/lib",
    "/lib/aarch64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu/nvidia",
    "/usr/lib/aarch64-linux-gnu/tegra",
    "/usr/local/cuda/lib64",
)
# What edgerun looks for -> glob patterns of the file name (first match wins).
KNOWN_LIBRARIES: Mapping[str, tuple[str, ...]] = {
    "edgetpu": ("libedgetpu.so.1", "libedgetpu.so.1.*"),
    "vx_delegate": ("libvx_delegate.so", "libvx_delegate.so.*"),
    "armnn_delegate": ("libarmnnDelegate.so", "libarmnnDelegate.so.*"),
    "ethosu_delegate": ("libethosu_delegate.so", "libethosu_delegate.so.*"),
    "neutron_delegate": ("libneutron_delegate.so",),
    "rknnrt": ("librknnrt.so",),
    "nvinfer": ("libnvinfer.so.*",),
    "cudart": ("libcudart.so.*",),
    "hailort": ("libhailort.so", "libhailort.so.*"),
}


def find_library(
    fs: HostFS, patterns: tuple[str, ...], listings: Mapping[str, list[str]] | None = None
) -> str | None:
    """The host path of the first file matching one of ``patterns`` in the library dirs."""
    for pattern in patterns:
        for directory in LIBRARY_DIRS:
            names = listings[directory] if listings is not None else fs.listdir(directory)
            matches = fnmatch.filter(names, pattern)
            if matches:
                return f"{directory}/{sorted(matches)[0]}"
    return None


def find_libraries(fs: HostFS) -> dict[str, str]:
    """name -> host path for every known vendor library present under ``fs``."""
    listings = {directory: fs.listdir(directory) for directory in LIBRARY_DIRS}
    found = {}
    for name, patterns in KNOWN_LIBRARIES.items():
        path = find_library(fs, patterns, listings)
        if path is not None:
            found[name] = path
    return found
